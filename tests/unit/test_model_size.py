"""search.model_size and search.keras_shapes without Keras: the memory formula, the budget's
messages, and hostile model JSON (unknown layers, cycles, depth, unknown dimensions) refused
as unsizable instead of guessed at or walked forever."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from search.errors import ModelError
from search.keras_ops import apply_op, broadcast
from search.keras_shapes import MAX_LAYERS, CannotSize, ModelSize, keras_json_size
from search.model_files import check_keras_file
from search.model_size import ModelBudget, budget_problems, memory_bytes, optimizer_slots
from search.spec import TaskSpec
from tests.keras_files import archive, unique_names
from tests.keras_files import sequential as file_sequential


def layer(cls: str, **config: Any) -> dict[str, Any]:
    return {"module": "keras.layers", "class_name": cls, "config": {"name": cls, **config}}


def sequential(*layers: dict[str, Any], shape: list[int | None] | None = None) -> str:
    inputs = [layer("InputLayer", batch_shape=[None, *shape])] if shape else []
    named = unique_names([*inputs, *layers])
    return json.dumps({"class_name": "Sequential", "config": {"layers": named}})


def test_memory_is_weights_gradients_slots_and_a_batch_of_activations() -> None:
    size = ModelSize(params=1000, activations=50)
    adam = TaskSpec(optimizer="adam", batch_size=8)
    assert memory_bytes(size, adam) == 1000 * 4 * 4 + 8 * 50 * 4 * 2
    assert optimizer_slots("rmsprop", 0.9) == 1 and optimizer_slots("adamw", 0.0) == 2
    assert optimizer_slots("sgd", 0.9) == 1 and optimizer_slots("sgd", 0.0) == 0
    plain_sgd = TaskSpec(optimizer="sgd", momentum=0.0, batch_size=8)
    assert memory_bytes(size, plain_sgd) == 1000 * 4 * 2 + 8 * 50 * 4 * 2


def test_both_limits_are_named_with_the_estimate() -> None:
    size = ModelSize(params=3_000_000, activations=10)
    over = budget_problems(size, TaskSpec(), ModelBudget(max_params=1_000_000, max_memory_mb=10))
    assert over[0] == "the model has 3,000,000 parameters; this deployment allows at most 1,000,000"
    assert "about 46 MB" in over[1] and "at most 10 MB" in over[1]
    assert budget_problems(size, TaskSpec(), ModelBudget()) == []
    units = 10**4000  # the product has more digits than Python will print
    wide = sequential(layer("Dense", units=units), layer("Dense", units=units), shape=[3])
    astronomical = budget_problems(keras_json_size(wide, (3,)), TaskSpec(), ModelBudget())
    assert "has over 10^15 parameters" in astronomical[0] and "over 10^15 MB" in astronomical[1]


def test_a_concatenate_needs_one_axis() -> None:
    inputs = {**layer("InputLayer", batch_shape=[None, 4]), "name": "x"}
    tensor = {"class_name": "__keras_tensor__", "config": {"keras_history": ["x", 0, 0]}}
    join = {
        **layer("Concatenate", axis=[]),
        "name": "c",
        "inbound_nodes": [{"args": [[tensor] * 2]}],
    }
    config = {"layers": [inputs, join], "input_layers": ["x", 0, 0], "output_layers": ["c", 0, 0]}
    with pytest.raises(CannotSize, match="one integer"):
        keras_json_size(json.dumps({"class_name": "Functional", "config": config}), (4,))


def test_odd_but_valid_configs_are_sized() -> None:
    prelu = sequential(layer("PReLU", shared_axes=2), shape=[5, 3])  # an int, not a list
    assert keras_json_size(prelu, (5, 3)).params == 5


def test_a_declared_none_dimension_is_filled_from_the_data() -> None:
    config = sequential(layer("Dense", units=3), shape=[None])
    assert keras_json_size(config, (5,)).params == 5 * 3 + 3
    with pytest.raises(CannotSize, match="unknown"):  # no data of that rank to fill it
        keras_json_size(config, (5, 2))


@pytest.mark.parametrize(
    ("layers", "reason"),
    [
        ([layer("EinsumDense", equation="ab,bc->ac", output_shape=4)], "not a layer lrsearch"),
        ([layer("Dense", units="many")], "units must be"),
        ([layer("Dense", units=True)], "units must be"),
        ([layer("Conv2D", filters=4, kernel_size=3)], "rank 4"),
        ([layer("Reshape", target_shape=[-1, -1])], "-1"),
        ([layer("Bidirectional", layer=layer("Dense", units=3))], "must wrap"),
        ([layer("MaxPooling1D", pool_size=50)], "too small"),
        ([layer("Permute", dims=[1, "a"])], "permutation"),
        ([layer("Permute", dims=[True, 2])], "permutation"),
        ([{"class_name": ["Dense"], "config": {}}], "not a layer"),
        ([layer("Bidirectional", layer={"class_name": ["LSTM"]})], "must wrap"),
    ],
)
def test_layers_that_cannot_be_sized_are_refused(layers: list[Any], reason: str) -> None:
    with pytest.raises(CannotSize, match=reason):
        keras_json_size(sequential(*layers, shape=[10, 3]), (10, 3))


def test_hostile_graphs_are_refused_quickly() -> None:
    def node(name: str, source: str) -> dict[str, Any]:
        history = {"class_name": "__keras_tensor__", "config": {"keras_history": [source, 0, 0]}}
        return {**layer("Dense", units=2), "name": name, "inbound_nodes": [{"args": [history]}]}

    def functional(layers: list[Any], out: str) -> str:
        inputs = {**layer("InputLayer", batch_shape=[None, 4]), "name": "x"}
        config = {"layers": [inputs, *layers], "input_layers": ["x", 0, 0]}
        return json.dumps(
            {"class_name": "Functional", "config": {**config, "output_layers": [out, 0, 0]}}
        )

    with pytest.raises(CannotSize, match="no layer makes"):  # a cycle
        keras_json_size(functional([node("a", "b"), node("b", "a")], "a"), (4,))
    chain = [node(f"l{i}", f"l{i - 1}" if i else "x") for i in range(MAX_LAYERS + 1)]
    started = time.monotonic()
    with pytest.raises(CannotSize, match="more than"):
        keras_json_size(functional(chain[::-1], f"l{MAX_LAYERS}"), (4,))
    assert time.monotonic() - started < 2
    ok = chain[:3000][::-1]  # listed backwards: each call waits once, no quadratic passes
    started = time.monotonic()
    assert keras_json_size(functional(ok, "l2999"), (4,)).params == 4 * 2 + 2 + 2999 * 6
    assert time.monotonic() - started < 2
    nested: dict[str, Any] = json.loads(sequential(layer("Dense", units=2), shape=[4]))
    for _ in range(30):
        nested = json.loads(sequential(nested, shape=[4]))
    with pytest.raises(CannotSize, match="nested more than"):
        keras_json_size(json.dumps(nested), (4,))


def test_a_model_file_is_sized_by_its_architecture_as_well_as_its_weights() -> None:
    """A file can ship 4 KB of weights and describe a model that `weights: fresh` rebuilds
    at 1.6 billion weights."""
    huge = file_sequential(*[layer("Dense", units=40_000)] * 2)
    with pytest.raises(ModelError, match="about 1,600,400,000 weights"):
        check_keras_file(archive(huge), max_uncompressed=10**8)
    small = file_sequential(layer("Dense", units=300))  # 2,700 weights, 1,024 in the file
    info = check_keras_file(archive(small), max_uncompressed=10**8)
    assert info.est_params == 8 * 300 + 300
    absurd = file_sequential(*[layer("Dense", units=10**4000)] * 2)
    with pytest.raises(ModelError, match="about over 10"):
        check_keras_file(archive(absurd), max_uncompressed=10**8)


def test_ops_broadcast_like_numpy_and_never_reduce_the_batch() -> None:
    assert broadcast([(4, 3), (3,)]) == (4, 3)
    assert broadcast([(4, 1), (1, 5)]) == (4, 5)
    assert broadcast([(None, 3), (7, 3)]) == (7, 3)
    with pytest.raises(CannotSize, match="do not broadcast"):
        broadcast([(4,), (3,)])
    assert apply_op("Mean", {"axis": 1, "keepdims": False}, [(5, 3)]) == [(3,)]
    assert apply_op("Sum", {"axis": -1, "keepdims": True}, [(5, 3)]) == [(5, 1)]
    for axis in (None, 0):
        with pytest.raises(CannotSize, match="batch"):
            apply_op("Mean", {"axis": axis}, [(5, 3)])
    with pytest.raises(CannotSize, match="not one lrsearch can size"):
        apply_op("Einsum", {}, [(5, 3)])
    assert apply_op("Concatenate", {"axis": 1}, [(5, 3), (2, 3)]) == [(7, 3)]
    with pytest.raises(CannotSize, match="differ outside"):
        apply_op("Concatenate", {"axis": -1}, [(5, 3), (2, 3)])
    assert apply_op("ExpandDims", {"axis": -1}, [(5, 3)]) == [(5, 3, 1)]
    assert apply_op("Reshape", {"newshape": [-1, 15]}, [(5, 3)]) == [(15,)]
    for newshape in ([-1, 14], [8, 15], [-1, -1]):
        with pytest.raises(CannotSize):
            apply_op("Reshape", {"newshape": newshape}, [(5, 3)])


def test_a_layer_without_a_rule_points_to_a_model_file() -> None:
    """A class the walk has no rule for is refused with the way out (a .keras file is sized
    by its weights); a broken config is refused without it."""
    from search.model_size import DataShape, check_model_size
    from search.spec import KerasJsonModel

    unknown = sequential(layer("EinsumDense", equation="ab,bc->ac", output_shape=4), shape=[3])
    task = TaskSpec(model=KerasJsonModel(config=unknown))
    [reason] = check_model_size(task, DataShape((3,), 2), ModelBudget())
    assert "'EinsumDense' is not a layer" in reason and "upload the .keras file" in reason
    broken = sequential(layer("Dense", units=0), shape=[3])
    [reason] = check_model_size(
        TaskSpec(model=KerasJsonModel(config=broken)), DataShape((3,), 2), ModelBudget()
    )
    assert "units" in reason and ".keras" not in reason
