"""Device setup for a worker: use a GPU when one is there, sharing it politely.

Memory growth lets several workers share one GPU; thread counts (LRSEARCH_TF_THREADS) stop
workers on one machine from fighting over cores. Nothing to change to run on a GPU.
"""

from __future__ import annotations

import contextlib
import logging
import os

log = logging.getLogger("lrsearch.training.devices")


def configure_devices() -> list[str]:
    """Turn on memory growth for every GPU and set thread pools; returns the GPU names."""
    import tensorflow as tf

    threads = int(os.environ.get("LRSEARCH_TF_THREADS", "0"))
    if threads > 0:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(max(1, threads // 2))
        except RuntimeError:  # already initialised in this process
            pass
    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        with contextlib.suppress(RuntimeError):  # already initialised in this process
            tf.config.experimental.set_memory_growth(gpu, True)
    log.info("training on %s", ", ".join(g.name for g in gpus) or "CPU")
    return [g.name for g in gpus]
