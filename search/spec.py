"""StudySpec: what a study asks for, validated once, serialisable as JSON.

Every bound is checked here so that a worker never meets a spec it cannot run;
`parse_spec` turns pydantic's errors into one `SpecError` listing each bad field by path.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from search.errors import MAX_LISTED_ERRORS, FieldError, SpecError
from search.strategies import PARAM_BOUNDS, STRATEGY_IDS, get_strategy
from search.text import PRINTABLE_MESSAGE, printable

MAX_MODEL_JSON_CHARS = 1_000_000
ID_PATTERN = r"^[A-Za-z0-9_\-]+$"
#: A plugin's entry point name: a Python-ish identifier, dots and dashes allowed.
PLUGIN_NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_.\-]*$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MlpModel(_Strict):
    """A dense network: hidden layer sizes, ReLU, optional dropout."""

    kind: Literal["mlp"] = "mlp"
    hidden: list[Annotated[int, Field(ge=1, le=4096)]] = Field(
        default_factory=lambda: [64, 32], max_length=8
    )
    dropout: float = Field(0.0, ge=0.0, lt=0.9)


class CnnModel(_Strict):
    """A small conv net for image-shaped inputs (H, W) or (H, W, C)."""

    kind: Literal["cnn"] = "cnn"
    filters: list[Annotated[int, Field(ge=1, le=512)]] = Field(
        default_factory=lambda: [16, 32], min_length=1, max_length=4
    )
    dense: int = Field(64, ge=1, le=4096)
    dropout: float = Field(0.0, ge=0.0, lt=0.9)


class KerasJsonModel(_Strict):
    """A user model as `model.to_json()`; loaded in safe mode (no Lambda layers)."""

    kind: Literal["keras_json"] = "keras_json"
    config: str = Field(min_length=2, max_length=MAX_MODEL_JSON_CHARS)


class KerasFileModel(_Strict):
    """A `.keras` file uploaded with `POST /v1/models`; loaded in safe mode, uncompiled.

    `weights: file` starts every trial from the file's weights (fine-tuning), `fresh` from
    newly initialised (seeded) ones.
    """

    kind: Literal["keras_file"] = "keras_file"
    id: str = Field(min_length=1, max_length=64, pattern=ID_PATTERN)
    weights: Literal["file", "fresh"] = "file"


ModelSpec = Annotated[
    MlpModel | CnnModel | KerasJsonModel | KerasFileModel, Field(discriminator="kind")
]
MODEL_KINDS = ("mlp", "cnn", "keras_json", "keras_file")
DEFAULT_DATASET = "digits"
#: Largest `task.plugin_args`, as JSON characters (the plugin's own model validates it).
MAX_PLUGIN_ARGS_CHARS = 100_000


class PreprocessSpec(_Strict):
    """Standardisation of tabular data, fitted on the training split only
    (`search.data.preprocess`); the export names the statistics for a user's own script."""

    standardize: bool = Field(False, description="features to zero mean and unit variance")
    standardize_target: bool = Field(
        False, description="a regression target likewise (the objective is then in its units)"
    )


class TaskSpec(_Strict):
    """What to train: data, model, epochs, batch size, optimizer and preprocessing.

    With `plugin`, an installed task plugin (entry point group `lrsearch.tasks`) gives the
    model, the data, the loss and the metrics, so `dataset` and `model` do not apply.
    """

    dataset: str = Field(DEFAULT_DATASET, min_length=1, max_length=64, pattern=ID_PATTERN)
    model: ModelSpec = Field(default_factory=lambda: MlpModel())
    plugin: str | None = Field(None, min_length=1, max_length=100, pattern=PLUGIN_NAME_PATTERN)
    plugin_args: dict[str, Any] = Field(default_factory=dict)
    epochs: int = Field(10, ge=1, le=1000)
    batch_size: int = Field(64, ge=1, le=65536)
    optimizer: Literal["adam", "adamw", "sgd", "rmsprop"] = "adam"
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="SGD momentum")
    preprocess: PreprocessSpec | None = Field(
        None, description="standardise tabular data (none: train on the data as uploaded)"
    )

    @model_validator(mode="after")
    def _plugin_owns_data_and_model(self) -> TaskSpec:
        errors = _plugin_errors(self)
        if errors:
            raise SpecError(errors)
        return self


def _plugin_errors(task: TaskSpec) -> list[FieldError]:
    """With a plugin, a dataset or model other than the defaults is a mistake to point out
    (the defaults themselves are accepted: a stored spec carries them)."""
    if task.plugin is None:
        if task.plugin_args:
            return [FieldError("task.plugin_args", "only applies with task.plugin")]
        return []
    errors = []
    if task.dataset != DEFAULT_DATASET:
        errors.append(FieldError("task.dataset", "does not apply with task.plugin"))
    if task.model != MlpModel():
        errors.append(FieldError("task.model", "does not apply with task.plugin"))
    if task.preprocess is not None:
        errors.append(FieldError("task.preprocess", "does not apply with task.plugin"))
    if len(json.dumps(task.plugin_args, default=str)) > MAX_PLUGIN_ARGS_CHARS:
        errors.append(
            FieldError("task.plugin_args", f"at most {MAX_PLUGIN_ARGS_CHARS} characters as JSON")
        )
    return errors


_MAXIMIZED = ("accuracy", "auc", "precision", "recall")


class ObjectiveSpec(_Strict):
    """The metric to optimise; its direction is inferred unless given."""

    metric: str = Field("val_loss", pattern=r"^(val_)?[a-z_]+$", max_length=64)
    direction: Literal["minimize", "maximize"] | None = None
    aggregate: Literal["last", "best"] = Field(
        "last",
        description="a trial's value: its final epoch's (last) or its best epoch's (best; the"
        " export then restores the best epoch's weights)",
    )

    @model_validator(mode="after")
    def _infer_direction(self) -> ObjectiveSpec:
        if self.direction is None:
            up = any(self.metric.endswith(m) for m in _MAXIMIZED)
            self.direction = "maximize" if up else "minimize"
        return self

    @property
    def best_mode(self) -> Literal["min", "max"] | None:
        """Keras's `mode` for the best epoch when the value is the best one (None: last)."""
        if self.aggregate == "last":
            return None
        return "max" if self.direction == "maximize" else "min"


class ParamRange(_Strict):
    """A user override of one parameter's search range."""

    low: float
    high: float
    log: bool = False


class StudySpec(_Strict):
    """A whole study: name, task, objective, strategies, ranges and search budget."""

    name: str = Field("study", min_length=1, max_length=200)
    task: TaskSpec = Field(default_factory=lambda: TaskSpec())
    objective: ObjectiveSpec = Field(default_factory=lambda: ObjectiveSpec())
    strategies: list[str] = Field(default_factory=lambda: list(STRATEGY_IDS), min_length=1)
    ranges: dict[str, ParamRange] = Field(default_factory=dict)
    n_trials: int = Field(20, ge=1, le=10000)
    timeout_s: float | None = Field(None, gt=0, le=30 * 24 * 3600)
    sampler: Literal["tpe", "random", "gp", "cmaes", "qmc"] = "tpe"
    pruner: Literal["none", "median", "hyperband", "successive_halving"] = "median"
    seed: int | None = Field(0, ge=0, le=2**31 - 1)
    range_test: bool = Field(
        True,
        description="run a learning-rate range test first and search the initial rate in the"
        " range it finds (skipped when ranges.initial_lr is given)",
    )
    replicate_share: float = Field(
        0.25,
        ge=0.0,
        le=0.5,
        description="share of the trials that re-run the best candidates on fresh seeds;"
        " /best is then the best mean over seeds",
    )

    @field_validator("name")
    @classmethod
    def _printable_name(cls, name: str) -> str:
        """Names are printed back in terminals: no escape sequences or forged lines."""
        if not printable(name):
            raise SpecError([FieldError("name", PRINTABLE_MESSAGE)])
        return name

    @field_validator("strategies")
    @classmethod
    def _known_strategies(cls, strategies: list[str]) -> list[str]:
        error = _strategy_errors(strategies)
        if error:
            raise error
        return strategies

    @field_validator("ranges")
    @classmethod
    def _usable_ranges(
        cls, ranges: dict[str, ParamRange], info: ValidationInfo
    ) -> dict[str, ParamRange]:
        error = _range_errors(ranges, info.data.get("strategies", list(STRATEGY_IDS)))
        if error:
            raise error
        return ranges

    def params_of_strategies(self) -> set[str]:
        """All parameter names the chosen strategies search."""
        return {p for s in self.strategies for p in get_strategy(s).param_names}


def _strategy_errors(strategies: list[str]) -> SpecError | None:
    """The unknown strategies (the first MAX_LISTED_ERRORS named, the rest counted)."""
    unknown = [i for i, s in enumerate(strategies) if s not in STRATEGY_IDS]
    known = ", ".join(STRATEGY_IDS)
    errors = [
        FieldError(f"strategies.{i}", f"unknown strategy {strategies[i]!r}; known: {known}")
        for i in unknown[:MAX_LISTED_ERRORS]
    ]
    if len(set(strategies)) != len(strategies):
        errors.append(FieldError("strategies", "each strategy may be listed once"))
    more = len(unknown) - min(len(unknown), MAX_LISTED_ERRORS)
    return SpecError(errors, more) if errors else None


def _range_errors(ranges: dict[str, ParamRange], strategies: list[str]) -> SpecError | None:
    """Bad ranges; unknown names past the first MAX_LISTED_ERRORS are only counted (the
    known names are few, so the work stays bounded)."""
    errors: list[FieldError] = []
    more = 0
    searched = {p for s in strategies if s in STRATEGY_IDS for p in get_strategy(s).param_names}
    for name, rng in ranges.items():
        path = f"ranges.{name}"
        if name not in PARAM_BOUNDS:
            if len(errors) >= MAX_LISTED_ERRORS:
                more += 1
            else:
                message = f"unknown parameter; known: {', '.join(PARAM_BOUNDS)}"
                errors.append(FieldError(path, message))
            continue
        if name not in searched:
            errors.append(FieldError(path, "no chosen strategy searches this parameter"))
            continue
        errors.extend(
            FieldError(path, m)
            for m in PARAM_BOUNDS[name].range_problems(rng.low, rng.high, rng.log)
        )
    lr, min_lr = ranges.get("initial_lr"), ranges.get("min_lr")
    lr_low = lr.low if lr else PARAM_BOUNDS["initial_lr"].default_low
    if min_lr and min_lr.high >= lr_low:
        errors.append(
            FieldError(
                "ranges.min_lr",
                f"high ({min_lr.high:g}) must be below the initial rate's low ({lr_low:g})",
            )
        )
    return SpecError(errors, more) if errors else None


def parse_spec(data: Any) -> StudySpec:
    """Validate raw JSON-like data into a StudySpec or raise one SpecError listing every field."""
    try:
        return StudySpec.model_validate(data)
    except SpecError:
        raise
    except ValidationError as exc:
        raise spec_error(exc) from None


def spec_error(exc: ValidationError) -> SpecError:
    """Pydantic's errors as (dotted path, message) pairs, unwrapping our own; past the first
    MAX_LISTED_ERRORS they are only counted."""
    out: list[FieldError] = []
    more = 0
    for i, err in enumerate(exc.errors(include_url=False, include_input=False)):
        if len(out) >= MAX_LISTED_ERRORS:
            more += exc.error_count() - i
            break
        inner = (err.get("ctx") or {}).get("error")
        if isinstance(inner, SpecError):
            out.extend(inner.errors)
            more += inner.more
            continue
        out.append(FieldError(field_path(err["loc"]), err["msg"]))
    return SpecError(out, more)


def field_path(loc: tuple[Any, ...]) -> str:
    """A pydantic error location as a dotted path, without the model union's tags."""
    return ".".join(str(p) for p in loc if not _is_union_tag(p)) or "body"


def _is_union_tag(part: Any) -> bool:
    return part in MODEL_KINDS
