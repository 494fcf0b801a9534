"""Op rules of generated twins: a torch function or tensor method -> Keras layers.

Rules are keyed by the op's name (``torch.add``, ``operator.add`` and ``Tensor.add`` are all
``add``; an in-place ``relu_``/``iadd`` is its out-of-place op: the Keras graph has no
aliasing). A rule gets the :class:`~codenn_convert.twins.fx_layout.Context` and the node's
arguments, in which tensors from the input are :class:`Value` s, parameters
:class:`ParamRef` s and everything else concrete (numbers, shapes, constant tensors)::

    @op_rule("hardtanh")
    def _hardtanh(ctx: Context, args: Args) -> Any: ...

An op with no rule is a one-line error naming the node, the op and the module it is in.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from codenn_convert.twins import fx_modules as fm
from codenn_convert.twins.fx_layout import (
    Context,
    ParamRef,
    Value,
    broadcast_layout,
    constant_like,
    identity_perm,
    normal_dim,
    to_perm,
    unflatten,
    with_keras,
)


class Args:
    """A node's positional and keyword arguments, read by position or name."""

    def __init__(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.args, self.kwargs = args, kwargs

    def get(self, i: int, name: str, default: Any = None) -> Any:
        if i < len(self.args):
            return self.args[i]
        return self.kwargs.get(name, default)


OpRule = Callable[[Context, Args], Any]
_OP_RULES: dict[str, OpRule] = {}


def op_rule(*names: str) -> Callable[[OpRule], OpRule]:
    """Register a rule for the ops ``names``."""
    return fm.registrar(_OP_RULES, "op", names)


#: In-place and dunder spellings -> the op's name.
_ALIASES = {"iadd": "add", "isub": "sub", "imul": "mul", "itruediv": "div", "truediv": "div",
            "true_divide": "div", "divide": "div", "multiply": "mul", "subtract": "sub",
            "concat": "cat", "concatenate": "cat", "reshape": "view", "swapaxes": "transpose"}


def op_name(node: Any) -> str:
    """The rule name of a ``call_function`` / ``call_method`` node."""
    target = node.target
    name = target if isinstance(target, str) else getattr(target, "__name__", str(target))
    name = name.strip("_") if name.startswith("__") else name.rstrip("_")
    return _ALIASES.get(name, name)


def find_op_rule(name: str) -> OpRule | None:
    return _OP_RULES.get(name)


# ---------------------------------------------------------------------- element-wise


def _binary(op: str) -> OpRule:
    def rule(ctx: Context, a: Args) -> Any:
        return binary(ctx, op, a.get(0, "input"), a.get(1, "other"))

    return rule


for _op in ("add", "sub", "mul", "div", "maximum", "minimum"):
    op_rule(_op)(_binary(_op))


def binary(ctx: Context, op: str, x: Any, y: Any) -> Value:
    """``x <op> y`` in torch's operand order; one side may be a number, a constant tensor
    or a parameter (brought to the other side's layout)."""
    from codenn_convert.twins.fx_layers import Elementwise

    if isinstance(x, Value) and isinstance(y, Value):
        if x.rank != y.rank:
            x, y = identity_perm(ctx, x), identity_perm(ctx, y)
        elif (x.perm, x.flat) != (y.perm, y.flat):
            x = unflatten(ctx, x)
            y = to_perm(ctx, y, x.perm)
        return with_keras(x, Elementwise(op, name=ctx.op_name())([x.keras, y.keras]))
    first = not isinstance(x, Value)
    value, other = (y, x) if first else (x, y)
    if isinstance(other, ParamRef):
        return _with_parameter(ctx, op, value, other, first)
    if isinstance(other, int | float | bool):
        const = np.float32(other)
    else:
        value = unflatten(ctx, value) if np.ndim(other) else value
        const = constant_like(np.asarray(other.detach().numpy(), np.float32), value)
    return with_keras(value, Elementwise(op, const, first, name=ctx.op_name())(value.keras))


def _with_parameter(ctx: Context, op: str, x: Value, p: ParamRef, first: bool) -> Value:
    """``x <op> p`` for a parameter ``p``: a layer scale (its owner has the ``layer_scale``
    rule) is that rule's Keras layer, named by the owner; any other parameter a
    :class:`TorchParameter` layer named by its key."""
    from codenn_convert.models.common.keras_layers import ScaledResidual
    from codenn_convert.twins.fx_layers import TorchParameter
    from codenn_convert.twins.rules import torch_rule

    x = unflatten(ctx, x)
    owner = ctx.root.get_submodule(p.owner) if p.owner else ctx.root
    rule = torch_rule(p.owner, owner, required=False)
    if rule is not None and rule.name == "layer_scale" and op == "mul":
        if len(p.shape) != 3 or x.rank != 4 or x.perm != fm.NHWC:
            raise ctx.fail(f"layer scale {p.key} on a non-NCHW tensor")
        layer = ctx.module_layer(p.owner, lambda: ScaledResidual(name=p.owner))
        return with_keras(x, layer(x.keras))
    full = ctx.root.get_parameter(p.key) if p.key in dict(ctx.root.named_parameters()) \
        else ctx.root.get_buffer(p.key)
    shape, perm = broadcast_layout(np.zeros(p.shape), x)
    layer = ctx.module_layer(p.key, lambda: TorchParameter(
        op, tuple(full.shape), shape, perm, first, name=p.key))
    return with_keras(x, layer(x.keras))


def _unary(kind: str) -> OpRule:
    return lambda ctx, a: fm.activation(ctx, kind, a.get(0, "input"))


for _name, _kind in (("relu", "ReLU"), ("relu6", "ReLU6"), ("sigmoid", "Sigmoid"),
                     ("silu", "SiLU"), ("hardswish", "Hardswish"), ("tanh", "Tanh"),
                     ("hardsigmoid", "Hardsigmoid")):
    op_rule(_name)(_unary(_kind))


@op_rule("gelu")
def _gelu(ctx: Context, a: Args) -> Value:
    if a.get(1, "approximate", "none") != "none":
        raise ctx.fail("gelu(approximate='tanh')")
    return fm.activation(ctx, "GELU", a.get(0, "input"))


@op_rule("hardtanh")
def _hardtanh(ctx: Context, a: Args) -> Value:
    if (a.get(1, "min_val", -1.0), a.get(2, "max_val", 1.0)) != (0.0, 6.0):
        raise ctx.fail("hardtanh other than relu6")
    return fm.activation(ctx, "ReLU6", a.get(0, "input"))


@op_rule("dropout", "dropout2d", "contiguous", "clone", "detach", "float")
def _identity(ctx: Context, a: Args) -> Value:
    return a.get(0, "input")  # eval mode / no data change


@op_rule("stochastic_depth")
def _stochastic_depth(ctx: Context, a: Args) -> Value:
    if a.get(3, "training", True):
        raise ctx.fail("stochastic_depth in training mode")
    return a.get(0, "input")


@op_rule("new_tensor", "new_ones", "new_zeros", "new_full", "new_empty")
def _new_constant(ctx: Context, a: Args) -> Any:
    return ctx.node.meta["value"]  # depends on the input's dtype only: a constant


# ------------------------------------------------------------------- layout and shape


@op_rule("permute")
def _permute(ctx: Context, a: Args) -> Value:
    x: Value = unflatten(ctx, a.args[0])
    dims = a.args[1:] if len(a.args) > 2 else a.get(1, "dims")
    dims = [normal_dim(int(d), x.rank) for d in dims]
    inverse = [dims.index(t) for t in range(x.rank)]
    # Only bookkeeping: the same Keras tensor holds the permuted torch value.
    return Value(x.keras, tuple(inverse[p] for p in x.perm))


@op_rule("transpose")
def _transpose(ctx: Context, a: Args) -> Value:
    x: Value = a.args[0]
    d0, d1 = (normal_dim(int(a.get(i, n)), x.rank) for i, n in ((1, "dim0"), (2, "dim1")))
    dims = list(range(x.rank))
    dims[d0], dims[d1] = d1, d0
    return _permute(ctx, Args((x, dims), {}))


@op_rule("flatten")
def _flatten(ctx: Context, a: Args) -> Value:
    return fm.flatten(ctx, a.get(0, "input"), a.get(1, "start_dim", 0), a.get(2, "end_dim", -1))


@op_rule("view", "unsqueeze", "squeeze")
def _view(ctx: Context, a: Args) -> Any:
    from keras import layers

    x = a.args[0]
    shape = ctx.out_shape()
    if isinstance(x, ParamRef):
        return ParamRef(x.key, x.owner, x.attr, shape)
    if shape[0] != ctx.node.meta["batch"]:
        raise ctx.fail("a reshape of the batch axis")
    x = identity_perm(ctx, x)
    return Value(layers.Reshape(shape[1:], name=ctx.op_name())(x.keras),
                 tuple(range(len(shape))))


@op_rule("cat")
def _cat(ctx: Context, a: Args) -> Value:
    from keras import layers

    xs = list(a.get(0, "tensors"))
    dim = a.get(1, "dim", 0)
    if not all(isinstance(x, Value) for x in xs):
        raise ctx.fail("cat of constants and tensors")
    first = unflatten(ctx, xs[0])
    xs = [first] + [to_perm(ctx, x, first.perm) for x in xs[1:]]
    axis = first.perm.index(normal_dim(dim, first.rank))
    return with_keras(first, layers.Concatenate(axis=axis, name=ctx.op_name())(
        [x.keras for x in xs]))


@op_rule("chunk", "split")
def _chunk(ctx: Context, a: Args) -> list[Value]:
    from codenn_convert.twins.fx_layers import Slice

    x = unflatten(ctx, a.args[0])
    dim = normal_dim(a.get(2, "dim", 0), x.rank)
    axis = x.perm.index(dim)
    out, start = [], 0
    for part in ctx.node.meta["value"]:
        stop = start + int(part.shape[dim])
        out.append(with_keras(x, Slice(axis, start, stop, name=ctx.op_name(f".{len(out)}"))(
            x.keras)))
        start = stop
    return out


@op_rule("getitem")
def _getitem(ctx: Context, a: Args) -> Any:
    seq, index = a.args
    if isinstance(seq, list | tuple) and isinstance(index, int):
        return seq[index]
    raise ctx.fail("indexing a tensor (slices of activations have no rule)")


def _reduce(kind: str) -> OpRule:
    def rule(ctx: Context, a: Args) -> Value:
        from codenn_convert.twins.fx_layers import Reduce

        x = unflatten(ctx, a.args[0])
        dims = a.get(1, "dim")
        dims = range(x.rank) if dims is None else [dims] if isinstance(dims, int) else dims
        dims = sorted(normal_dim(int(d), x.rank) for d in dims)
        if 0 in dims:
            raise ctx.fail(f"{kind} over the batch axis")
        keep = bool(a.get(2, "keepdim", False))
        axes = tuple(x.perm.index(d) for d in dims)
        k = Reduce(kind, axes, keep, name=ctx.op_name())(x.keras)
        if keep:
            return with_keras(x, k)
        left = [p for p in x.perm if p not in dims]
        return Value(k, tuple(sorted(left).index(p) for p in left))  # torch axes renumbered

    return rule


for _kind in ("mean", "sum", "amax"):
    op_rule(_kind)(_reduce(_kind))


@op_rule("softmax")
def _softmax(ctx: Context, a: Args) -> Value:
    return fm.softmax(ctx, a.get(0, "input"), a.get(1, "dim"))


# ------------------------------------------------------------------ pooling, padding


@op_rule("adaptive_avg_pool2d")
def _adaptive(ctx: Context, a: Args) -> Value:
    return fm.adaptive_avg_pool(ctx, a.get(1, "output_size"), a.get(0, "input"))


@op_rule("avg_pool2d")
def _avg_pool(ctx: Context, a: Args) -> Value:
    if a.get(6, "divisor_override") is not None:
        raise ctx.fail("avg_pool2d with divisor_override")
    return fm.avg_pool(ctx, a.get(1, "kernel_size"), a.get(2, "stride"), a.get(3, "padding", 0),
                       a.get(4, "ceil_mode", False), a.get(5, "count_include_pad", True),
                       a.get(0, "input"))


@op_rule("max_pool2d")
def _max_pool(ctx: Context, a: Args) -> Value:
    if a.get(4, "dilation", 1) not in (1, (1, 1)) or a.get(6, "return_indices", False):
        raise ctx.fail("max_pool2d with dilation or return_indices")
    return fm.max_pool(ctx, a.get(1, "kernel_size"), a.get(2, "stride"), a.get(3, "padding", 0),
                       a.get(5, "ceil_mode", False), a.get(0, "input"))


@op_rule("pad")
def _pad(ctx: Context, a: Args) -> Value:
    x, pads = a.get(0, "input"), tuple(a.get(1, "pad"))
    mode, value = a.get(2, "mode", "constant"), a.get(3, "value", None)
    if mode != "constant" or len(pads) != 4 or x.rank != 4:
        raise ctx.fail(f"pad mode {mode!r} over {len(pads) // 2} axes")
    left, right, top, bottom = (int(p) for p in pads)
    return fm.pad(ctx, fm.nhwc(ctx, x), ((top, bottom), (left, right)), float(value or 0.0))


# ------------------------------------------------- a module's functional call on its weights


def _owner(ctx: Context, weight: Any, what: str) -> tuple[str, Any]:
    """The module whose own ``weight`` a functional op uses (its rule names the layer)."""
    if not isinstance(weight, ParamRef) or weight.attr != "weight":
        raise ctx.fail(f"{what} with weights that are not a module's own parameter")
    return weight.owner, ctx.root.get_submodule(weight.owner)


@op_rule("conv2d")
def _conv2d(ctx: Context, a: Args) -> Value:
    path, m = _owner(ctx, a.get(1, "weight"), "conv2d")
    o, i, kh, kw = m.weight.shape
    groups = int(a.get(6, "groups", 1))
    args = fm.ConvArgs(int(o), int(i) * groups, (int(kh), int(kw)),
                       fm.pair(a.get(3, "stride", 1)), a.get(4, "padding", 0),
                       fm.pair(a.get(5, "dilation", 1)), groups, a.get(2, "bias") is not None)
    return fm.conv(ctx, path, args, a.get(0, "input"))


@op_rule("linear")
def _linear(ctx: Context, a: Args) -> Value:
    path, m = _owner(ctx, a.get(1, "weight"), "linear")
    return fm.dense(ctx, path, int(m.weight.shape[0]), a.get(2, "bias") is not None,
                    a.get(0, "input"))


@op_rule("layer_norm")
def _layer_norm(ctx: Context, a: Args) -> Value:
    weight = a.get(2, "weight")
    path = weight.owner if isinstance(weight, ParamRef) else ctx.op_name()
    return fm.layer_norm(ctx, path, tuple(a.get(1, "normalized_shape")),
                         float(a.get(4, "eps", 1e-5)), weight is not None, a.get(0, "input"))


@op_rule("batch_norm")
def _batch_norm(ctx: Context, a: Args) -> Value:
    path, m = _owner(ctx, a.get(3, "weight"), "batch_norm")
    if a.get(5, "training", False):
        raise ctx.fail("batch_norm in training mode")
    return fm.batch_norm(ctx, path, m, a.get(0, "input"), float(a.get(7, "eps", 1e-5)))
