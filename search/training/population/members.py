"""The members of a fused population: each one a trial with everything a solo trial has.

Per member: the strategy and parameters Optuna gives it (`Trainer.begin_trial`), its export
loaded into its own schedule, its stock LR callbacks (LearningRateScheduler,
ReduceLROnPlateau) driving its own base rate on its own logs, the very `EpochMonitor` a solo
trial uses (recorded LR and history, divergence, reports, pruning, stop, checkpoint saves),
and its record stored by `Trainer.end_trial`. A member that ends stops counting (its slot is
masked); the others go on. Its checkpoint is a solo `TrialCheckpoint` (its slice of weights
and optimizer state), so a retry resumes solo or in another population alike.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np
import optuna

from search.checkpoints import CheckpointHandle, TrialCheckpoint
from search.data import Dataset
from search.spec import StudySpec
from search.task_metrics import COMPILED_METRIC
from search.training.keras_export import build_schedule_and_callbacks, optimizer_config
from search.training.lr_graph import DrivenCallback
from search.training.monitor import EpochMonitor, StopCheck
from search.training.population.host import Host
from search.training.population.loop import PopulationLoop
from search.training.population.stacked import describe
from search.training.prepared import _callback_state
from search.training.trial_start import Begun, trial_export

Result = float | BaseException
_CACHE_SIZE = 2


class _Stub:
    """What a member's callbacks see as the model: only `stop_training` is ever set."""

    stop_training = False


@dataclass
class _Member:
    slot: int
    trial: optuna.Trial
    begun: Begun
    monitor: EpochMonitor
    stock: list[Any]  # the unwrapped LR callbacks (their counters go in checkpoints)
    hooks: Any = None  # keras.callbacks.CallbackList
    stub: _Stub = field(default_factory=_Stub)
    rate: float = float("nan")  # the rate its last epoch started with
    active: bool = True
    index: int = 0  # its place among the trials asked for


def train_fused(
    trainer: Host,
    trials: list[optuna.Trial],
    spec: StudySpec,
    dataset: Dataset,
    should_stop: StopCheck | None,
    handles: Sequence[CheckpointHandle | None],
) -> list[Result] | None:
    """Train `trials` (all from scratch, all on the study's seed) as one population; None
    when this model cannot be fused (nothing has been asked of any trial then)."""
    seed = int(spec.seed or 0)
    model, weights = trainer.solo_start(spec, dataset, seed)
    loop = _loop_for(trainer, spec, dataset, model, len(trials))
    if loop is None:
        return None
    members: list[_Member] = []
    ended: dict[int, Result] = {}  # members that failed before training: as solo they would
    for i, trial in enumerate(trials):
        try:
            begun = trainer.begin_trial(trial, spec, dataset)
        except Exception as exc:
            ended[i] = exc
            continue
        try:
            trial_export(spec, dataset, begun.run, begun.outcome)
            _, stock = build_schedule_and_callbacks(begun.outcome.export, for_trial=True)
        except Exception as exc:  # a bad strategy or parameters: this member's own ending
            ended[i] = _end(trainer, trial, begun, _raiser(exc))
            continue
        monitor = EpochMonitor(
            trial, spec, begun.outcome, should_stop, trainer.persist, begun.reports.report
        )
        members.append(_Member(len(members), trial, begun, monitor, stock, index=i))
    if members:
        exports = [m.begun.outcome.export for m in members]
        loop.restart([weights] * len(members), exports, spec.task.epochs)
    for member, handle in zip(members, handles, strict=True):
        _wire(member, loop, handle)
    failure: BaseException | None = None
    try:
        _train(loop, members, spec.task.epochs, seed)
    except Exception as exc:  # a failure of the shared graph ends every member with it
        failure = exc
    for member in members:
        finish = member.monitor.finish if failure is None else _raiser(failure)
        ended[member.index] = _end(trainer, member.trial, member.begun, finish)
    return [ended[i] for i in range(len(trials))]


def _end(trainer: Host, trial: optuna.Trial, begun: Begun, finish: Any) -> Result:
    try:
        return trainer.end_trial(trial, begun, finish)
    except Exception as exc:  # the member's own ending (pruned, diverged, stopped...)
        return exc


def _raiser(exc: BaseException) -> Any:
    def fail() -> float:
        raise exc

    return fail


def _wire(member: _Member, loop: PopulationLoop, handle: CheckpointHandle | None) -> None:
    """The member's callbacks in a solo trial's order: its LR callbacks on its own schedule,
    then its monitor (which records the rate its epoch started with)."""
    schedule = loop.schedules[member.slot]
    driven = [DrivenCallback(cb, schedule) for cb in member.stock]
    monitor_hook = member.monitor.keras_callback(lambda: member.rate)
    member.hooks = keras.callbacks.CallbackList([*driven, monitor_hook], model=member.stub)
    if handle is not None:
        outcome = member.begun.outcome

        def snapshot(epoch: int) -> TrialCheckpoint:
            return TrialCheckpoint(
                epoch=epoch,
                weights=loop.net.member_weights(member.slot),
                optimizer=loop.optimizer.member_state(member.slot),
                base_lr=float(schedule.base_lr.numpy()),
                callbacks=[_callback_state(cb) for cb in member.stock],
                lr=list(outcome.lr),
                history={k: list(v) for k, v in outcome.history.items()},
            )

        member.monitor.on_saved_epoch = lambda epoch, stopping: handle.save_if_due(
            lambda: snapshot(epoch), force=stopping
        )


def _train(loop: PopulationLoop, members: list[_Member], epochs: int, seed: int) -> None:
    """`EpochLoop.fit`'s hooks, per member, around one fused graph call per epoch."""
    orders = loop.orders(seed, epochs)
    for member in members:
        member.hooks.on_train_begin()
    for epoch in range(epochs):
        alive = [m for m in members if m.active]
        if not alive:
            break
        for member in alive:
            member.hooks.on_epoch_begin(epoch)
        active = np.zeros(loop.k, dtype=np.float32)
        active[[m.slot for m in alive]] = 1.0
        logs, rates = loop.epoch(epoch, orders[epoch], active)
        for member in alive:
            member.rate = rates[member.slot]
            member.hooks.on_epoch_end(epoch, logs[member.slot])
            member.active = not member.stub.stop_training
    for member in members:
        member.hooks.on_train_end({})


def _loop_for(
    trainer: Host, spec: StudySpec, dataset: Dataset, model: keras.Model, k: int
) -> PopulationLoop | None:
    """The trainer's population loop for this model, data, optimizer and size (built once,
    a few kept); None when the model has a layer the stacked net does not compute."""
    cache: OrderedDict[str, PopulationLoop | None] = trainer.populations or OrderedDict()
    trainer.populations = cache
    opt = optimizer_config(spec.task.optimizer, spec.task.momentum)
    model_spec = spec.task.model.model_dump(mode="json")
    key = json.dumps(
        [dataset.fingerprint(), model_spec, opt, spec.task.batch_size, spec.seed, k],
        sort_keys=True,
    )  # not the epochs: the graph is per epoch
    if key not in cache:
        layers = describe(model)
        cache[key] = (
            None
            if layers is None
            else PopulationLoop(
                layers,
                [tuple(int(d) for d in w.shape) for w in model.get_weights()],
                k,
                opt,
                (dataset.x_train, dataset.y_train, dataset.x_val, dataset.y_val),
                spec.task.batch_size,
                dataset.task == "classification",
                COMPILED_METRIC[dataset.task],
            )
        )
        while len(cache) > _CACHE_SIZE:
            cache.popitem(last=False)
    cache.move_to_end(key)
    return cache[key]


__all__ = ["train_fused"]
