"""The metrics a built-in task reports, per task kind: what training compiles and what an
objective may name.

Pure Python, so the API checks an objective at submit without TensorFlow, and the trainer
compiles from the same table (search.training.models), so the two cannot drift. A task
plugin reports the metrics it defines: those are checked on a worker, not here.
"""

from __future__ import annotations

from search.errors import FieldError

#: The one metric compiled besides the loss, per task kind (a Keras metric name).
COMPILED_METRIC: dict[str, str] = {"classification": "accuracy", "regression": "mae"}
OBJECTIVE_FIELD = "objective.metric"


def reported_metrics(task: str) -> tuple[str, ...]:
    """Every history key an epoch of this task reports: the loss and the compiled metric,
    on the training data and (`val_`) on the validation data."""
    names = ("loss", COMPILED_METRIC[task])
    return (*names, *(f"val_{name}" for name in names))


def objective_problem(metric: str, task: str) -> FieldError | None:
    """Why `metric` cannot be the objective of a task of this kind (None: it is reported,
    or the kind is not one this table knows)."""
    if task not in COMPILED_METRIC:
        return None
    reported = reported_metrics(task)
    if metric in reported:
        return None
    message = (
        f"{metric!r} is never reported for a {task} dataset;"
        f" the metrics reported are: {', '.join(reported)}"
    )
    return FieldError(OBJECTIVE_FIELD, message)


__all__ = ["COMPILED_METRIC", "objective_problem", "reported_metrics"]
