"""Turn an exported best schedule back into Keras objects (imports Keras: training side only).

`apply(export)` is what a user calls to drop the best schedule into their own
`model.compile()` / `model.fit()`.
"""

from __future__ import annotations

from typing import Any

from search.strategies.step import step_rule

#: Exported callbacks for a user's own fit that do not change the rate: EarlyStopping restores
#: the best epoch's weights (`objective.aggregate` = best). A trial leaves them out: its value
#: is measured by `search.training.monitor`, and only LR callbacks are driven by its loop.
USER_FIT_ONLY = frozenset({"EarlyStopping"})


def build_schedule_and_callbacks(
    export: dict[str, Any], *, for_trial: bool = False
) -> tuple[Any, list[Any]]:
    """(float rate or LearningRateSchedule, callbacks) exactly as the export describes;
    `for_trial`: only the callbacks that change the rate (what lrsearch's own trial runs)."""
    import keras

    import search.training.schedules  # noqa: F401 - registers lrsearch's own schedule

    if export.get("schedule"):
        learning_rate: Any = keras.optimizers.schedules.deserialize(export["schedule"])
    else:
        learning_rate = float(export["initial_lr"])
    configs = export.get("callbacks", [])
    if for_trial:
        configs = [cb for cb in configs if cb["class_name"] not in USER_FIT_ONLY]
    return learning_rate, [_callback(cb) for cb in configs]


def _callback(cb: dict[str, Any]) -> Any:
    import keras

    if cb["class_name"] == "LearningRateScheduler":
        r = cb["rule"]
        init, drop, every = float(r["initial_lr"]), float(r["drop"]), int(r["every"])

        def schedule(epoch: int, lr: float) -> float:
            return step_rule(init, drop, every, epoch)

        return keras.callbacks.LearningRateScheduler(schedule, **cb.get("config", {}))
    cls = getattr(keras.callbacks, cb["class_name"])
    return cls(**cb["config"])


def make_optimizer(name_or_config: str | dict[str, Any], learning_rate: Any) -> Any:
    """A Keras optimizer by name ("adam") or by {"class_name", "config"} with this rate."""
    import keras

    if isinstance(name_or_config, str):
        name_or_config = optimizer_config(name_or_config)
    cls = getattr(keras.optimizers, name_or_config["class_name"])
    return cls(learning_rate=learning_rate, **name_or_config.get("config", {}))


def optimizer_config(name: str, momentum: float = 0.9) -> dict[str, Any]:
    """The {"class_name", "config"} pair for a spec's optimizer name."""
    table = {
        "adam": ("Adam", {}),
        "adamw": ("AdamW", {}),
        "sgd": ("SGD", {"momentum": momentum}),
        "rmsprop": ("RMSprop", {}),
    }
    cls, cfg = table[name]
    return {"class_name": cls, "config": cfg}


def apply(export: dict[str, Any]) -> tuple[Any, list[Any]]:
    """(optimizer, callbacks) rebuilt from `/best`'s export, ready for compile() and fit()."""
    learning_rate, callbacks = build_schedule_and_callbacks(export)
    return make_optimizer(export.get("optimizer") or "adam", learning_rate), callbacks
