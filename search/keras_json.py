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
    if module is not None and not (
        isinstance(module, str) and (module == "keras" or module.startswith("keras."))
    ):
        return (
            f"class {name[:80]!r} comes from module {str(module)[:80]!r}:"
            " only Keras's own classes are allowed"
        )
    if isinstance(registered, str) and ">" in registered:
        return f"custom registered class {registered[:80]!r} is not allowed"
    if name.startswith("__") and name not in _KERAS_INTERNAL:
        return f"unknown special class {name[:80]!r}"
    if not name.isidentifier():
        return f"unknown class {name[:80]!r}"
    return None
