"""A fit ready to run (a model, its LR callbacks and how it trains), and the checkpoint of
its state: what `snapshot` saves after an epoch is what `restore` loads into a retry.

A checkpoint holds weights, optimizer variables (including the step count the schedules
read), the base rate and ReduceLROnPlateau's counters, so a resumed trial goes on exactly
where its dead attempt stopped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from search.checkpoints import TrialCheckpoint
from search.outcome import TrialOutcome

_CALLBACK_STATE = ("wait", "cooldown_counter", "best")  # ReduceLROnPlateau's counters


@dataclass
class PreparedFit:
    """One fit ready to run, plus what a checkpoint saves and restores."""

    model: Any
    callbacks: list[Any]
    train_data: Any = None  # model.fit's inputs (fresh models only)
    val_data: Any = None
    base_lr: Any | None = None  # the schedule's base-rate variable (reused graphs only)
    loop: Any | None = None  # an EpochLoop (reused graphs only); else model.fit
    fit_kwargs: dict[str, Any] = field(default_factory=dict)  # more of model.fit's arguments

    def lr_callbacks(self) -> list[Any]:
        """The stock LR callbacks (unwrapped from DrivenCallback on reused graphs)."""
        return [getattr(cb, "inner", cb) for cb in self.callbacks]

    def snapshot(self, epoch: int, outcome: TrialOutcome) -> TrialCheckpoint:
        """The state after `epoch` finished epochs (cheap: arrays copied to host once)."""
        optimizer = self.model.optimizer
        return TrialCheckpoint(
            epoch=epoch,
            weights=self.model.get_weights(),
            optimizer=[v.numpy() for v in optimizer.variables],
            base_lr=None if self.base_lr is None else float(self.base_lr.numpy()),
            callbacks=[_callback_state(cb) for cb in self.lr_callbacks()],
            lr=list(outcome.lr),
            history={k: list(v) for k, v in outcome.history.items()},
        )

    def restore(self, checkpoint: TrialCheckpoint) -> bool:
        """Load weights, optimizer variables and base rate; False (nothing changed) if the
        checkpoint does not fit this model."""
        optimizer = self.model.optimizer
        if not optimizer.built:
            optimizer.build(self.model.trainable_variables)
        if not (
            _same_shapes(self.model.get_weights(), checkpoint.weights)
            and _same_shapes([v.numpy() for v in optimizer.variables], checkpoint.optimizer)
        ):
            return False
        self.model.set_weights(checkpoint.weights)
        for var, value in zip(optimizer.variables, checkpoint.optimizer, strict=True):
            var.assign(value)
        if self.base_lr is not None and checkpoint.base_lr is not None:
            self.base_lr.assign(checkpoint.base_lr)
        return True

    def restore_callbacks(self, saved: TrialCheckpoint | None) -> Any:
        """A Keras callback, placed after the LR callbacks, that sets their saved counters
        once their own on_train_begin has reset them (ReduceLROnPlateau's wait, cooldown,
        best)."""
        import keras

        def restore(logs: dict[str, Any] | None = None) -> None:
            if saved is None:
                return
            for callback, state in zip(self.lr_callbacks(), saved.callbacks, strict=False):
                for name, value in state.items():
                    current = getattr(callback, name, None)
                    setattr(callback, name, int(value) if isinstance(current, int) else value)

        return keras.callbacks.LambdaCallback(on_train_begin=restore)


def _callback_state(callback: Any) -> dict[str, float]:
    """The counters of an LR callback that a resumed fit must continue from."""
    state: dict[str, float] = {}
    for name in _CALLBACK_STATE:
        value = getattr(callback, name, None)
        if isinstance(value, int | float) and not isinstance(value, bool):
            state[name] = float(value)
    return state


def _same_shapes(current: list[Any], saved: list[Any]) -> bool:
    return len(current) == len(saved) and all(
        tuple(a.shape) == tuple(b.shape) for a, b in zip(current, saved, strict=True)
    )


__all__ = ["PreparedFit"]
