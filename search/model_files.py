"""Static checks of a `.keras` model file (Keras 3's zip: config.json, metadata.json, the
weights), in plain Python: the API refuses a file that carries code, foreign classes, a zip
bomb or more weights than the budget, without importing Keras. Workers then load it in
Keras safe mode, uncompiled (`search.training.models`).

Zip-bomb safe: the archive's directory is read first and every member's declared size is
checked before a byte of it is inflated; config.json is read through a capped stream, so a
member that lies about its size cannot inflate past the cap either.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from search.errors import ModelError
from search.keras_json import model_json_problems
from search.keras_shapes import CannotSize, model_config_size
from search.model_size import DEFAULT_MAX_PARAMS, format_count

#: Largest config.json read (a model's architecture, not its weights).
MAX_CONFIG_BYTES = 8 * 1024 * 1024
#: Most members a .keras archive may have (config, metadata, weights, a few assets).
MAX_MEMBERS = 1000
#: The largest ratio of a member's declared size to its compressed size: beyond it, a bomb.
MAX_COMPRESSION_RATIO = 200
#: Members besides `assets/...` that a .keras file may hold.
KNOWN_MEMBERS = frozenset({"config.json", "metadata.json", "model.weights.h5", "model.weights.npz"})
WEIGHT_MEMBERS = ("model.weights.h5", "model.weights.npz")
#: Bytes per weight as Keras stores them by default (float32): the budget's estimate.
BYTES_PER_PARAM = 4


@dataclass(frozen=True)
class KerasFileInfo:
    """What the API records of an accepted .keras file."""

    class_name: str
    keras_version: str | None
    weights_bytes: int
    est_params: int
    input_shape: list[int | None] | None
    size_bytes: int


def check_keras_file(
    source: bytes | str | Path,
    *,
    max_uncompressed: int,
    max_params: int = DEFAULT_MAX_PARAMS,
) -> KerasFileInfo:
    """Every check of a `.keras` file; a ModelError lists every problem found."""
    with _zip(source) as (archive, size):
        infos = archive.infolist()
        _check_directory(infos, max_uncompressed)
        config = _read_json(archive, "config.json", MAX_CONFIG_BYTES)
        metadata = _read_json(archive, "metadata.json", 64 * 1024, required=False)
        weights = sum(i.file_size for i in infos if i.filename in WEIGHT_MEMBERS)
    if not isinstance(config, dict):
        raise ModelError("config.json must hold a Keras model's config (a JSON object)")
    checked = {k: v for k, v in config.items() if k != "compile_config"}  # never loaded
    problems = model_json_problems(json.dumps(checked))
    problems += budget_problems(checked, weights, max_params)
    if problems:
        raise ModelError("; ".join(problems[:20]))
    version = metadata.get("keras_version") if isinstance(metadata, dict) else None
    return KerasFileInfo(
        class_name=str(config.get("class_name")),
        keras_version=str(version) if version is not None else None,
        weights_bytes=weights,
        est_params=estimated_params(checked, weights),
        input_shape=declared_input_shape(config),
        size_bytes=size,
    )


def budget_problems(config: dict[str, Any], weights_bytes: int, max_params: int) -> list[str]:
    """Why the model is over the parameter budget (empty when it is not).

    The count is the larger of the file's declared weights (float32: 4 bytes each; HDF5's
    own overhead only makes it larger) and, where the config can be walked statically on its
    own declared input (search.keras_shapes), the weights its architecture builds: a file
    may ship few weights and still describe a huge model when `weights: fresh` rebuilds it.
    """
    estimate = estimated_params(config, weights_bytes)
    if estimate > max_params:
        return [
            f"the model has about {format_count(estimate)} weights ({weights_bytes:,} bytes "
            f"of weights); at most {max_params:,} are allowed"
        ]
    return []


def estimated_params(config: dict[str, Any], weights_bytes: int) -> int:
    """The larger of the declared weights' count and the architecture's static count."""
    return max(weights_bytes // BYTES_PER_PARAM, static_params(config) or 0)


def static_params(config: dict[str, Any]) -> int | None:
    """The weights the config's architecture builds, or None when it cannot be walked
    (a layer without a static rule, an input it does not declare)."""
    try:
        return model_config_size(config, None).params
    except CannotSize:
        return None


def declared_input_shape(config: dict[str, Any]) -> list[int | None] | None:
    """The per-example input shape the model declares (its InputLayer's batch shape without
    the batch axis), or None when it declares none or several."""
    layers = (config.get("config") or {}).get("layers")
    if not isinstance(layers, list):
        return None
    shapes = [
        (layer.get("config") or {}).get("batch_shape")
        for layer in layers
        if isinstance(layer, dict) and layer.get("class_name") == "InputLayer"
    ]
    if len(shapes) != 1 or not isinstance(shapes[0], list) or not shapes[0]:
        return None
    dims = shapes[0][1:]
    if not all(d is None or (isinstance(d, int) and d >= 0) for d in dims):
        return None
    return list(dims)


def read_config(source: bytes | str | Path) -> dict[str, Any]:
    """The config.json of an accepted .keras file (read capped, as at upload), without its
    compile_config; a ModelError when it cannot be read."""
    with _zip(source) as (archive, _size):
        config = _read_json(archive, "config.json", MAX_CONFIG_BYTES)
    if not isinstance(config, dict):
        raise ModelError("config.json must hold a Keras model's config (a JSON object)")
    return {k: v for k, v in config.items() if k != "compile_config"}


@contextmanager
def _zip(source: bytes | str | Path) -> Iterator[tuple[zipfile.ZipFile, int]]:
    """The archive (and the file's size), or a ModelError for anything but a zip."""
    stream: IO[bytes]
    if isinstance(source, bytes):
        stream, size = io.BytesIO(source), len(source)
    else:
        stream, size = open(source, "rb"), Path(source).stat().st_size  # noqa: SIM115
    with stream:
        if stream.read(4) != b"PK\x03\x04":
            raise ModelError("not a .keras file: expected the zip archive model.save() writes")
        stream.seek(0)
        try:
            with zipfile.ZipFile(stream) as archive:
                yield archive, size
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as exc:
            raise ModelError(f"not a valid .keras file (corrupt zip): {exc}") from None


def _check_directory(infos: list[zipfile.ZipInfo], max_uncompressed: int) -> None:
    """Names, counts and declared sizes, before anything is inflated."""
    if len(infos) > MAX_MEMBERS:
        raise ModelError(f"the archive has {len(infos)} members (at most {MAX_MEMBERS})")
    names = {i.filename for i in infos}
    if len(names) < len(infos):  # which copy a reader takes is the reader's choice: none
        twice = next(n for n, k in Counter(i.filename for i in infos).items() if k > 1)
        raise ModelError(f"member {twice[:80]!r} appears more than once in the .keras file")
    if "config.json" not in names:
        raise ModelError("not a .keras file: config.json is missing (save with model.save())")
    unknown = sorted(n for n in names if n not in KNOWN_MEMBERS and not _is_asset(n))
    if unknown:
        shown = ", ".join(repr(n[:80]) for n in unknown[:5])
        raise ModelError(f"unexpected member(s) in the .keras file: {shown}")
    total = sum(i.file_size for i in infos)
    if total > max_uncompressed:
        raise ModelError(f"the archive inflates to {total:,} bytes (at most {max_uncompressed:,})")
    for info in infos:
        if info.file_size > MAX_COMPRESSION_RATIO * max(info.compress_size, 1024):
            raise ModelError(
                f"member {info.filename[:80]!r} inflates {info.file_size:,} bytes from "
                f"{info.compress_size:,}: refused as a zip bomb"
            )


def _is_asset(name: str) -> bool:
    parts = name.split("/")
    return parts[0] == "assets" and ".." not in parts and not name.startswith("/")


def _read_json(archive: zipfile.ZipFile, name: str, cap: int, *, required: bool = True) -> Any:
    """A member parsed as JSON, at most `cap` bytes inflated whatever it declares."""
    try:
        info = archive.getinfo(name)
    except KeyError:
        if required:
            raise ModelError(f"{name} is missing") from None
        return None
    if info.file_size > cap:
        raise ModelError(f"{name} is {info.file_size:,} bytes (at most {cap:,})")
    try:
        with archive.open(info) as member:
            data = member.read(cap + 1)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as exc:
        raise ModelError(f"{name} cannot be read: {exc}") from None
    if len(data) > cap:
        raise ModelError(f"{name} inflates past {cap:,} bytes")
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise ModelError(f"{name} is not valid JSON: {str(exc)[:200]}") from None


__all__ = [
    "DEFAULT_MAX_PARAMS",
    "KerasFileInfo",
    "budget_problems",
    "check_keras_file",
    "declared_input_shape",
    "estimated_params",
    "read_config",
]
