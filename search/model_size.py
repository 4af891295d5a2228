"""A study's model sized at submit, and held to the deployment's budget (no Keras import).

Why: a spec inside every per-field bound (an `mlp` of 8 x 4096 units on a wide dataset, a
`keras_json` Dense(40000) -> Dense(40000)) can still need more memory than a worker has; the
API refuses it with the estimate and the limit instead of letting a worker die at its first
trial. The built-in models are sized as search.training.models builds them; a keras_json
model by walking its JSON (search.keras_shapes); a keras_file model by the weights its file
holds (checked at upload).

Memory, kept simple (float32, 4 bytes a value):
    weights:     params x 4 x (1 weights + 1 gradients + optimizer slots)
                 slots: Adam/AdamW 2 (moments), RMSprop 1 (its mean square), SGD 1 with
                 momentum else 0
    activations: batch_size x (input + every layer's output values) x 4 x 2
                 (kept for the backward pass, and their gradients)
A floor, not a peak: TensorFlow's workspace and the data come on top.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from search.keras_dims import NoSizingRule
from search.keras_shapes import CannotSize, ModelSize, keras_json_size
from search.spec import CnnModel, KerasFileModel, KerasJsonModel, MlpModel, TaskSpec

#: Default most weights of a model (LRSEARCH_MAX_MODEL_PARAMS overrides).
DEFAULT_MAX_PARAMS = 50_000_000
#: Default most estimated training memory of a model, MiB (LRSEARCH_MAX_MODEL_MEMORY_MB).
DEFAULT_MAX_MEMORY_MB = 4096
BYTES_PER_VALUE = 4
_MIB = 1024 * 1024


@dataclass(frozen=True)
class ModelBudget:
    """What a deployment lets one trial's model take."""

    max_params: int = DEFAULT_MAX_PARAMS
    max_memory_mb: int = DEFAULT_MAX_MEMORY_MB


@dataclass(frozen=True)
class DataShape:
    """What a model is sized by: one example's shape and the output layer's width."""

    input_shape: tuple[int, ...]
    n_outputs: int


def optimizer_slots(optimizer: str, momentum: float) -> int:
    """Values the optimizer keeps per weight (see the module docstring)."""
    if optimizer in ("adam", "adamw"):
        return 2
    if optimizer == "rmsprop":
        return 1
    return 1 if momentum > 0 else 0


def memory_bytes(size: ModelSize, task: TaskSpec) -> int:
    """Estimated training memory of one trial (see the module docstring)."""
    per_weight = 2 + optimizer_slots(task.optimizer, task.momentum)
    weights = size.params * BYTES_PER_VALUE * per_weight
    return weights + task.batch_size * size.activations * BYTES_PER_VALUE * 2


def estimate(model: MlpModel | CnnModel | KerasJsonModel, data: DataShape) -> ModelSize:
    """The model's size for this data; CannotSize when it cannot be built for it."""
    if isinstance(model, KerasJsonModel):
        return keras_json_size(model.config, data.input_shape)
    if isinstance(model, CnnModel):
        return _cnn(model, data)
    return _mlp(model, data)


def _mlp(model: MlpModel, data: DataShape) -> ModelSize:
    """Flatten, Dense(+Dropout) per hidden layer, the output Dense."""
    width = math.prod(data.input_shape)
    params, acts = 0, 2 * width  # the input and its flattened copy
    for units in model.hidden:
        params += width * units + units
        acts += units * (2 if model.dropout > 0 else 1)
        width = units
    params += width * data.n_outputs + data.n_outputs
    return ModelSize(params=params, activations=acts + data.n_outputs)


def _cnn(model: CnnModel, data: DataShape) -> ModelSize:
    """[Reshape], Conv2D 3x3 same (+MaxPooling2D(2) while both sides are >= 2) per filter
    count, Flatten, Dense(+Dropout), the output Dense."""
    shape = data.input_shape
    if len(shape) not in (2, 3):
        raise CannotSize(
            f"cnn needs image-shaped inputs (H, W) or (H, W, C); the dataset's examples have "
            f"shape {shape} (use an mlp for flat feature vectors)"
        )
    height, width = shape[0], shape[1]
    channels = shape[2] if len(shape) == 3 else 1
    acts = math.prod(shape) * (1 if len(shape) == 3 else 2)
    params = 0
    for filters in model.filters:
        params += 9 * channels * filters + filters
        channels = filters
        acts += height * width * channels
        if min(height, width) >= 2:
            height, width = height // 2, width // 2
            acts += height * width * channels
    flat = height * width * channels
    params += flat * model.dense + model.dense
    acts += flat + model.dense * (2 if model.dropout > 0 else 1)
    params += model.dense * data.n_outputs + data.n_outputs
    return ModelSize(params=params, activations=acts + data.n_outputs)


def budget_problems(size: ModelSize, task: TaskSpec, budget: ModelBudget) -> list[str]:
    """Why a model of this size is over the budget (empty when it is not)."""
    problems = []
    if size.params > budget.max_params:
        problems.append(
            f"the model has {format_count(size.params)} parameters; this deployment allows at most "
            f"{budget.max_params:,}"
        )
    needed = memory_bytes(size, task)
    if needed > budget.max_memory_mb * _MIB:
        mb, params = format_count(-(-needed // _MIB)), format_count(size.params)
        problems.append(
            f"training it needs about {mb} MB (weights, gradients and {task.optimizer} state "
            f"for {params} parameters, activations for a batch of {task.batch_size}); this "
            f"deployment allows at most {budget.max_memory_mb:,} MB"
        )
    return problems


def format_count(n: int) -> str:
    """A count for a message; an absurd one (a hostile JSON's) is not spelled out."""
    return f"{n:,}" if n < 10**15 else "over 10^15"


def check_model_size(
    task: TaskSpec, data: DataShape, budget: ModelBudget, file_params: int | None = None
) -> list[str]:
    """Why the task's model cannot be trained within the budget (empty when it can).
    A keras_file model is sized by `file_params` (its weights; activations unknown)."""
    model = task.model
    if isinstance(model, KerasFileModel):
        if file_params is None:
            return []
        return budget_problems(ModelSize(params=file_params, activations=0), task, budget)
    try:
        size = estimate(model, data)
    except CannotSize as exc:
        reason = f"cannot size the model for inputs of shape {data.input_shape}: {exc}"
        if isinstance(exc, NoSizingRule):  # a class without a rule, not a broken config
            reason += (
                "; save the model with model.save() and upload the .keras file "
                "(POST /v1/models): a model file is sized by its weights"
            )
        return [reason]
    return budget_problems(size, task, budget)
