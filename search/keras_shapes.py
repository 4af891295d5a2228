"""The size of a `keras_json` model, found by walking its JSON (no Keras import).

Why: the API refuses a model over the deployment's parameter and memory budget at submit
(search.model_size), before a worker builds it and runs out of memory. Shapes are propagated
from the model's declared input (its None dimensions filled from the dataset's example shape,
as the worker's build does) through each layer's rule in search.keras_layers. Sequential and
Functional models are walked, nested ones too; a shared layer's weights count once.

Conservative by design: a layer class without a rule, or a weight whose size depends on an
unknown dimension, makes the model unsizable (`CannotSize`), and the API refuses it rather
than guess.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass
from typing import Any

from search.keras_dims import CannotSize, Shape, prod
from search.keras_layers import apply_layer

__all__ = [
    "CannotSize",
    "ModelSize",
    "declared_inputs",
    "keras_json_size",
    "model_config_size",
    "output_shapes",
]

#: Most layers walked (nested ones included): a bigger model is refused, not walked.
MAX_LAYERS = 5000
#: Most levels of models nested in models.
MAX_DEPTH = 20
_MODELS = frozenset({"Sequential", "Functional", "Model"})


@dataclass(frozen=True)
class ModelSize:
    """Weights (what `count_params()` says) and activation values per example (the input's
    and every layer output's elements, unknown dimensions counted as 1)."""

    params: int
    activations: int


class _Walk:
    """Running totals of one model walk; `seen` keeps shared layers' weights from counting
    twice."""

    def __init__(self) -> None:
        self.params = 0
        self.activations = 0
        self.layers = 0
        self.depth = 0
        self.seen: set[int] = set()

    def count(self, node: dict[str, Any], outputs: list[Shape], weights: int) -> None:
        if id(node) not in self.seen:
            self.seen.add(id(node))
            self.params += weights
        self.activations += sum(prod([d or 1 for d in s]) or 0 for s in outputs)


def keras_json_size(config: str, data_shape: tuple[int, ...]) -> ModelSize:
    """The size of `model.to_json()` text built for examples of `data_shape`."""
    try:
        tree = json.loads(config)
    except (ValueError, RecursionError) as exc:
        raise CannotSize(f"not valid JSON: {str(exc)[:200]}") from None
    if not isinstance(tree, dict):
        raise CannotSize("the JSON is not a Keras model config")
    return model_config_size(tree, data_shape)


def model_config_size(tree: dict[str, Any], data_shape: tuple[int, ...] | None) -> ModelSize:
    """The size of a model config (a parsed to_json(), or a .keras file's config.json);
    `data_shape` None: the model's own declared input is used as it is."""
    walk = _Walk()
    _call_model(walk, tree, None, data_shape)
    return ModelSize(params=walk.params, activations=walk.activations)


def _fill(declared: Shape, data_shape: tuple[int, ...] | None) -> Shape:
    """A declared input shape with its None dimensions taken from the data (same rank)."""
    if data_shape is None or len(declared) != len(data_shape):
        return declared
    return tuple(d if d is not None else x for d, x in zip(declared, data_shape, strict=True))


def _shape(value: Any, what: str) -> Shape:
    if not isinstance(value, list | tuple) or not all(
        d is None or (isinstance(d, int) and not isinstance(d, bool) and d >= 0) for d in value
    ):
        raise CannotSize(f"{what} must be a list of sizes, got {str(value)[:80]}")
    return tuple(value)


def _declared_input(cfg: dict[str, Any]) -> Shape | None:
    """The input shape a layer config declares (InputLayer's batch_shape, or a first layer's
    legacy input_shape / batch_input_shape / input_dim), without the batch axis."""
    for key in ("batch_shape", "batch_input_shape"):
        if cfg.get(key) is not None:
            return _shape(cfg[key], key)[1:]
    if cfg.get("input_shape") is not None:
        return _shape(cfg["input_shape"], "input_shape")
    if cfg.get("input_dim") is not None:
        return _shape([cfg["input_dim"]], "input_dim")
    return None


def _config(node: dict[str, Any]) -> dict[str, Any]:
    cfg = node.get("config")
    return cfg if isinstance(cfg, dict) else {}


def _call(walk: _Walk, node: Any, inputs: list[Shape], call: Any = None) -> list[Shape]:
    """Output shapes of one layer (or nested model) called on `inputs` (`call`: the
    inbound node, whose recorded arguments an op such as a slice reads); totals updated."""
    if not isinstance(node, dict):
        raise CannotSize("a layer must be a JSON object")
    walk.layers += 1
    if walk.layers > MAX_LAYERS:
        raise CannotSize(f"the model has more than {MAX_LAYERS} layers")
    if str(node.get("class_name")) in _MODELS:
        return _call_model(walk, node, inputs, None)
    try:
        outputs, weights = apply_layer(node, inputs, call)
    except CannotSize as exc:  # named by its layer, of the same kind (NoSizingRule stays one)
        name = _config(node).get("name")
        raise type(exc)(
            f"layer {str(name)[:80]!r} ({str(node.get('class_name'))[:80]}): {exc}"
        ) from None
    walk.count(node, outputs, weights)
    return outputs


def _call_model(
    walk: _Walk,
    node: dict[str, Any],
    inputs: list[Shape] | None,
    data_shape: tuple[int, ...] | None,
) -> list[Shape]:
    """A model's outputs: called on `inputs` when nested, else on its declared input."""
    cfg = _config(node)
    layers = cfg.get("layers")
    if not isinstance(layers, list):
        raise CannotSize("a model config must list its layers")
    walk.depth += 1
    if walk.depth > MAX_DEPTH:
        raise CannotSize(f"models are nested more than {MAX_DEPTH} deep")
    try:
        if node.get("class_name") == "Sequential":
            return _sequential(walk, cfg, layers, inputs, data_shape)
        return _functional(walk, cfg, layers, inputs, data_shape)
    finally:
        walk.depth -= 1


def _sequential(
    walk: _Walk,
    cfg: dict[str, Any],
    layers: list[Any],
    inputs: list[Shape] | None,
    data_shape: tuple[int, ...] | None,
) -> list[Shape]:
    """Keras's order: an InputLayer, else the first layer's declared input, else the config's
    build_input_shape, else (as the worker builds it) the data's example shape."""
    current, names = inputs, set()
    for i, layer in enumerate(layers):
        if not isinstance(layer, dict):
            raise CannotSize("a layer must be a JSON object")
        config = _config(layer)
        name = config.get("name")
        if isinstance(name, str) and name in names:
            raise CannotSize(f"two layers are named {name[:80]!r}")
        names.add(name)
        is_input = layer.get("class_name") == "InputLayer"
        if current is None:
            declared = _declared_input(config) if i == 0 else None
            if declared is None and cfg.get("build_input_shape") is not None:
                declared = _shape(cfg["build_input_shape"], "build_input_shape")[1:]
            if declared is None and data_shape is None:
                raise CannotSize("the model declares no input shape")
            current = [_fill(declared, data_shape) if declared is not None else data_shape or ()]
            walk.activations += prod([d or 1 for d in current[0]]) or 0
        if not is_input:
            current = _call(walk, layer, current)
    if current is None:
        raise CannotSize("the model has no layers")
    return current


def _functional(
    walk: _Walk,
    cfg: dict[str, Any],
    layers: list[Any],
    inputs: list[Shape] | None,
    data_shape: tuple[int, ...] | None,
) -> list[Shape]:
    """Every layer's inbound nodes in turn, resolving each argument's `keras_history`
    [layer, node, tensor] against the tensors made so far (a call whose arguments are not
    all made yet waits until they are)."""
    by_name = {}
    for layer in layers:
        if not isinstance(layer, dict) or not isinstance(layer.get("name"), str):
            raise CannotSize("a functional model's layers must each have a name")
        if layer["name"] in by_name:
            raise CannotSize(f"two layers are named {layer['name'][:80]!r}")
        by_name[layer["name"]] = layer
    input_names = [ref[0] for ref in _refs(cfg.get("input_layers"))]
    if inputs is not None and len(inputs) != len(input_names):
        raise CannotSize(f"a nested model takes {len(input_names)} inputs, got {len(inputs)}")
    made: dict[tuple[str, int], list[Shape]] = {}
    for i, name in enumerate(input_names):
        layer = by_name.get(name)
        if layer is None or layer.get("class_name") != "InputLayer":
            raise CannotSize(f"input {str(name)[:80]!r} is not an InputLayer of the model")
        declared = _declared_input(_config(layer)) or ()
        shape = inputs[i] if inputs is not None else _fill(declared, data_shape)
        if inputs is None and len(input_names) > 1:
            shape = declared
        made[(name, 0)] = [shape]
        walk.activations += prod([d or 1 for d in shape]) or 0
    pending: deque[tuple[dict[str, Any], int, Any]] = deque(
        (layer, i, node)
        for layer in layers
        if layer.get("class_name") != "InputLayer"
        for i, node in enumerate(_nodes(layer))
    )
    if len(pending) > MAX_LAYERS:
        raise CannotSize(f"the model has more than {MAX_LAYERS} layer calls")
    waiting: dict[tuple[str, int], list[tuple[dict[str, Any], int, Any]]] = {}
    while pending:
        layer, index, node = pending.popleft()
        args = _node_inputs(node, made)
        if isinstance(args, tuple):  # waits for that tensor (linear: each call waits once)
            waiting.setdefault(args, []).append((layer, index, node))
            continue
        made[(layer["name"], index)] = _call(walk, layer, args, node)
        pending.extend(waiting.pop((layer["name"], index), []))
    if waiting:
        raise CannotSize("the model's layers refer to tensors no layer makes")
    outputs = []
    for name, node_index, tensor_index in _refs(cfg.get("output_layers")):
        tensors = made.get((name, node_index))
        if tensors is None or tensor_index >= len(tensors):
            raise CannotSize(f"output {str(name)[:80]!r} is not made by the model")
        outputs.append(tensors[tensor_index])
    return outputs


def _refs(value: Any) -> list[tuple[str, int, int]]:
    """`["x", 0, 0]` or `[["x", 0, 0], ...]` as (layer, node, tensor) triples."""
    if not isinstance(value, list):
        raise CannotSize("input_layers and output_layers must be lists")
    items = [value] if value and isinstance(value[0], str) else value
    out = []
    for item in items:
        if not (
            isinstance(item, list)
            and len(item) >= 3
            and isinstance(item[0], str)
            and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in item[1:3])
        ):
            raise CannotSize(f"bad layer reference {str(item)[:80]}")
        out.append((item[0], item[1], item[2]))
    return out


def _nodes(layer: dict[str, Any]) -> list[Any]:
    nodes = layer.get("inbound_nodes", [])
    if not isinstance(nodes, list):
        raise CannotSize("inbound_nodes must be a list")
    return nodes


def _node_inputs(
    node: Any, made: dict[tuple[str, int], list[Shape]]
) -> list[Shape] | tuple[str, int]:
    """The shapes of the tensors a call takes (its args, Keras 3's format, or Keras 2's list
    of [layer, node, tensor, kwargs]); while one is not made yet, its (layer, node).
    A layer's n-th inbound node makes its tensors of node index n, as in Keras."""
    if isinstance(node, dict):
        refs = list(_histories(node.get("args", [])))
    elif isinstance(node, list):
        refs = _refs([item[:3] if isinstance(item, list) else item for item in node])
    else:
        raise CannotSize("an inbound node must be an object or a list")
    shapes = []
    for name, node_index, tensor_index in refs:
        tensors = made.get((name, node_index))
        if tensors is None:
            return (name, node_index)
        if tensor_index >= len(tensors):
            raise CannotSize(f"layer {name[:80]!r} has no output {tensor_index}")
        shapes.append(tensors[tensor_index])
    if not shapes:
        raise CannotSize("a layer call takes no tensor")
    return shapes


def _histories(args: Any) -> list[tuple[str, int, int]]:
    """The keras_history of every tensor in a node's args, in order (lists flattened)."""
    out: list[tuple[str, int, int]] = []
    stack = [args]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(reversed(item))
        elif isinstance(item, dict) and item.get("class_name") == "__keras_tensor__":
            history = _config(item).get("keras_history")
            out.extend(_refs([history]))
    return out


def declared_inputs(tree: dict[str, Any]) -> list[Shape | None]:
    """The per-example shape each input of a top-level model declares (None: it declares
    none, so the worker builds it for the data's shape), in Keras's order."""
    cfg = _config(tree)
    layers = cfg.get("layers")
    if not isinstance(layers, list):
        raise CannotSize("a model config must list its layers")
    if tree.get("class_name") == "Sequential":
        first = layers[0] if layers and isinstance(layers[0], dict) else {}
        declared = _declared_input(_config(first))
        if declared is None and cfg.get("build_input_shape") is not None:
            declared = _shape(cfg["build_input_shape"], "build_input_shape")[1:]
        return [declared]
    by_name = {layer.get("name"): layer for layer in layers if isinstance(layer, dict)}
    names = [ref[0] for ref in _refs(cfg.get("input_layers"))]
    return [_declared_input(_config(by_name.get(name) or {})) for name in names]


def output_shapes(tree: dict[str, Any], data_shape: tuple[int, ...]) -> list[Shape]:
    """The per-example shape of each output of the model built for `data_shape` (its
    declared input's None dimensions filled from the data, as the worker builds it)."""
    return _call_model(_Walk(), tree, None, data_shape)
