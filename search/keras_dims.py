"""Shapes and config values of Keras layers, read defensively: the helpers every static
layer rule (search.keras_layers) shares. A shape is one example's, without the batch axis,
None where unknown; anything that cannot be read raises `CannotSize`."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

Shape = tuple[int | None, ...]
#: A rule: (layer config, input shapes) -> (output shapes, weights).
Rule = Callable[[dict[str, Any], list[Shape]], tuple[list[Shape], int]]


class CannotSize(ValueError):
    """The layer cannot be sized statically (unknown class, unknown dimension, bad config)."""


class NoSizingRule(CannotSize):
    """A class (layer or keras.ops call) without a rule here: the model itself may be fine,
    and a `.keras` file of it can be sized by its weights instead."""


def prod(dims: Sequence[int | None]) -> int | None:
    """Product of the dimensions, None when one is unknown."""
    if any(d is None for d in dims):
        return None
    return math.prod(d for d in dims if d is not None)


def as_int(value: Any, what: str, least: int = 0) -> int:
    """A config value that must be a count of at least `least` (a JSON bool is not one)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        wanted = "a non-negative integer" if least == 0 else f"an integer of at least {least}"
        raise CannotSize(f"{what} must be {wanted}, got {str(value)[:40]}")
    return value


def as_size(value: Any, what: str) -> int:
    """A width Keras cannot build at zero: units, filters, a vocabulary, a kernel side."""
    return as_int(value, what, least=1)


def as_ints(value: Any, n: int, what: str, least: int = 0) -> list[int]:
    """An int or a list of n ints (Keras's `kernel_size=3` or `(3, 3)`)."""
    if isinstance(value, list | tuple):
        if len(value) != n:
            raise CannotSize(f"{what} must have {n} values, got {len(value)}")
        return [as_int(v, what, least) for v in value]
    return [as_int(value, what, least)] * n


def known(dim: int | None, what: str) -> int:
    if dim is None:
        raise CannotSize(f"{what} is unknown (None), so its weights cannot be counted")
    return dim


def one_input(inputs: list[Shape], min_rank: int = 1) -> Shape:
    if len(inputs) != 1:
        raise CannotSize(f"expects one input, got {len(inputs)}")
    if len(inputs[0]) < min_rank:
        raise CannotSize(f"expects inputs of rank >= {min_rank + 1}, got {inputs[0]}")
    return inputs[0]


def channels_of(
    cfg: dict[str, Any], shape: Shape, rank: int
) -> tuple[list[int | None], int | None]:
    """(spatial dims, channels) of an input to a `rank`-d conv or pool layer."""
    if len(shape) != rank + 1:
        raise CannotSize(f"expects inputs of rank {rank + 2}, got {len(shape) + 1}")
    if cfg.get("data_format") == "channels_first":
        return list(shape[1:]), shape[0]
    return list(shape[:-1]), shape[-1]


def placed(cfg: dict[str, Any], spatial: Sequence[int | None], channels: int | None) -> Shape:
    if cfg.get("data_format") == "channels_first":
        return (channels, *spatial)
    return (*spatial, channels)


def conv_len(n: int | None, k: int, stride: int, dilation: int, padding: str) -> int | None:
    """Keras's compute_conv_output_shape for one axis."""
    if n is None:
        return None
    if padding == "valid":
        length = (n - dilation * (k - 1) - 1) // stride + 1
    else:  # same, causal
        length = (n - 1) // stride + 1
    if length <= 0:
        raise CannotSize(f"the input ({n}) is too small for a window of {k}")
    return length


def window(cfg: dict[str, Any], shape: Shape, rank: int, key: str) -> tuple[Shape, int | None]:
    """(output spatial shape and input channels) of a conv or pool window over `shape`."""
    spatial, channels = channels_of(cfg, shape, rank)
    kernel = as_ints(cfg.get(key), rank, key, least=1)
    strides = cfg.get("strides")  # None: a pool's strides are its size (0 is no default)
    strides = as_ints(
        strides if strides is not None else (1 if key == "kernel_size" else kernel),
        rank,
        "strides",
    )
    dilation = as_ints(cfg.get("dilation_rate", 1), rank, "dilation_rate")
    padding = str(cfg.get("padding", "valid")).lower()
    if min(strides, default=1) < 1 or min(dilation, default=1) < 1:
        raise CannotSize("strides and dilation_rate must be at least 1")
    out = tuple(
        conv_len(n, k, s, d, padding)
        for n, k, s, d in zip(spatial, kernel, strides, dilation, strict=True)
    )
    return out, channels


def axes_of(cfg: dict[str, Any], shape: Shape) -> list[int]:
    """`axis` (int or list, counting the batch axis as 0) as indices into `shape`."""
    axis = cfg.get("axis", -1)
    out = []
    for a in axis if isinstance(axis, list | tuple) else [axis]:
        if isinstance(a, bool) or not isinstance(a, int) or not -len(shape) <= a <= len(shape):
            raise CannotSize(f"axis {str(a)[:20]} is outside the input's rank")
        if a == 0:
            raise CannotSize("axis 0 is the batch axis")
        out.append(a - 1 if a > 0 else len(shape) + a)
    return out
