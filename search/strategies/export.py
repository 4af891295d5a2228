"""What a trial exports: the Keras config of its schedule and callbacks, the statistics its data
was standardised with, and a Python snippet that rebuilds them in a user's own training script.
Pure Python (no Keras import)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from search.strategies.custom_schedules import REGISTERED_NAME, SOURCE, WARMUP_STABLE_DECAY


@dataclass(frozen=True)
class Export:
    """The best schedule as Keras understands it, plus code that rebuilds it."""

    schedule: dict[str, Any] | None
    callbacks: list[dict[str, Any]] = field(default_factory=list)
    initial_lr: float = 0.0
    optimizer: dict[str, Any] = field(default_factory=dict)
    python: str = ""
    #: `search.data.preprocess`'s statistics (mean, std, target_mean, target_std) or None.
    preprocess: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "schedule": self.schedule,
            "callbacks": self.callbacks,
            "initial_lr": self.initial_lr,
            "optimizer": self.optimizer,
            "python": self.python,
            "preprocess": self.preprocess,
        }


def restore_best_callback(monitor: str, mode: str, epochs: int) -> dict[str, Any]:
    """An EarlyStopping that never stops (its patience is the whole run) and ends the fit on
    the best epoch's weights: what `objective.aggregate` = best measures. Keras 3 restores them
    in `on_train_end` whether or not training stopped early (keras 3.15,
    `src/callbacks/early_stopping.py`); lrsearch's own trials leave it out."""
    config = {
        "monitor": monitor,
        "mode": mode,
        "patience": epochs,
        "restore_best_weights": True,
        "start_from_epoch": 0,
        "verbose": 0,
    }
    return {"class_name": "EarlyStopping", "config": config}


def keras_schedule_config(class_name: str, config: dict[str, Any]) -> dict[str, Any]:
    """The dict `keras.optimizers.schedules.deserialize` accepts."""
    return {
        "module": "keras.optimizers.schedules",
        "class_name": class_name,
        "config": config,
        "registered_name": None,
    }


def python_snippet(export: Export) -> str:
    """Code that rebuilds the optimizer and callbacks of `export` with plain Keras (and, for
    standardised data, the lines that standardise a user's arrays the same way)."""
    lines = ["import keras", ""]
    if export.schedule and export.schedule.get("registered_name") == REGISTERED_NAME:
        cfg = _kwargs(export.schedule["config"])
        lines[:0] = ["import math"]
        lines += [SOURCE, "", f"learning_rate = {WARMUP_STABLE_DECAY}({cfg})"]
    elif export.schedule:
        cls, cfg = export.schedule["class_name"], _kwargs(export.schedule["config"])
        lines.append(f"learning_rate = keras.optimizers.schedules.{cls}({cfg})")
    else:
        lines.append(f"learning_rate = {export.initial_lr!r}")
    opt = export.optimizer
    extra = _kwargs(opt.get("config", {}))
    lines.append(
        f"optimizer = keras.optimizers.{opt['class_name']}(learning_rate=learning_rate"
        + (f", {extra})" if extra else ")")
    )
    lines.append("callbacks = []")
    for cb in export.callbacks:
        lines += _callback_lines(cb)
    lines += [
        "",
        "# model.compile(optimizer=optimizer, ...)",
        "# model.fit(..., callbacks=callbacks)",
    ]
    if export.preprocess:
        lines[:0] = ["import numpy as np"]
        lines += preprocess_lines(export.preprocess)
    return "\n".join(lines) + "\n"


def preprocess_lines(stats: dict[str, Any]) -> list[str]:
    """The lines that standardise data as the trials saw it (statistics of the training split)."""
    lines = ["", "# task.preprocess: lrsearch trained on data standardised with these statistics"]
    if stats.get("mean") is not None:
        lines += [
            f"mean = np.array({stats['mean']!r}, dtype='float32')",
            f"std = np.array({stats['std']!r}, dtype='float32')",
            "# x = (x - mean) / std  # for x_train, x_val and every x you predict on",
        ]
    if stats.get("target_mean") is not None:
        lines += [
            f"target_mean = np.array({stats['target_mean']!r}, dtype='float32')",
            f"target_std = np.array({stats['target_std']!r}, dtype='float32')",
            "# y = (y - target_mean) / target_std  # for y_train and y_val",
            "# predictions in the target's units: model.predict(x) * target_std + target_mean",
        ]
    return lines


def _callback_lines(cb: dict[str, Any]) -> list[str]:
    if cb["class_name"] == "LearningRateScheduler":
        r = cb["rule"]
        return [
            "",
            "def schedule(epoch, lr):",
            f"    return {r['initial_lr']!r} * {r['drop']!r} ** (epoch // {r['every']})",
            "",
            "callbacks.append(keras.callbacks.LearningRateScheduler(schedule))",
        ]
    line = f"callbacks.append(keras.callbacks.{cb['class_name']}({_kwargs(cb['config'])}))"
    if cb["class_name"] == "EarlyStopping":
        return ["", "# objective.aggregate = best: the fit ends on the best epoch's weights", line]
    return [line]


def _kwargs(config: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in config.items() if k != "name")
