"""Study spec files, read on the client before sending: YAML or JSON, dotted overrides, and
`task.model.config_file` inlined so that a Keras `model.to_json()` can live in its own file."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from service.client.errors import InputFileError


def load_spec(path: str | Path, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A spec dict from a YAML or JSON file, ready for `Client.submit`.

    Client-side conveniences, resolved here before sending: `task.model.config_file`
    (a path relative to the spec file) is read into `task.model.config`, so a Keras
    `model.to_json()` can live in its own file; `overrides` set dotted keys
    (`{"task.dataset": "abc123"}`).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    spec = parse_spec_text(text, json_only=path.suffix.lower() == ".json", where=str(path))
    for key, value in (overrides or {}).items():
        set_dotted(spec, key, value)
    _inline_model_file(spec, path.parent)
    return spec


def parse_spec_text(text: str, *, json_only: bool = False, where: str = "spec") -> dict[str, Any]:
    """Parse JSON (or YAML, a superset) into a mapping; InputFileError says where it broke."""
    import yaml

    try:
        data = json.loads(text) if json_only else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        kind = "JSON" if json_only else "YAML"
        raise InputFileError(f"{where} is not valid {kind}: {exc}") from None
    if not isinstance(data, dict):
        kind = type(data).__name__
        raise InputFileError(f"{where} must hold a mapping (a study spec), not {kind}")
    return data


def set_dotted(spec: dict[str, Any], key: str, value: Any) -> None:
    """Set `a.b.c` in nested dicts, creating the intermediate ones."""
    parts = key.split(".")
    if not all(parts):
        raise InputFileError(f"invalid key {key!r}")
    node = spec
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise InputFileError(f"cannot set {key!r}: {part!r} is not a mapping")
        node = child
    node[parts[-1]] = value


def _inline_model_file(spec: dict[str, Any], base: Path) -> None:
    model = (spec.get("task") or {}).get("model")
    if not isinstance(model, dict) or "config_file" not in model:
        return
    model_path = base / str(model.pop("config_file"))
    try:
        model["config"] = model_path.read_text(encoding="utf-8")
    except OSError as exc:
        why = exc.strerror or exc
        raise InputFileError(f"cannot read model file {model_path}: {why}") from None
