"""Python snippets that rebuild an exported schedule in a user's own training script."""

from __future__ import annotations

from typing import Any

from search.strategies.base import Export


def python_snippet(export: Export) -> str:
    """Code that rebuilds the optimizer and callbacks of `export` with plain Keras."""
    lines = ["import keras", ""]
    if export.schedule:
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
