"""Output shapes and weight counts of Keras's built-in layers, from their configs alone
(the shared readers of shapes and config values are in search.keras_dims).

Why plain Python: the API sizes a user's `keras_json` model at submit (search.keras_shapes)
and never imports Keras. Each rule mirrors the layer's Keras 3 `build` and
`compute_output_shape`; a shape is one example's, without the batch axis, None where
unknown. A class with no rule here cannot be sized, so the model is refused rather than
guessed at (`CannotSize`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from search.keras_dims import (
    CannotSize,
    NoSizingRule,
    Rule,
    Shape,
    as_int,
    as_ints,
    as_size,
    axes_of,
    channels_of,
    known,
    one_input,
    placed,
    prod,
    window,
)
from search.keras_layers_extra import EXTRA_RULES
from search.keras_ops import apply_op, is_op


def _bias(cfg: dict[str, Any], n: int) -> int:
    return n if cfg.get("use_bias", True) else 0


# --- weight layers -------------------------------------------------------------------------


def _dense(cfg: dict[str, Any], inputs: list[Shape]) -> tuple[list[Shape], int]:
    shape = one_input(inputs)
    units = as_size(cfg.get("units"), "units")
    d = known(shape[-1], "the input's last dimension")
    return [(*shape[:-1], units)], d * units + _bias(cfg, units)


def _embedding(cfg: dict[str, Any], inputs: list[Shape]) -> tuple[list[Shape], int]:
    shape = one_input(inputs, 0)
    n, width = (
        as_size(cfg.get("input_dim"), "input_dim"),
        as_size(cfg.get("output_dim"), "output_dim"),
    )
    return [(*shape, width)], n * width


def _conv(rank: int) -> Rule:
    def rule(cfg: dict[str, Any], inputs: list[Shape]) -> tuple[list[Shape], int]:
        out, cin = window(cfg, one_input(inputs), rank, "kernel_size")
        filters, groups = (
            as_size(cfg.get("filters"), "filters"),
            as_int(cfg.get("groups", 1), "groups"),
        )
        cin = known(cin, "the input's channels")
        if groups < 1 or cin % groups or filters % groups:
            raise CannotSize(f"groups={groups} must divide the channels and filters")
        kernel = math.prod(as_ints(cfg.get("kernel_size"), rank, "kernel_size"))
        weights = kernel * (cin // groups) * filters + _bias(cfg, filters)
        return [placed(cfg, list(out), filters)], weights

    return rule


def _conv_transpose(rank: int) -> Rule:
    def rule(cfg: dict[str, Any], inputs: list[Shape]) -> tuple[list[Shape], int]:
        spatial, cin = channels_of(cfg, one_input(inputs), rank)
        kernel = as_ints(cfg.get("kernel_size"), rank, "kernel_size", least=1)
        strides = as_ints(cfg.get("strides", 1), rank, "strides", least=1)
        dilation = as_ints(cfg.get("dilation_rate", 1), rank, "dilation_rate", least=1)
        pads = cfg.get("output_padding")
        extra = None if pads is None else as_ints(pads, rank, "output_padding")
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
        filters = as_size(cfg.get("filters"), "filters")
        cin = known(cin, "the input's channels")
        weights = math.prod(kernel) * cin * filters + _bias(cfg, filters)
        return [placed(cfg, out, filters)], weights

    return rule


def _depthwise(rank: int, separable: bool) -> Rule:
    def rule(cfg: dict[str, Any], inputs: list[Shape]) -> tuple[list[Shape], int]:
        out, cin = window(cfg, one_input(inputs), rank, "kernel_size")
        cin = known(cin, "the input's channels")
        mult = as_size(cfg.get("depth_multiplier", 1), "depth_multiplier")
        weights = math.prod(as_ints(cfg.get("kernel_size"), rank, "kernel_size")) * cin * mult
        if not separable:
            return [placed(cfg, list(out), cin * mult)], weights + _bias(cfg, cin * mult)
        filters = as_size(cfg.get("filters"), "filters")
        weights += cin * mult * filters + _bias(cfg, filters)
        return [placed(cfg, list(out), filters)], weights

    return rule


_GATES = {"SimpleRNN": 1, "GRU": 3, "LSTM": 4}


def _recurrent(cfg: dict[str, Any], inputs: list[Shape], kind: str) -> tuple[list[Shape], int]:
    shape = one_input(inputs)
    if len(shape) != 2:
        raise CannotSize(f"expects inputs of shape (timesteps, features), got {shape}")
    units = as_size(cfg.get("units"), "units")
    d, gates = known(shape[1], "the input's features"), _GATES[kind]
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
        and {str(forward.get("class_name")), str(backward.get("class_name"))} <= set(_GATES)
    ):
        raise CannotSize("Bidirectional must wrap a SimpleRNN, GRU or LSTM layer")
    outs_f, w_f = _recurrent(_cfg(forward), inputs, forward["class_name"])
    outs_b, w_b = _recurrent(_cfg(backward), inputs, backward["class_name"])
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


def _norm(per_channel: Callable[[dict[str, Any]], int]) -> Rule:
    def rule(cfg: dict[str, Any], inputs: list[Shape]) -> tuple[list[Shape], int]:
        shape = one_input(inputs)
        width = prod([shape[i] for i in axes_of(cfg, shape)])
        return [shape], known(width, "the normalised axis") * per_channel(cfg)

    return rule


def _layer_norm_weights(cfg: dict[str, Any]) -> int:
    if cfg.get("rms_scaling"):
        return 1
    return int(bool(cfg.get("center", True))) + int(bool(cfg.get("scale", True)))


def _prelu(cfg: dict[str, Any], inputs: list[Shape]) -> tuple[list[Shape], int]:
    shape = one_input(inputs)
    shared = cfg.get("shared_axes") or []
    shared = shared if isinstance(shared, list | tuple) else [shared]
    dims = [1 if i + 1 in shared else d for i, d in enumerate(shape)]
    return [shape], known(prod(dims), "the input's shape")


# --- weightless layers ---------------------------------------------------------------------


def _same(_cfg: dict[str, Any], inputs: list[Shape]) -> tuple[list[Shape], int]:
    return [one_input(inputs, 0)], 0


def _flatten(_cfg: dict[str, Any], inputs: list[Shape]) -> tuple[list[Shape], int]:
    return [(prod(one_input(inputs, 0)),)], 0


def _reshape(cfg: dict[str, Any], inputs: list[Shape]) -> tuple[list[Shape], int]:
    total, target = prod(one_input(inputs, 0)), cfg.get("target_shape")
    if not isinstance(target, list | tuple) or not all(
        isinstance(d, int) and not isinstance(d, bool) and (d > 0 or d == -1) for d in target
    ):
        raise CannotSize("target_shape must be a list of positive integers (one may be -1)")
    known = math.prod(d for d in target if d != -1)
    if -1 in target:
        if list(target).count(-1) > 1 or total is None or total % known:
            raise CannotSize(f"cannot infer the -1 of target_shape from {total} values")
        return [tuple(total // known if d == -1 else d for d in target)], 0
    if total is not None and known != total:
        raise CannotSize(f"target_shape holds {known} values; the input has {total}")
    return [tuple(target)], 0


def _permute(cfg: dict[str, Any], inputs: list[Shape]) -> tuple[list[Shape], int]:
    shape, dims = one_input(inputs), cfg.get("dims")
    axes = list(range(1, len(shape) + 1))
    if not isinstance(dims, list | tuple) or sorted(dims, key=str) != sorted(axes, key=str):
        raise CannotSize("dims must be a permutation of the input's axes")
    return [tuple(shape[d - 1] for d in dims)], 0


def _repeat(cfg: dict[str, Any], inputs: list[Shape]) -> tuple[list[Shape], int]:
    return [(as_size(cfg.get("n"), "n"), *one_input(inputs))], 0


def _pool(rank: int) -> Rule:
    def rule(cfg: dict[str, Any], inputs: list[Shape]) -> tuple[list[Shape], int]:
        out, channels = window(cfg, one_input(inputs), rank, "pool_size")
        return [placed(cfg, list(out), channels)], 0

    return rule


def _global_pool(rank: int) -> Rule:
    def rule(cfg: dict[str, Any], inputs: list[Shape]) -> tuple[list[Shape], int]:
        _spatial, channels = channels_of(cfg, one_input(inputs), rank)
        if cfg.get("keepdims"):
            return [placed(cfg, [1] * rank, channels)], 0
        return [(channels,)], 0

    return rule


def _resize(rank: int, key: str) -> Rule:
    """ZeroPadding (+ both sides), Cropping (- both sides), UpSampling (x size)."""

    def rule(cfg: dict[str, Any], inputs: list[Shape]) -> tuple[list[Shape], int]:
        spatial, channels = channels_of(cfg, one_input(inputs), rank)
        value = cfg.get(key, 1)
        if key == "size":
            sizes = as_ints(value, rank, key)
            out = [None if n is None else n * s for n, s in zip(spatial, sizes, strict=True)]
        else:
            pairs = value if isinstance(value, list | tuple) and len(value) == rank else [value]
            pairs = pairs * rank if len(pairs) == 1 else pairs
            sums = [sum(as_ints(p, 2, key)) for p in pairs]
            sign = 1 if key == "padding" else -1
            out = [None if n is None else n + sign * s for n, s in zip(spatial, sums, strict=True)]
        if any(n is not None and n <= 0 for n in out):
            raise CannotSize(f"{key} leaves nothing of the input")
        return [placed(cfg, out, channels)], 0

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
    axis = cfg.get("axis", -1)
    if not isinstance(axis, int):
        raise CannotSize("axis must be one integer")
    (axis,) = axes_of({"axis": axis}, inputs[0])
    dims = [s[axis] for s in inputs]
    total = None if any(d is None for d in dims) else sum(d for d in dims if d is not None)
    return [(*inputs[0][:axis], total, *inputs[0][axis + 1 :])], 0


def _dropout(cfg: dict[str, Any], inputs: list[Shape]) -> tuple[list[Shape], int]:
    """Keras refuses a rate outside [0, 1) only when it builds the layer, in the worker."""
    rate = cfg.get("rate")
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 <= rate < 1:
        raise CannotSize(f"rate must be a number in [0, 1), got {str(rate)[:40]}")
    return _same(cfg, inputs)


def _along_axis(cfg: dict[str, Any], inputs: list[Shape]) -> tuple[list[Shape], int]:
    """Softmax and UnitNormalization work along `axis`, which must be one of the input's."""
    axes_of(cfg, one_input(inputs))
    return _same(cfg, inputs)


#: Layers that keep their input's shape and have no weights.
_SAME = (  # noqa: SIM905
    "GaussianNoise Activation ReLU LeakyReLU ELU ActivityRegularization Identity Masking Rescaling"
).split()
_DROPOUT = (  # noqa: SIM905
    "Dropout SpatialDropout1D SpatialDropout2D SpatialDropout3D GaussianDropout AlphaDropout"
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
    **{name: _dropout for name in _DROPOUT},
    "Softmax": _along_axis,
    "UnitNormalization": _along_axis,
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
RULES.update(EXTRA_RULES)  # normalization variants, augmentation, attention


#: Keras 3.15's activation names (`keras.activations`); a layer naming another one only
#: fails when the worker deserialises it.
ACTIVATIONS = frozenset(
    (  # noqa: SIM905
        "celu elu exponential gelu glu hard_shrink hard_sigmoid hard_silu hard_swish hard_tanh "
        "leaky_relu linear log_sigmoid log_softmax mish relu relu6 selu sigmoid silu "
        "soft_shrink softmax softplus softsign sparse_plus sparse_sigmoid sparsemax squareplus "
        "swish tanh tanh_shrink threshold"
    ).split()
)


def apply_layer(
    node: dict[str, Any], inputs: list[Shape], call: Any = None
) -> tuple[list[Shape], int]:
    """(output shapes, weights) of one serialized layer called on `inputs`; `call` is the
    inbound node of this call (its recorded arguments), where known."""
    name = node.get("class_name")
    if isinstance(name, str) and is_op(node):  # `x + y`, `keras.ops.mean(x, 1)`: no weights
        return apply_op(name, _cfg(node), inputs, call), 0
    rule = RULES.get(name) if isinstance(name, str) else None
    if rule is None:
        raise NoSizingRule(f"class {str(name)[:80]!r} is not a layer lrsearch can size")
    cfg = _cfg(node)
    for key in ("activation", "recurrent_activation"):
        value = cfg.get(key)
        if isinstance(value, str) and value not in ACTIVATIONS:
            raise CannotSize(f"{key} {value[:40]!r} is not one of Keras's activations")
    return rule(cfg, inputs)


def _time_distributed(cfg: dict[str, Any], inputs: list[Shape]) -> tuple[list[Shape], int]:
    """The inner layer applied to each step: its rule on the shape without the time axis."""
    shape = one_input(inputs, 2)
    inner = cfg.get("layer")
    if not isinstance(inner, dict):
        raise CannotSize("TimeDistributed needs its inner layer's config")
    outputs, weights = apply_layer(inner, [shape[1:]])
    return [(shape[0], *out) for out in outputs], weights


RULES["TimeDistributed"] = _time_distributed  # a core rule applied at each step


def _cfg(node: dict[str, Any]) -> dict[str, Any]:
    cfg = node.get("config")
    return cfg if isinstance(cfg, dict) else {}
