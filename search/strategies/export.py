"""What a trial exports: the Keras config of its schedule and callbacks, and a Python snippet
that rebuilds them in a user's own training script. Pure Python (no Keras import)."""

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

    def as_dict(self) -> dict[str, Any]:
        return {
            "schedule": self.schedule,
            "callbacks": self.callbacks,
            "initial_lr": self.initial_lr,
            "optimizer": self.optimizer,
            "python": self.python,
        }


def keras_schedule_config(class_name: str, config: dict[str, Any]) -> dict[str, Any]:
    """The dict `keras.optimizers.schedules.deserialize` accepts."""
    return {
        "module": "keras.optimizers.schedules",
        "class_name": class_name,
        "config": config,
        "registered_name": None,
    }


def python_snippet(export: Export) -> str:
    """Code that rebuilds the optimizer and callbacks of `export` with plain Keras."""
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
    return "\n".join(lines) + "\n"


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
    return [f"callbacks.append(keras.callbacks.{cb['class_name']}({_kwargs(cb['config'])}))"]


def _kwargs(config: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in config.items() if k != "name")
