"""Static checks of a user model given as `model.to_json()`, in plain Python (no Keras import).

Why here: the API must refuse a model carrying code or foreign classes before a worker loads
it (in Keras safe mode) at the study's first trial, and the API never imports Keras.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

_MODEL_CLASSES = frozenset({"Functional", "Sequential", "Model"})
_CODE_CLASSES = frozenset({"Lambda", "__lambda__"})
#: Keras classes refused whatever Keras's safe mode does: each loads a file or runs a
#: function given in its config (TFSMLayer a SavedModel, JaxLayer/FlaxLayer a call_fn).
_REFUSED_CLASSES = {
    "TFSMLayer": "it loads a TensorFlow SavedModel from a path",
    "JaxLayer": "it wraps a JAX function",
    "FlaxLayer": "it wraps a Flax module",
    "function": "function objects are not allowed: they name code to run",
}
#: The Keras namespaces a model's objects may come from: layers, models, the ops a functional
#: model calls, and what their configs hold (initializers, regularizers, constraints, dtype
#: policies, seeds). Anything else under `keras.` (file utilities, saving) is no model part.
_MODEL_NAMESPACES = (
    "layers",
    "models",
    "initializers",
    "regularizers",
    "constraints",
    "activations",
    "dtype_policies",
    "mixed_precision",
    "random",
    "ops",  # keras.ops calls in a functional model (keras.src.ops.numpy.Add, ...)
    "engine",  # models saved by Keras 2's tf.keras
)
_ALLOWED_MODULES = tuple(
    f"{root}.{space}" for root in ("keras", "keras.src") for space in _MODEL_NAMESPACES
)
_KERAS_INTERNAL = frozenset(
    {
        "__keras_tensor__",
        "__tensor__",
        "__numpy__",
        "__tuple__",
        "__slice__",
        "__ellipsis__",
        "__bytes__",
        "__typespec__",
    }
)


def model_json_problems(config: str) -> list[str]:
    """Why this `model.to_json()` text cannot be accepted (empty when it can)."""
    try:
        tree = json.loads(config)
    except (ValueError, RecursionError) as exc:
        return [f"not valid JSON: {str(exc)[:200]}"]
    if not isinstance(tree, dict) or tree.get("class_name") not in _MODEL_CLASSES:
        return ["must be a Keras model's to_json() (class_name Functional, Sequential or Model)"]
    # a compiled model's to_json() holds its compile_config (optimizer, loss, metrics): never
    # loaded (the worker compiles its own), so never judged, as in a model file
    tree = {k: v for k, v in tree.items() if k != "compile_config"}
    problems: list[str] = []
    for node in _serialized_objects(tree):
        problem = _object_problem(node)
        if problem and problem not in problems:
            problems.append(problem)
    return problems


def _serialized_objects(tree: Any) -> Iterator[dict[str, Any]]:
    """Every dict with a `class_name`, iteratively."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if "class_name" in node:
                yield node
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def _object_problem(node: dict[str, Any]) -> str | None:
    name, module = node.get("class_name"), node.get("module")
    registered = node.get("registered_name")
    if not isinstance(name, str):
        return "class_name must be a string"
    if name in _CODE_CLASSES:
        return "Lambda layers are not allowed: they carry Python code; use built-in Keras layers"
    if name in _REFUSED_CLASSES:
        return f"{_named(node)} is not allowed: {_REFUSED_CLASSES[name]}"
    cfg = node.get("config")
    if isinstance(cfg, dict) and isinstance(cfg.get("vocabulary"), str):  # a path, read at build
        return (
            f"{_named(node)} is not allowed with a vocabulary file "
            f"({cfg['vocabulary'][:80]!r}): give the vocabulary as a list"
        )
    if registered is not None and registered != name:
        return f"{_named(node)}: custom registered class {str(registered)[:80]!r} is not allowed"
    if module is not None and not _allowed_module(module):
        return (
            f"class {name[:80]!r} comes from module {str(module)[:80]!r}:"
            " only Keras's own layers, models and their parts are allowed"
        )
    if name.startswith("__") and name not in _KERAS_INTERNAL:
        return f"unknown special class {name[:80]!r}"
    if not name.isidentifier():
        return f"unknown class {name[:80]!r}"
    return None


def _allowed_module(module: Any) -> bool:
    """`keras` itself (its top-level classes: Sequential, DTypePolicy) or a model namespace."""
    return isinstance(module, str) and (
        module == "keras"
        or any(module == ok or module.startswith(f"{ok}.") for ok in _ALLOWED_MODULES)
    )


def _named(node: dict[str, Any]) -> str:
    """`layer 'name' (Class)` for a message; a nameless object by its class only."""
    cfg = node.get("config")
    name = cfg.get("name") if isinstance(cfg, dict) else None
    cls = str(node.get("class_name"))[:80]
    return f"layer {str(name)[:80]!r} ({cls})" if isinstance(name, str) else f"class {cls!r}"
