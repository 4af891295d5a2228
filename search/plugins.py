"""Task plugins: your own training code, installed as a package, run by lrsearch's workers.

A plugin is what a training script has (the model, the data, the loss, the metrics), behind
a small typed protocol: `TaskPlugin`. It is found through the entry-point group
`lrsearch.tasks` (`name = "package.module:PluginClass"` in the package's pyproject) and
named in a spec as `task.plugin`; `task.plugin_args` is validated by the plugin's own
pydantic model (`Args`). lrsearch owns the optimizer, the learning rate and the run; the
plugin never compiles its model.

No TensorFlow here: discovery only reads the installed distributions' metadata (the API and
`lrsearch tasks` use it); loading a plugin imports its code, which only workers do
(`search.training.plugin_task` runs it).
"""

from __future__ import annotations

import importlib.metadata
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import BaseModel, ValidationError

from search.errors import FieldError, PluginError, SpecError
from search.spec import PLUGIN_NAME_PATTERN, field_path

ENTRY_POINT_GROUP = "lrsearch.tasks"
#: The plugin name `search.tuning.tune()` gives its studies: code living in one process, which
#: no worker offers (an installed entry point of that name is ignored).
IN_PROCESS = "lrsearch.in-process"
_NAME = re.compile(PLUGIN_NAME_PATTERN)
_REQUIRED = ("build_model", "datasets", "loss")


class TaskPlugin:
    """The protocol of a task plugin; subclass it (or give an object with these methods).

    Every method gets the validated arguments (an instance of `Args`, or the raw dict when
    `Args` is None). Called on a worker, once per trial, in this order: `build_model`,
    `loss`, `metrics`, `datasets`.
    """

    #: A pydantic model of `task.plugin_args` (extra="forbid" recommended); None: a dict.
    Args: ClassVar[type[BaseModel] | None] = None

    def build_model(self, args: Any) -> Any:
        """An uncompiled `keras.Model` (lrsearch compiles it with its optimizer and rate)."""
        raise NotImplementedError

    def datasets(self, args: Any, batch_size: int, seed: int | None) -> tuple[Any, Any]:
        """(train, validation) as `tf.data.Dataset`s of batched (x, y) (or (x, y, weight)).

        Both must be finite: an epoch is one pass over `train`. Shuffle `train` with `seed`
        (`reshuffle_each_iteration=True`) so every trial sees the same batches. Stream from
        files (TFRecord, ...) for data larger than memory.
        """
        raise NotImplementedError

    def loss(self, args: Any) -> Any:
        """A Keras loss: a name, a `keras.losses.Loss`, or a function (y_true, y_pred)."""
        raise NotImplementedError

    def metrics(self, args: Any) -> list[Any]:
        """Keras metrics to compile with (fresh instances each call); their names (with
        `val_` in front) may be the study's objective."""
        return []

    def steps_per_epoch(self, args: Any, batch_size: int) -> int | None:
        """Batches in one pass over `train`, when cheap to know; None: counted once by the
        preflight (one pass over the training data)."""
        return None


@dataclass(frozen=True)
class PluginInfo:
    """An installed plugin as its distribution declares it (nothing of it imported)."""

    name: str
    version: str
    distribution: str
    target: str

    def as_json(self) -> dict[str, str]:
        """What a worker advertises and `lrsearch tasks` lists."""
        return {"name": self.name, "version": self.version, "distribution": self.distribution}


@dataclass(frozen=True)
class LoadedPlugin:
    """A plugin's code, loaded, with what its distribution says about it."""

    info: PluginInfo
    plugin: Any

    def parse_args(self, raw: dict[str, Any]) -> Any:
        """`task.plugin_args` through the plugin's `Args`; a SpecError naming each field."""
        model = getattr(self.plugin, "Args", None)
        if model is None:
            return dict(raw)
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise PluginError(f"plugin {self.info.name!r}: Args must be a pydantic model")
        try:
            return model.model_validate(raw)
        except ValidationError as exc:
            errors = [FieldError(_args_path(err["loc"]), err["msg"]) for err in exc.errors()]
            raise SpecError(errors) from None


def _args_path(loc: tuple[Any, ...]) -> str:
    inner = field_path(loc)
    return "task.plugin_args" if inner == "body" else f"task.plugin_args.{inner}"


def installed_plugins() -> dict[str, PluginInfo]:
    """Every plugin installed here, by name (the first of a duplicated name wins)."""
    found: dict[str, PluginInfo] = {}
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if entry.name in found or entry.name == IN_PROCESS or not _NAME.fullmatch(entry.name):
            continue
        dist = entry.dist
        found[entry.name] = PluginInfo(
            name=entry.name,
            version=str(dist.version) if dist is not None else "unknown",
            distribution=str(dist.metadata["Name"]) if dist is not None else "unknown",
            target=entry.value,
        )
    return found


def load_plugin(name: str) -> LoadedPlugin:
    """Import the plugin's code; a PluginError says why it cannot be used (never another
    exception: a broken plugin fails its study, not the worker)."""
    info = installed_plugins().get(name)
    if info is None:
        offered = ", ".join(sorted(installed_plugins())) or "none"
        raise PluginError(f"task plugin {name!r} is not installed here (installed: {offered})")
    entry = importlib.metadata.EntryPoint(name=name, value=info.target, group=ENTRY_POINT_GROUP)
    try:
        target = entry.load()
        plugin = target() if isinstance(target, type) else target
    except Exception as exc:
        raise PluginError(f"task plugin {name!r} cannot be loaded: {describe(exc)}") from None
    missing = [m for m in _REQUIRED if not callable(getattr(plugin, m, None))]
    if missing:
        raise PluginError(f"task plugin {name!r} has no {', '.join(missing)}() method")
    return LoadedPlugin(info, plugin)


def call(plugin_name: str, what: str, fn: Callable[..., Any], *args: Any) -> Any:
    """fn(*args), its exception turned into a PluginError that names the plugin and the
    method (`what`) and keeps the plugin's own message."""
    try:
        return fn(*args)
    except (PluginError, SpecError):
        raise
    except Exception as exc:
        raise PluginError(f"task plugin {plugin_name!r}: {what} raised {describe(exc)}") from None


def describe(exc: BaseException) -> str:
    """`Type: message`, on one line, bounded."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}"[:1000] if text else type(exc).__name__


__all__ = [
    "ENTRY_POINT_GROUP",
    "IN_PROCESS",
    "LoadedPlugin",
    "PluginInfo",
    "TaskPlugin",
    "call",
    "describe",
    "installed_plugins",
    "load_plugin",
]
