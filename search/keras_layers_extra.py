"""Sizing rules for the layers users put around the core ones: normalization variants,
augmentation and resizing, attention (search.keras_layers has the core, and TimeDistributed,
which applies a core rule).

Why: a `keras_json` model with one layer lrsearch cannot size is refused at submit; a user
walkthrough hit MultiHeadAttention, TimeDistributed, RandomFlip, GroupNormalization and an
adapted Normalization. Each rule mirrors the layer's Keras 3 `build` and output shape; a test
compares every count with Keras's own `count_params()`.
"""

from __future__ import annotations

from typing import Any

from search.keras_dims import CannotSize, Rule, Shape, as_size, axes_of, known, one_input, prod


def _normalization(cfg: dict[str, Any], inputs: list[Shape]) -> tuple[list[Shape], int]:
    """Given mean and variance: constants, no weights; adapted: mean, variance and a count."""
    shape = one_input(inputs)
    if cfg.get("mean") is not None and cfg.get("variance") is not None:
        return [shape], 0
    width = prod([shape[i] for i in axes_of(cfg, shape)])
    return [shape], 2 * known(width, "the normalised axis") + 1


def _group_norm(cfg: dict[str, Any], inputs: list[Shape]) -> tuple[list[Shape], int]:
    shape = one_input(inputs)
    [axis] = axes_of({"axis": cfg.get("axis", -1)}, shape)
    channels = known(shape[axis], "the channel axis")
    groups = cfg.get("groups", 32)
    if groups == -1:
        groups = channels
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise CannotSize(f"groups must be a positive integer, got {str(groups)[:20]}")
    if channels % groups:
        raise CannotSize(f"{channels} channels do not split into {groups} groups")
    per_channel = int(bool(cfg.get("center", True))) + int(bool(cfg.get("scale", True)))
    return [shape], channels * per_channel


def _rms_norm(cfg: dict[str, Any], inputs: list[Shape]) -> tuple[list[Shape], int]:
    shape = one_input(inputs)
    return [shape], known(prod([shape[i] for i in axes_of(cfg, shape)]), "the normalised axis")


def _image_size(cfg: dict[str, Any], inputs: list[Shape]) -> tuple[list[Shape], int]:
    """Resizing, CenterCrop, RandomCrop: images (height, width, channels) to the config's."""
    shape = one_input(inputs)
    if len(shape) != 3 or cfg.get("data_format") == "channels_first":
        raise CannotSize(f"expects channels-last images (height, width, channels), got {shape}")
    height, width = as_size(cfg.get("height"), "height"), as_size(cfg.get("width"), "width")
    return [(height, width, shape[2])], 0


def _attention(cfg: dict[str, Any], inputs: list[Shape]) -> tuple[list[Shape], int]:
    """MultiHeadAttention(query, value[, key]): query, key and value projections per head,
    then the output projection to `output_shape` (default: the query's last axis)."""
    if not 1 <= len(inputs) <= 3 or cfg.get("use_gate"):
        raise CannotSize("expects query, value and an optional key, without a gate")
    query = inputs[0]
    value = inputs[1] if len(inputs) > 1 else query
    key = inputs[2] if len(inputs) > 2 else value
    heads = as_size(cfg.get("num_heads"), "num_heads")
    key_dim = as_size(cfg.get("key_dim"), "key_dim")
    value_dim = as_size(cfg.get("value_dim") or key_dim, "value_dim")
    out = cfg.get("output_shape")
    out = out[0] if isinstance(out, list) and len(out) == 1 else out
    out_dim = known(query[-1], "the query's last axis") if out is None else as_size(out, "output")
    bias = int(bool(cfg.get("use_bias", True)))
    d_query, d_key, d_value = (known(s[-1], "an input's last axis") for s in (query, key, value))
    projections = (d_query + bias + d_key + bias) * heads * key_dim
    projections += (d_value + bias) * heads * value_dim
    return [(*query[:-1], out_dim)], projections + heads * value_dim * out_dim + bias * out_dim


_AUGMENTATION = (  # noqa: SIM905 - same shape, no weights
    "RandomFlip RandomRotation RandomZoom RandomTranslation RandomContrast RandomBrightness"
).split()

EXTRA_RULES: dict[str, Rule] = {
    "Normalization": _normalization,
    "GroupNormalization": _group_norm,
    "RMSNormalization": _rms_norm,
    "Resizing": _image_size,
    "CenterCrop": _image_size,
    "RandomCrop": _image_size,
    "MultiHeadAttention": _attention,
    **{name: lambda _cfg, inputs: ([one_input(inputs, 0)], 0) for name in _AUGMENTATION},
}
