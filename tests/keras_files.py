"""`.keras` archives written with zipfile in the layout `model.save()` uses (config.json,
metadata.json, model.weights.h5), for tests that need no Keras to make one."""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any


def _layer(cls: str, config: dict[str, Any], module: str = "keras.layers") -> dict[str, Any]:
    return {"module": module, "class_name": cls, "config": config, "registered_name": None}


def unique_names(layers: tuple[Any, ...] | list[Any]) -> list[Any]:
    """The layers, a repeated layer name suffixed with its place (Keras refuses a model
    with two layers of one name, and so does the API)."""
    seen: set[Any] = set()
    out = []
    for i, layer in enumerate(layers):
        config = layer.get("config") if isinstance(layer, dict) else None
        name = config.get("name") if isinstance(config, dict) else None
        if isinstance(name, str) and name in seen:
            layer = {**layer, "config": {**config, "name": f"{name}_{i}"}}
        seen.add(name)
        out.append(layer)
    return out


def sequential(*layers: dict[str, Any]) -> dict[str, Any]:
    inputs = _layer("InputLayer", {"batch_shape": [None, 8], "dtype": "float32"})
    return {
        "module": "keras",
        "class_name": "Sequential",
        "config": {"name": "sequential", "layers": unique_names([inputs, *layers])},
        "registered_name": None,
        "compile_config": {"loss": {"module": "my_losses", "class_name": "MyLoss"}},
    }


DENSE = _layer("Dense", {"units": 3, "activation": "softmax"})


def archive(
    config: Any, members: dict[str, bytes] | None = None, *, compression: int = zipfile.ZIP_STORED
) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as z:
        z.writestr("metadata.json", json.dumps({"keras_version": "3.15.1"}))
        z.writestr("config.json", config if isinstance(config, bytes) else json.dumps(config))
        members = {"model.weights.h5": b"\0" * 4096, **(members or {})}
        for name, data in members.items():
            z.writestr(name, data)
    return buffer.getvalue()
