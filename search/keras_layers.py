"""Output shapes and weight counts of Keras's built-in layers, from their configs alone.

Why plain Python: the API sizes a user's `keras_json` model at submit (search.keras_shapes)
and never imports Keras. Each rule mirrors the layer's Keras 3 `build` and
`compute_output_shape`; a shape is one example's, without the batch axis, None where
unknown. A class with no rule here cannot be sized, so the model is refused rather than
guessed at (`CannotSize`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

Shape = tuple[int | None, ...]
#: A rule: (layer config, input shapes) -> (output shapes, weights).
Rule = Callable[[dict[str, Any], list[Shape]], tuple[list[Shape], int]]


class CannotSize(ValueError):
    """The layer cannot be sized statically (unknown class, unknown dimension, bad config)."""


def prod(dims: Sequence[int | None]) -> int | None:
    """Product of the dimensions, None when one is unknown."""
    if any(d is None for d in dims):
        return None
    return math.prod(d for d in dims if d is not None)


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise CannotSize(f"{what} must be a non-negative integer, got {str(value)[:40]}")
    return value


def _ints(value: Any, n: int, what: str) -> list[int]:
    """An int or a list of n ints (Keras's `kernel_size=3` or `(3, 3)`)."""
    if isinstance(value, list | tuple):
        if len(value) != n:
            raise CannotSize(f"{what} must have {n} values, got {len(value)}")
        return [_int(v, what) for v in value]
    return [_int(value, what)] * n


def _known(dim: int | None, what: str) -> int:
    if dim is None:
        raise CannotSize(f"{what} is unknown (None), so its weights cannot be counted")
    return dim


def _one(inputs: list[Shape], min_rank: int = 1) -> Shape:
    if len(inputs) != 1:
        raise CannotSize(f"expects one input, got {len(inputs)}")
    if len(inputs[0]) < min_rank:
        raise CannotSize(f"expects inputs of rank >= {min_rank + 1}, got {inputs[0]}")
    return inputs[0]


def _bias(cfg: dict[str, Any], n: int) -> int:
    return n if cfg.get("use_bias", True) else 0


# --- weight layers -------------------------------------------------------------------------


def _dense(cfg: dict[str, Any], inputs: list[Shape]) -> tuple[list[Shape], int]:
    shape = _one(inputs)
    units = _int(cfg.get("units"), "units")
    d = _known(shape[-1], "the input's last dimension")
    return [(*shape[:-1], units)], d * units + _bias(cfg, units)


def _embedding(cfg: dict[str, Any], inputs: list[Shape]) -> tuple[list[Shape], int]:
    shape = _one(inputs, 0)
    n, width = _int(cfg.get("input_dim"), "input_dim"), _int(cfg.get("output_dim"), "output_dim")
    return [(*shape, width)], n * width


def _channels(cfg: dict[str, Any], shape: Shape, rank: int) -> tuple[list[int | None], int | None]:
    """(spatial dims, channels) of an input to a `rank`-d conv or pool layer."""
    if len(shape) != rank + 1:
        raise CannotSize(f"expects inputs of rank {rank + 2}, got {len(shape) + 1}")
    if cfg.get("data_format") == "channels_first":
        return list(shape[1:]), shape[0]
    return list(shape[:-1]), shape[-1]


def _placed(cfg: dict[str, Any], spatial: Sequence[int | None], channels: int | None) -> Shape:
    if cfg.get("data_format") == "channels_first":
        return (channels, *spatial)
    return (*spatial, channels)


def _out_len(n: int | None, k: int, stride: int, dilation: int, padding: str) -> int | None:
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


def _window(cfg: dict[str, Any], shape: Shape, rank: int, key: str) -> tuple[Shape, int | None]:
    """(output spatial shape and input channels) of a conv or pool window over `shape`."""
    spatial, channels = _channels(cfg, shape, rank)
    kernel = _ints(cfg.get(key), rank, key)
    strides = _ints(cfg.get("strides") or (1 if key == "kernel_size" else kernel), rank, "strides")
    dilation = _ints(cfg.get("dilation_rate", 1), rank, "dilation_rate")
    padding = str(cfg.get("padding", "valid")).lower()
    if min(strides, default=1) < 1 or min(dilation, default=1) < 1:
        raise CannotSize("strides and dilation_rate must be at least 1")
    out = tuple(
        _out_len(n, k, s, d, padding)
        for n, k, s, d in zip(spatial, kernel, strides, dilation, strict=True)
    )
    return out, channels


def _conv(rank: int) -> Rule:
    def rule(cfg: dict[str, Any], inputs: list[Shape]) -> tuple[list[Shape], int]:
        out, cin = _window(cfg, _one(inputs), rank, "kernel_size")
        filters, groups = _int(cfg.get("filters"), "filters"), _int(cfg.get("groups", 1), "groups")
        cin = _known(cin, "the input's channels")
        if groups < 1 or cin % groups or filters % groups:
            raise CannotSize(f"groups={groups} must divide the channels and filters")
        kernel = math.prod(_ints(cfg.get("kernel_size"), rank, "kernel_size"))
        weights = kernel * (cin // groups) * filters + _bias(cfg, filters)
        return [_placed(cfg, list(out), filters)], weights

    return rule


def _conv_transpose(rank: int) -> Rule:
    def rule(cfg: dict[str, Any], inputs: list[Shape]) -> tuple[list[Shape], int]:
        spatial, cin = _channels(cfg, _one(inputs), rank)
        kernel = _ints(cfg.get("kernel_size"), rank, "kernel_size")
        strides = _ints(cfg.get("strides", 1), rank, "strides")
        dilation = _ints(cfg.get("dilation_rate", 1), rank, "dilation_rate")
        pads = cfg.get("output_padding")
        extra = None if pads is None else _ints(pads, rank, "output_padding")
        padding = str(cfg.get("padding", "valid")).lower()
        out: list[int | None] = []
        for i, n in enumerate(spatial):
            k = kernel[i] + (kernel[i] - 1) * (dilation[i] - 1)
            if n is None:
                out.append(None)
            elif extra is None:
                out.append(n * strides[i] + (max(k - strides[i], 0) if padding == "valid" else 0))
            else:
                pad = k // 2 if padding == "same" else 0
                out.append((n - 1) * strides[i] + k - 2 * pad + extra[i])
        filters = _int(cfg.get("filters"), "filters")
        cin = _known(cin, "the input's channels")
        weights = math.prod(kernel) * cin * filters + _bias(cfg, filters)
        return [_placed(cfg, out, filters)], weights

    return rule


def _depthwise(rank: int, separable: bool) -> Rule:
    def rule(cfg: dict[str, Any], inputs: list[Shape]) -> tuple[list[Shape], int]:
        out, cin = _window(cfg, _one(inputs), rank, "kernel_size")
        cin = _known(cin, "the input's channels")
        mult = _int(cfg.get("depth_multiplier", 1), "depth_multiplier")
        weights = math.prod(_ints(cfg.get("kernel_size"), rank, "kernel_size")) * cin * mult
        if not separable:
            return [_placed(cfg, list(out), cin * mult)], weights + _bias(cfg, cin * mult)
        filters = _int(cfg.get("filters"), "filters")
        weights += cin * mult * filters + _bias(cfg, filters)
        return [_placed(cfg, list(out), filters)], weights

    return rule


_GATES = {"SimpleRNN": 1, "GRU": 3, "LSTM": 4}


def _recurrent(cfg: dict[str, Any], inputs: list[Shape], kind: str) -> tuple[list[Shape], int]:
    shape = _one(inputs)
    if len(shape) != 2:
        raise CannotSize(f"expects inputs of shape (timesteps, features), got {shape}")
    units = _int(cfg.get("units"), "units")
    d, gates = _known(shape[1], "the input's features"), _GATES[kind]
    biases = gates * units if cfg.get("use_bias", True) else 0
    if kind == "GRU" and cfg.get("reset_after", True) and biases:
        biases *= 2
    weights = gates * (d * units + units * units) + biases
    out: Shape = (shape[0], units) if cfg.get("return_sequences") else (units,)
    states = [(units,)] * (2 if kind == "LSTM" else 1) if cfg.get("return_state") else []
    return [out, *states], weights


def _bidirectional(cfg: dict[str, Any], inputs: list[Shape]) -> tuple[list[Shape], int]:
    forward, backward = cfg.get("layer"), cfg.get("backward_layer") or cfg.get("layer")
    if not (
        isinstance(forward, dict)
        and isinstance(backward, dict)
        and {forward.get("class_name"), backward.get("class_name")} <= set(_GATES)
    ):
        raise CannotSize("Bidirectional must wrap a SimpleRNN, GRU or LSTM layer")
    outs_f, w_f = apply_layer(forward, inputs)
    outs_b, w_b = apply_layer(backward, inputs)
    if len(outs_f) != 1 or len(outs_b) != 1:
        raise CannotSize("Bidirectional with return_state cannot be sized")
    mode = cfg.get("merge_mode", "concat")
    f, b = outs_f[0], outs_b[0]
    if mode is None:
        return [f, b], w_f + w_b
    if mode == "concat":
        last = None if f[-1] is None or b[-1] is None else f[-1] + b[-1]
        return [(*f[:-1], last)], w_f + w_b
    return [f], w_f + w_b


def _axes(cfg: dict[str, Any], shape: Shape) -> list[int]:
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


def _norm(per_channel: Callable[[dict[str, Any]], int]) -> Rule:
    def rule(cfg: dict[str, Any], inputs: list[Shape]) -> tuple[list[Shape], int]:
        shape = _one(inputs)
        width = prod([shape[i] for i in _axes(cfg, shape)])
        return [shape], _known(width, "the normalised axis") * per_channel(cfg)

    return rule


def _layer_norm_weights(cfg: dict[str, Any]) -> int:
    if cfg.get("rms_scaling"):
        return 1
    return int(bool(cfg.get("center", True))) + int(bool(cfg.get("scale", True)))


def _prelu(cfg: dict[str, Any], inputs: list[Shape]) -> tuple[list[Shape], int]:
    shape = _one(inputs)
    shared = cfg.get("shared_axes") or []
    dims = [1 if i + 1 in shared else d for i, d in enumerate(shape)]
    return [shape], _known(prod(dims), "the input's shape")


# --- weightless layers ---------------------------------------------------------------------


def _same(_cfg: dict[str, Any], inputs: list[Shape]) -> tuple[list[Shape], int]:
    return [_one(inputs, 0)], 0


def _flatten(_cfg: dict[str, Any], inputs: list[Shape]) -> tuple[list[Shape], int]:
    return [(prod(_one(inputs, 0)),)], 0


def _reshape(cfg: dict[str, Any], inputs: list[Shape]) -> tuple[list[Shape], int]:
    total, target = prod(_one(inputs, 0)), cfg.get("target_shape")
    if not isinstance(target, list | tuple) or not all(
        isinstance(d, int) and not isinstance(d, bool) and (d > 0 or d == -1) for d in target
    ):
        raise CannotSize("target_shape must be a list of positive integers (one may be -1)")
    known = math.prod(d for d in target if d != -1)
    if -1 in target:
        if list(target).count(-1) > 1 or total is None:
            raise CannotSize("cannot infer the -1 of target_shape")
        return [tuple(total // known if d == -1 else d for d in target)], 0
    return [tuple(target)], 0


def _permute(cfg: dict[str, Any], inputs: list[Shape]) -> tuple[list[Shape], int]:
    shape, dims = _one(inputs), cfg.get("dims")
    if not isinstance(dims, list | tuple) or sorted(dims) != list(range(1, len(shape) + 1)):
        raise CannotSize("dims must be a permutation of the input's axes")
    return [tuple(shape[d - 1] for d in dims)], 0


def _repeat(cfg: dict[str, Any], inputs: list[Shape]) -> tuple[list[Shape], int]:
    return [(_int(cfg.get("n"), "n"), *_one(inputs))], 0


def _pool(rank: int) -> Rule:
    def rule(cfg: dict[str, Any], inputs: list[Shape]) -> tuple[list[Shape], int]:
        out, channels = _window(cfg, _one(inputs), rank, "pool_size")
        return [_placed(cfg, list(out), channels)], 0

    return rule


def _global_pool(rank: int) -> Rule:
    def rule(cfg: dict[str, Any], inputs: list[Shape]) -> tuple[list[Shape], int]:
        _spatial, channels = _channels(cfg, _one(inputs), rank)
        if cfg.get("keepdims"):
            return [_placed(cfg, [1] * rank, channels)], 0
        return [(channels,)], 0

    return rule


def _resize(rank: int, key: str) -> Rule:
    """ZeroPadding (+ both sides), Cropping (- both sides), UpSampling (x size)."""

    def rule(cfg: dict[str, Any], inputs: list[Shape]) -> tuple[list[Shape], int]:
        spatial, channels = _channels(cfg, _one(inputs), rank)
        value = cfg.get(key, 1)
        if key == "size":
            sizes = _ints(value, rank, key)
            out = [None if n is None else n * s for n, s in zip(spatial, sizes, strict=True)]
        else:
            pairs = value if isinstance(value, list | tuple) and len(value) == rank else [value]
            pairs = pairs * rank if len(pairs) == 1 else pairs
            sums = [sum(_ints(p, 2, key)) for p in pairs]
            sign = 1 if key == "padding" else -1
            out = [None if n is None else n + sign * s for n, s in zip(spatial, sums, strict=True)]
        if any(n is not None and n <= 0 for n in out):
            raise CannotSize(f"{key} leaves nothing of the input")
        return [_placed(cfg, out, channels)], 0

    return rule


def _merge(_cfg: dict[str, Any], inputs: list[Shape]) -> tuple[list[Shape], int]:
    if len(inputs) < 2 or len({len(s) for s in inputs}) != 1:
        raise CannotSize("expects two or more inputs of the same rank")
    out = tuple(
        max((d for d in dims if d is not None), default=None) for dims in zip(*inputs, strict=True)
    )
    return [out], 0


def _concatenate(cfg: dict[str, Any], inputs: list[Shape]) -> tuple[list[Shape], int]:
    if len(inputs) < 2 or len({len(s) for s in inputs}) != 1:
        raise CannotSize("expects two or more inputs of the same rank")
    (axis,) = _axes({"axis": cfg.get("axis", -1)}, inputs[0])
    dims = [s[axis] for s in inputs]
    total = None if any(d is None for d in dims) else sum(d for d in dims if d is not None)
    return [(*inputs[0][:axis], total, *inputs[0][axis + 1 :])], 0


#: Layers that keep their input's shape and have no weights.
_SAME = (  # noqa: SIM905
    "Dropout SpatialDropout1D SpatialDropout2D SpatialDropout3D GaussianNoise GaussianDropout "
    "AlphaDropout Activation ReLU LeakyReLU ELU Softmax ActivityRegularization Identity "
    "Masking Rescaling UnitNormalization"
).split()

RULES: dict[str, Rule] = {
    "Dense": _dense,
    "Embedding": _embedding,
    "SimpleRNN": lambda c, i: _recurrent(c, i, "SimpleRNN"),
    "GRU": lambda c, i: _recurrent(c, i, "GRU"),
    "LSTM": lambda c, i: _recurrent(c, i, "LSTM"),
    "Bidirectional": _bidirectional,
    "BatchNormalization": _norm(
        lambda c: 2 + bool(c.get("center", True)) + bool(c.get("scale", True))
    ),
    "LayerNormalization": _norm(_layer_norm_weights),
    "PReLU": _prelu,
    "Flatten": _flatten,
    "Reshape": _reshape,
    "Permute": _permute,
    "RepeatVector": _repeat,
    "Concatenate": _concatenate,
    **{name: _merge for name in ("Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum")},
    **{name: _same for name in _SAME},
}
for _r in (1, 2, 3):
    RULES[f"Conv{_r}D"] = _conv(_r)
    RULES[f"Conv{_r}DTranspose"] = _conv_transpose(_r)
    RULES[f"MaxPooling{_r}D"] = RULES[f"MaxPool{_r}D"] = _pool(_r)
    RULES[f"AveragePooling{_r}D"] = RULES[f"AvgPool{_r}D"] = _pool(_r)
    RULES[f"GlobalMaxPooling{_r}D"] = RULES[f"GlobalMaxPool{_r}D"] = _global_pool(_r)
    RULES[f"GlobalAveragePooling{_r}D"] = RULES[f"GlobalAvgPool{_r}D"] = _global_pool(_r)
    RULES[f"ZeroPadding{_r}D"] = _resize(_r, "padding")
    RULES[f"Cropping{_r}D"] = _resize(_r, "cropping")
    RULES[f"UpSampling{_r}D"] = _resize(_r, "size")
for _r in (1, 2):
    RULES[f"DepthwiseConv{_r}D"] = _depthwise(_r, separable=False)
    RULES[f"SeparableConv{_r}D"] = _depthwise(_r, separable=True)


def apply_layer(node: dict[str, Any], inputs: list[Shape]) -> tuple[list[Shape], int]:
    """(output shapes, weights) of one serialized layer called on `inputs`."""
    name, cfg = node.get("class_name"), node.get("config")
    rule = RULES.get(name) if isinstance(name, str) else None
    if rule is None:
        raise CannotSize(f"class {str(name)[:80]!r} is not a layer lrsearch can size")
    return rule(cfg if isinstance(cfg, dict) else {}, inputs)
