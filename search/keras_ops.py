"""Output shapes of the `keras.ops` calls a functional model records, from their configs.

Why: in Keras 3, `x + shortcut`, `x * 0.5` or `keras.ops.mean(x, axis=1)` on a model's
tensors are recorded as operations (`module: keras.src.ops.numpy`, `class_name: Add`), not
layers; without rules here every residual model written that way was refused at submit as
"not a layer lrsearch can size". Ops have no weights. Elementwise ops (with NumPy's
broadcasting), reductions, softmax, concatenate, expand_dims, reshape and slicing (`x[:, -1]`,
`x[..., 1:3]`, `x[:, None]`) are sized; any other op is refused as before.
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
#: A slice may add axes (`x[:, None]`); no model needs more than this many, and a key of
#: thousands of Nones in a hostile JSON would otherwise make shapes of that rank.
MAX_RANK = 32


def is_op(node: dict[str, Any]) -> bool:
    """Whether a serialized object is a `keras.ops` call rather than a layer."""
    module = node.get("module")
    return isinstance(module, str) and (
        module.startswith("keras.src.ops.") or module.startswith("keras.ops")
    )


def apply_op(name: str, cfg: dict[str, Any], inputs: list[Shape], call: Any = None) -> list[Shape]:
    """The output shape of op `name` on the tensors `inputs` (constants are not among them);
    `call` is the call's recorded arguments (a slice's key lives there, not in the config)."""
    if name == "GetItem":
        key = _key(call)  # first: a tensor key is a tensor input too
        return [get_item(_single(inputs), key)]
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


def _key(call: Any) -> list[Any]:
    """The key of `x[key]` as a list of items, from the call's recorded args [x, key]."""
    args = call.get("args") if isinstance(call, dict) else None
    if not isinstance(args, list) or len(args) != 2:
        raise CannotSize("a slice must be recorded as x[key]")
    return args[1] if isinstance(args[1], list) else [args[1]]


def get_item(shape: Shape, key: list[Any]) -> Shape:
    """NumPy's basic indexing of a batch of `shape` examples: ints drop an axis, slices keep
    it (their length from Python's own slice arithmetic), None adds one, one Ellipsis fills
    in. The batch axis must stay whole and first: `x[0]` or `x[None]` would leave the model
    without one output per example."""
    full: list[int | None] = [None, *shape]
    items = [_key_item(item) for item in key]
    ellipses = sum(1 for item in items if item is Ellipsis)
    ints = sum(1 for item in items if isinstance(item, int))
    taking = ints + sum(1 for item in items if isinstance(item, slice))
    if ellipses > 1:
        raise CannotSize("a slice has at most one '...'")
    if taking > len(full):
        raise CannotSize(f"{taking} indices into a tensor of rank {len(full)}")
    if len(full) - ints + items.count(None) > MAX_RANK + 1:  # the result's rank, batch included
        raise CannotSize(f"the slice would make a tensor of more than {MAX_RANK} axes")
    whole = slice(None)
    at = items.index(Ellipsis) if ellipses else len(items)
    items[at : at + ellipses] = [whole] * (len(full) - taking)
    out: list[int | None] = []
    axis = 0
    for item in items:
        if item is None:
            if axis == 0:
                raise CannotSize("a new axis before the batch axis")
            out.append(1)
            continue
        dim = full[axis]
        if axis == 0 and item != whole:
            raise CannotSize("a slice must keep the batch axis whole (x[:, ...])")
        if isinstance(item, slice):
            out.append(dim if dim is None else len(range(*item.indices(dim))))
        elif dim is not None and not -dim <= item < dim:
            raise CannotSize(f"index {item} is outside axis {axis} of size {dim}")
        axis += 1
    return tuple(out[1:])


def _key_item(item: Any) -> Any:
    """One item of a recorded key as Python's own: int, None, slice or Ellipsis."""
    if item is None or (isinstance(item, int) and not isinstance(item, bool)):
        return item
    kind = item.get("class_name") if isinstance(item, dict) else None
    if kind == "__ellipsis__":
        return Ellipsis
    if kind == "__slice__":
        cfg = item.get("config")
        if isinstance(cfg, dict):
            bounds = [cfg.get(k) for k in ("start", "stop", "step")]
            if all(b is None or (isinstance(b, int) and not isinstance(b, bool)) for b in bounds):
                if bounds[2] == 0:
                    raise CannotSize("a slice step cannot be zero")
                return slice(*bounds)
    if kind == "__keras_tensor__":
        raise NoSizingRule("indexing with a tensor is not one lrsearch can size")
    raise CannotSize(f"{str(item)[:60]} is not an index lrsearch can read")
