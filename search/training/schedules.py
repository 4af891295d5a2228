"""lrsearch's own LearningRateSchedule, defined from the very source its snippet prints and
registered with Keras, so `keras.optimizers.schedules.deserialize` accepts every export."""

from __future__ import annotations

import math
from typing import Any

import keras

from search.strategies.custom_schedules import PACKAGE, SOURCE, WARMUP_STABLE_DECAY


def _define() -> Any:
    namespace: dict[str, Any] = {"keras": keras, "math": math}
    exec(compile(SOURCE, f"<lrsearch {WARMUP_STABLE_DECAY}>", "exec"), namespace)  # our text
    cls = namespace[WARMUP_STABLE_DECAY]
    cls.__module__ = __name__
    return keras.saving.register_keras_serializable(package=PACKAGE)(cls)


WarmupStableDecay: Any = _define()
