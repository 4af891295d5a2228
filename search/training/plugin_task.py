"""Run a task plugin (`search.plugins`): its preflight, once per study, and the
`StreamedTask` every trial of the study trains.

The preflight is what a training script would find out at its first line: that the plugin
loads, that its arguments are valid, that it builds a model and data, that the model takes a
batch and the loss and metrics apply to it, and how many batches an epoch has. Every failure
is a `PluginError` (or a `SpecError` on `task.plugin_args`) with the plugin's own message:
the worker fails the study with it, and goes on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import keras
import tensorflow as tf

from search.errors import LRSearchError, PluginError, SpecError
from search.plugins import LoadedPlugin, call, describe, load_plugin
from search.space import check_spec_against_run
from search.spec import StudySpec
from search.strategies import RunShape
from search.training.streamed import (
    Datasets,
    StreamedTask,
    check_objective,
    count_batches,
    first_batch,
    is_infinite,
)


@dataclass(frozen=True)
class Preflight:
    """What the preflight found: the run length, and the plugin version that ran."""

    steps_per_epoch: int
    infinite: bool
    version: str

    def as_json(self) -> dict[str, Any]:
        return {
            "steps_per_epoch": self.steps_per_epoch,
            "infinite": self.infinite,
            "version": self.version,
        }

    @classmethod
    def from_json(cls, data: Any) -> Preflight | None:
        """The stored preflight, or None when absent or not of this shape."""
        if not isinstance(data, dict) or not isinstance(data.get("steps_per_epoch"), int):
            return None
        return cls(int(data["steps_per_epoch"]), bool(data.get("infinite")), str(data["version"]))


def preflight(spec: StudySpec) -> Preflight:
    """Load the plugin, validate its arguments, build its model and data, run one batch of
    each through the compiled model, and count the epoch's batches unless declared."""
    loaded, args = _load(spec)
    name, plugin = loaded.info.name, loaded.plugin
    batch_size = spec.task.batch_size
    if spec.seed is not None:
        keras.utils.set_random_seed(int(spec.seed))
    model = _model(loaded, args)
    train, val = _datasets(loaded, args, batch_size, spec.seed)
    model.compile(
        optimizer="sgd",
        loss=call(name, "loss()", plugin.loss, args),
        metrics=_metrics(loaded, args),
    )
    reported: dict[str, Any] = {}
    for label, data in (("training", train), ("validation", val)):
        x, y = call(name, f"reading the first {label} batch", first_batch, data)
        reported = call(
            name,
            f"the model and loss on the first {label} batch",
            lambda x, y: model.test_on_batch(x, y, return_dict=True),
            x,
            y,
        )
    check_objective(spec.objective.metric, reported)
    if is_infinite(val):
        raise PluginError(f"task plugin {name!r}: the validation dataset repeats forever")
    declared = None
    if callable(getattr(plugin, "steps_per_epoch", None)):  # optional
        declared = call(name, "steps_per_epoch()", plugin.steps_per_epoch, args, batch_size)
    infinite = is_infinite(train)
    if declared is None:
        steps = int(call(name, "counting the training batches", count_batches, train))
    elif isinstance(declared, int) and not isinstance(declared, bool):
        steps = declared
    else:
        raise PluginError(f"task plugin {name!r}: steps_per_epoch() must return an int or None")
    if steps < 1:
        raise PluginError(f"task plugin {name!r}: the training dataset has no batches")
    errors = check_spec_against_run(spec, RunShape(spec.task.epochs, steps))
    if errors:
        raise SpecError(errors)
    return Preflight(steps, infinite, loaded.info.version)


def plugin_task(spec: StudySpec, found: Preflight) -> StreamedTask:
    """The task every trial trains: the plugin's parts, made fresh per trial."""
    loaded, args = _load(spec)
    name, plugin = loaded.info.name, loaded.plugin
    return StreamedTask(
        name=f"task plugin {name!r}",
        build_model=lambda _seed: _model(loaded, args),
        datasets=lambda batch, seed: _datasets(loaded, args, batch, seed),
        loss_and_metrics=lambda _model: (
            call(name, "loss()", plugin.loss, args),
            _metrics(loaded, args),
        ),
        steps_per_epoch=found.steps_per_epoch,
        infinite=found.infinite,
    )


def _load(spec: StudySpec) -> tuple[LoadedPlugin, Any]:
    name = spec.task.plugin
    if name is None:
        raise PluginError("the study names no task plugin")
    loaded = load_plugin(name)
    return loaded, loaded.parse_args(spec.task.plugin_args)


def _metrics(loaded: LoadedPlugin, args: Any) -> list[Any]:
    """The plugin's metrics (optional: none when it has no metrics())."""
    if not callable(getattr(loaded.plugin, "metrics", None)):
        return []
    return list(call(loaded.info.name, "metrics()", loaded.plugin.metrics, args) or [])


def _model(loaded: LoadedPlugin, args: Any) -> Any:
    name = loaded.info.name
    model = call(name, "build_model()", loaded.plugin.build_model, args)
    if not isinstance(model, keras.Model):
        raise PluginError(
            f"task plugin {name!r}: build_model() returned a {type(model).__name__}, "
            "not a keras.Model"
        )
    return model


def _datasets(loaded: LoadedPlugin, args: Any, batch_size: int, seed: int | None) -> Datasets:
    name = loaded.info.name
    pair = call(name, "datasets()", loaded.plugin.datasets, args, batch_size, seed)
    if not (isinstance(pair, tuple | list) and len(pair) == 2):
        raise PluginError(f"task plugin {name!r}: datasets() must return (train, validation)")
    for label, data in zip(("training", "validation"), pair, strict=True):
        if not isinstance(data, tf.data.Dataset):
            raise PluginError(
                f"task plugin {name!r}: the {label} data is a {type(data).__name__}, "
                "not a tf.data.Dataset"
            )
    return pair[0], pair[1]


def as_plugin_error(exc: Exception, name: str) -> LRSearchError:
    """Any error of a preflight as the domain error the study fails with."""
    if isinstance(exc, LRSearchError):
        return exc
    return PluginError(f"task plugin {name!r}: {describe(exc)}")


__all__ = ["Preflight", "as_plugin_error", "plugin_task", "preflight"]
