"""Output shapes of the `keras.ops` calls a functional model records, from their configs.

Why: in Keras 3, `x + shortcut`, `x * 0.5` or `keras.ops.mean(x, axis=1)` on a model's
tensors are recorded as operations (`module: keras.src.ops.numpy`, `class_name: Add`), not
layers; without rules here every residual model written that way was refused at submit as
"not a layer lrsearch can size". Ops have no weights. Elementwise ops (with NumPy's
broadcasting), reductions, softmax, concatenate, expand_dims and reshape are sized; any other
op (slicing `x[:, 0]` among them) is refused as before.
"""

from __future__ import annotations

from typing import Any

from search.keras_dims import CannotSize, NoSizingRule, Shape, axes_of, prod

_ELEMENTWISE = frozenset(
    (  # noqa: SIM905
        "Add Subtract Multiply Divide TrueDivide Power Maximum Minimum Mod FloorDivide "
        "Abs Absolute Negative Square Sqrt Exp Expm1 Log Log1p Reciprocal Sign Clip Round "
        "Floor Ceil Sin Cos Tanh Erf Relu Relu6 Sigmoid Softplus Softsign Silu Gelu Elu Selu "
        "LeakyRelu HardSigmoid HardSilu Mish"
    ).split()
)
_REDUCTIONS = frozenset({"Mean", "Sum", "Max", "Min", "Prod", "Std", "Var"})
_ALONG_AXIS = frozenset({"Softmax", "LogSoftmax"})


def is_op(node: dict[str, Any]) -> bool:
    """Whether a serialized object is a `keras.ops` call rather than a layer."""
    module = node.get("module")
    return isinstance(module, str) and (
        module.startswith("keras.src.ops.") or module.startswith("keras.ops")
    )


def apply_op(name: str, cfg: dict[str, Any], inputs: list[Shape]) -> list[Shape]:
    """The output shape of op `name` on the tensors `inputs` (constants are not among them)."""
    if name in _ELEMENTWISE:
        return [broadcast(inputs)]
    if name in _REDUCTIONS:
        return [_reduce(cfg, _single(inputs))]
    if name in _ALONG_AXIS:
        shape = _single(inputs)
        axes_of(cfg, shape)
        return [shape]
    if name in _RESHAPING:
        return [_RESHAPING[name](cfg, inputs)]
    raise NoSizingRule(f"keras.ops call {name[:80]!r} is not one lrsearch can size")


def broadcast(shapes: list[Shape]) -> Shape:
    """NumPy's broadcasting of per-example shapes (the batch axis broadcasts alike)."""
    if not shapes:
        raise CannotSize("an op takes no tensor")
    rank = max(len(s) for s in shapes)
    out: list[int | None] = []
    for i in range(rank):
        dims = {s[len(s) - rank + i] for s in shapes if len(s) - rank + i >= 0} - {1}
        sized = {d for d in dims if d is not None}
        if len(sized) > 1:
            raise CannotSize(f"shapes {' and '.join(map(str, shapes))[:120]} do not broadcast")
        out.append(sized.pop() if sized else (None if None in dims else 1))
    return tuple(out)


def _concatenate(cfg: dict[str, Any], inputs: list[Shape]) -> Shape:
    if len(inputs) < 2 or len({len(s) for s in inputs}) != 1:
        raise CannotSize("expects two or more tensors of the same rank")
    [axis] = axes_of({"axis": cfg.get("axis", 0)}, inputs[0])
    if any(s[:axis] + s[axis + 1 :] != inputs[0][:axis] + inputs[0][axis + 1 :] for s in inputs):
        raise CannotSize(f"shapes {inputs} differ outside axis {axis + 1}")
    dims = [s[axis] for s in inputs]
    total = None if None in dims else sum(d for d in dims if d is not None)
    return (*inputs[0][:axis], total, *inputs[0][axis + 1 :])


def _expand_dims(cfg: dict[str, Any], inputs: list[Shape]) -> Shape:
    shape = _single(inputs)
    axis = cfg.get("axis")
    if isinstance(axis, bool) or not isinstance(axis, int) or axis == 0:
        raise CannotSize("expand_dims needs one axis other than the batch axis")
    at = axis - 1 if axis > 0 else len(shape) + 1 + axis
    if not 0 <= at <= len(shape):
        raise CannotSize(f"axis {axis} is outside the input's rank")
    return (*shape[:at], 1, *shape[at:])


def _reshape(cfg: dict[str, Any], inputs: list[Shape]) -> Shape:
    """keras.ops.reshape(x, (-1, ...)): the batch axis first as -1, the rest per example."""
    shape = _single(inputs)
    new = cfg.get("newshape")
    if not (isinstance(new, list) and new and new[0] == -1 and -1 not in new[1:]):
        raise CannotSize("reshape must keep the batch axis first, as -1")
    dims = [d for d in new[1:] if isinstance(d, int) and not isinstance(d, bool) and d > 0]
    total = prod(list(shape))
    if len(dims) != len(new) - 1 or (total is not None and prod(dims) != total):
        raise CannotSize(f"cannot reshape {shape} to {new[1:]}")
    return tuple(dims)


_RESHAPING = {"Concatenate": _concatenate, "ExpandDims": _expand_dims, "Reshape": _reshape}


def _single(inputs: list[Shape]) -> Shape:
    if len(inputs) != 1:
        raise CannotSize(f"expects one tensor, got {len(inputs)}")
    return inputs[0]


def _reduce(cfg: dict[str, Any], shape: Shape) -> Shape:
    """Reductions over per-example axes; over the batch axis (or all, axis None) the model
    would no longer give one output per example."""
    if cfg.get("axis") is None:
        raise CannotSize("a reduction over every axis reduces the batch too")
    axes = set(axes_of(cfg, shape))
    if cfg.get("keepdims") is True:
        return tuple(1 if i in axes else d for i, d in enumerate(shape))
    return tuple(d for i, d in enumerate(shape) if i not in axes)
