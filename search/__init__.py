"""lrsearch's domain: study specs, LR strategies, data, models, training and workers.

Nothing here imports `service`; TensorFlow is imported lazily, only by the modules that train.
"""
