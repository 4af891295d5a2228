"""`tune()`: lrsearch's search inside a notebook or a script (see `search.tuning.engine`).

    from search.tuning import tune
    result = tune(build_model, train_ds, val_ds, epochs=20, n_trials=30,
                  strategies=["cosine", "plateau"], loss=..., metrics=[...])
    result.best.export                      # the same export the API returns
    optimizer, callbacks = result.best.apply()

Not re-exported by `search` itself: that would load TensorFlow with every import of
`search`, which the API (which imports `search`, never TensorFlow) must not.
"""

from search.tuning.engine import tune
from search.tuning.results import BestTrial, TrialResult, TuneResult, TuningFailed

__all__ = ["BestTrial", "TrialResult", "TuneResult", "TuningFailed", "tune"]
