"""Study spec files, read on the client before sending: YAML or JSON, dotted overrides, and
`task.model.config_file` inlined so that a Keras `model.to_json()` can live in its own file."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from service.client.errors import InputFileError

#: The API's limit on a JSON body (service.app.JSON_BODY_LIMIT): a larger spec file would be
#: refused anyway, so it is not read whole first.
MAX_SPEC_FILE_BYTES = 4 * 1024 * 1024
#: Nesting deeper than this is no study spec (one is under 10 levels, plugin_args aside).
MAX_SPEC_DEPTH = 100


def load_spec(path: str | Path, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A spec dict from a YAML or JSON file, ready for `Client.submit`.

    Client-side conveniences, resolved here before sending: `task.model.config_file`
    (a path relative to the spec file) is read into `task.model.config`, so a Keras
    `model.to_json()` can live in its own file; `overrides` set dotted keys
    (`{"task.dataset": "abc123"}`).
    """
    path = Path(path)
    text = read_local_text(path, MAX_SPEC_FILE_BYTES, "spec file")
    spec = parse_spec_text(text, json_only=path.suffix.lower() == ".json", where=str(path))
    for key, value in (overrides or {}).items():
        set_dotted(spec, key, value)
    _inline_model_file(spec, path.parent)
    return spec


def parse_spec_text(text: str, *, json_only: bool = False, where: str = "spec") -> dict[str, Any]:
    """Parse JSON (or YAML, a superset) into a mapping; InputFileError says where it broke.

    YAML anchors and aliases are refused: a few hundred bytes of nested aliases
    (`&a [*a, *a, ...]`) expand to gigabytes once sent as JSON, and a spec never needs them.
    """
    import yaml

    if len(text) > MAX_SPEC_FILE_BYTES:
        raise InputFileError(f"{where} is larger than {MAX_SPEC_FILE_BYTES} characters")
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: ~10x faster
    try:
        if json_only:
            data = json.loads(text)
        else:
            if "&" in text or "*" in text:  # no anchor or alias can be written without them
                _refuse_aliases(text, where, loader)
            data = yaml.load(text, Loader=loader)
    except (ValueError, yaml.YAMLError) as exc:
        kind = "JSON" if json_only else "YAML"
        raise InputFileError(f"{where} is not valid {kind}: {exc}") from None
    except RecursionError:
        raise InputFileError(f"{where} is nested too deeply to be a study spec") from None
    if not isinstance(data, dict):
        kind = type(data).__name__
        raise InputFileError(f"{where} must hold a mapping (a study spec), not {kind}")
    return data


def _refuse_aliases(text: str, where: str, loader: Any) -> None:
    import yaml

    depth = 0
    for event in yaml.parse(text, Loader=loader):
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            line = event.start_mark.line + 1
            raise InputFileError(
                f"{where}, line {line}: YAML anchors and aliases (&name, *name) are not "
                "allowed in a study spec (they can expand a small file without bound); "
                "write the values out"
            )
        depth += isinstance(event, yaml.CollectionStartEvent)
        depth -= isinstance(event, yaml.CollectionEndEvent)
        if depth > MAX_SPEC_DEPTH:  # the pure-Python parser slows quadratically with depth
            raise InputFileError(f"{where} is nested too deeply to be a study spec")


def read_local_text(path: Path, limit: int, what: str) -> str:
    """The UTF-8 text of a regular file of at most `limit` bytes, or InputFileError.

    Why: a device or FIFO (`/dev/zero`, a pipe) never ends and a huge file fills memory;
    both must be a clear error (exit 2 in the CLI), not a hang or a MemoryError.
    """
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; no effect on a regular file.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise InputFileError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as file:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise InputFileError(f"cannot read {what} {path}: not a regular file")
        try:
            data = file.read(limit + 1)
        except OSError as exc:
            raise InputFileError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise InputFileError(f"{what} {path} is larger than {limit} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputFileError(f"{what} {path} is not UTF-8 text: {exc.reason}") from None


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
    """Read `task.model.config_file` (relative to the spec's folder; any path the user can
    read is fine: it is their file, sent to the server they chose) into `config`."""
    from search.spec import MAX_MODEL_JSON_CHARS

    model = (spec.get("task") or {}).get("model")
    if not isinstance(model, dict) or "config_file" not in model:
        return
    model_path = base / str(model.pop("config_file"))
    # UTF-8 takes at most 4 bytes a character: read no more than the longest config could be.
    text = read_local_text(model_path, 4 * MAX_MODEL_JSON_CHARS, "model file")
    if len(text) > MAX_MODEL_JSON_CHARS:
        raise InputFileError(
            f"model file {model_path} is longer than {MAX_MODEL_JSON_CHARS} characters, "
            "the most the API accepts as task.model.config"
        )
    model["config"] = text
