"""Device setup for a worker: which GPU it trains on, how much of its memory it may take, and
how many CPU threads it uses.

Alone on a GPU, a worker turns on memory growth (it takes what it needs, as it goes). K workers
share one GPU safely when each is given a memory limit (LRSEARCH_GPU_MEMORY_MB): TensorFlow
then makes that GPU one logical device of that size, and one worker's peak can never starve
the others (with growth alone, whoever grows first keeps the memory). LRSEARCH_GPU_INDEX picks
the GPU among those TensorFlow sees (after CUDA_VISIBLE_DEVICES) and hides the rest, so
workers on a multi-GPU machine spread out; `lrsearch serve --gpus 0,1 --gpu-memory-mb M`
sets both per worker, round-robin. Thread counts (LRSEARCH_TF_THREADS) stop workers on one
machine from fighting over cores.

The placement code is device-type agnostic, so machines without a GPU test it on TensorFlow's
logical CPU devices (a CPU takes no memory limit: it gets one plain logical device); the lines
only a GPU reaches are marked `# pragma: GPU only`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("lrsearch.training.devices")

GPU_INDEX_ENV = "LRSEARCH_GPU_INDEX"
GPU_MEMORY_ENV = "LRSEARCH_GPU_MEMORY_MB"
_configured: list[str] | None = None  # configure_devices runs once per process


@dataclass(frozen=True)
class Placement:
    """Where one worker trains: a GPU index (None: TensorFlow's choice, every GPU visible)
    and a memory limit in MiB (None: memory growth)."""

    index: int | None = None
    memory_mb: int | None = None

    @classmethod
    def from_env(cls) -> Placement:
        """Read LRSEARCH_GPU_INDEX and LRSEARCH_GPU_MEMORY_MB; ValueError when malformed."""
        index = _env_int(GPU_INDEX_ENV, os.environ.get("LRSEARCH_GPU_INDEX", ""), minimum=0)
        memory = _env_int(GPU_MEMORY_ENV, os.environ.get("LRSEARCH_GPU_MEMORY_MB", ""), minimum=1)
        return cls(index, memory)

    @property
    def requested(self) -> bool:
        return self.index is not None or self.memory_mb is not None

    def env(self) -> dict[str, str]:
        """The variables that give a worker process this placement."""
        values = {GPU_INDEX_ENV: self.index, GPU_MEMORY_ENV: self.memory_mb}
        return {name: str(value) for name, value in values.items() if value is not None}


def placements(workers: int, gpus: Sequence[int], memory_mb: int | None) -> list[Placement]:
    """K workers spread round-robin over `gpus` (none given: no index), each with the limit."""
    return [Placement(gpus[i % len(gpus)] if gpus else None, memory_mb) for i in range(workers)]


def _env_int(name: str, raw: str, minimum: int) -> int | None:
    if not raw.strip():
        return None
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r}: not a whole number") from None
    if value < minimum:
        raise ValueError(f"{name}={raw!r}: must be at least {minimum}")
    return value


def configure_devices() -> list[str]:
    """Set thread pools, place this worker on its GPU (LRSEARCH_GPU_*), and return the GPU
    names it trains on. Once per process: later calls return the first answer."""
    global _configured
    if _configured is None:
        import tensorflow as tf

        _set_threads(tf)
        gpus = place(tf, "GPU", Placement.from_env())
        log.info("training on %s", ", ".join(g.name for g in gpus) or "CPU")
        _configured = [g.name for g in gpus]
    return _configured


def clear_session() -> None:
    """Drop Keras's global state (after a trial that ran out of memory: its graphs go)."""
    import keras

    keras.backend.clear_session()


def describe_devices() -> str:
    """What this worker trains on, for its liveness row: "CPU", or its GPUs with their model
    ("GPU:0 NVIDIA H200"). Configures the devices first (once per process)."""
    names = configure_devices()
    if not names:
        return "CPU"
    import tensorflow as tf  # pragma: GPU only

    gpus = [
        d for d in tf.config.list_physical_devices("GPU") if d.name in names
    ]  # pragma: GPU only
    return ", ".join(_gpu_label(tf, d) for d in gpus)  # pragma: GPU only


def _gpu_label(tf: Any, device: Any) -> str:  # pragma: GPU only
    """`GPU:<index> <model>` (the model as the driver names it, when it says)."""
    try:
        model = str(tf.config.experimental.get_device_details(device).get("device_name", ""))
    except Exception:
        model = ""
    return f"GPU:{device.name.rsplit(':', 1)[-1]} {model}".strip()


def _set_threads(tf: Any) -> None:
    threads = int(os.environ.get("LRSEARCH_TF_THREADS", "0"))
    if threads > 0:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(max(1, threads // 2))
        except RuntimeError:  # already initialised in this process
            pass


def place(tf: Any, device_type: str, placement: Placement) -> list[Any]:
    """Show TensorFlow only the chosen device of `device_type` (all when no index) and set
    each one's logical device; returns the physical devices kept. Must run before TensorFlow
    initialises its devices (RuntimeError otherwise, logged: the process keeps its setup)."""
    devices = tf.config.list_physical_devices(device_type)
    if placement.index is not None and placement.index >= len(devices):
        raise ValueError(
            f"{GPU_INDEX_ENV}={placement.index}, but TensorFlow sees {len(devices)} "
            f"{device_type} device(s)"
        )
    if not devices:
        if placement.memory_mb is not None:
            log.warning("%s is set but there is no %s: ignored", GPU_MEMORY_ENV, device_type)
        return []
    chosen = devices if placement.index is None else [devices[placement.index]]
    try:
        if placement.index is not None:
            tf.config.set_visible_devices(chosen, device_type)
        for device in chosen:
            _share(tf, device, placement.memory_mb)
    except RuntimeError as exc:  # devices were initialised before: keep what they are
        log.warning("device placement not applied (%s)", exc)
    return chosen


def _share(tf: Any, device: Any, memory_mb: int | None) -> None:
    """One logical device per physical one: capped at `memory_mb` on a GPU, else growing."""
    if device.device_type != "GPU":  # a CPU takes no memory limit (tests without a GPU)
        tf.config.set_logical_device_configuration(device, [tf.config.LogicalDeviceConfiguration()])
        return
    if memory_mb is None:  # pragma: GPU only
        tf.config.experimental.set_memory_growth(device, True)  # pragma: GPU only
        return  # pragma: GPU only
    limit = [tf.config.LogicalDeviceConfiguration(memory_limit=memory_mb)]  # pragma: GPU only
    tf.config.set_logical_device_configuration(device, limit)  # pragma: GPU only
