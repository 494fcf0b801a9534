"""Module rules of generated twins: a torch module type -> the Keras layers computing it.

Weighted modules build the Keras layer type of their layer rule
(:mod:`codenn_convert.twins.rules`), named by the module path, so the mapper maps their
weights exactly as it maps our hand-written twins'. A new module type is one function::

    @module_rule("torch.nn.ELU")
    def _elu(ctx: Context, module, x: Value) -> Value: ...

Semantics follow the hand-written twins (:mod:`codenn_convert.models.common.keras_layers`):
explicit symmetric padding, -inf padding for max-pools, ``count_include_pad``, eps set.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from codenn_convert.twins.fx_layout import (
    NHWC,
    Context,
    Value,
    channels_last,
    identity_perm,
    nhwc,
    normal_dim,
    unflatten,
    with_keras,
)

#: Kernels start at zero: a generated twin's weights are always mapped in, and drawing
#: random kernels costs seconds for big nets (ConvNeXt-L: 198 M parameters).
ZEROS = "zeros"
ModuleRule = Callable[[Context, Any, Value], Value]
_MODULE_RULES: dict[str, ModuleRule] = {}


def registrar(table: dict[str, Any], what: str, keys: tuple[str, ...]
              ) -> Callable[[Any], Any]:
    """A decorator putting its function into ``table`` under every key; a key registered
    twice raises (two rules for one thing would depend on import order)."""

    def register(fn: Any) -> Any:
        for key in keys:
            if key in table:
                raise ValueError(f"{what} {key!r} already has a rule")
            table[key] = fn
        return fn

    return register


def module_rule(*torch_types: str) -> Callable[[ModuleRule], ModuleRule]:
    """Register a builder for torch module types (dotted names, subclasses included)."""
    return registrar(_MODULE_RULES, "module type", torch_types)


def find_module_rule(module: Any) -> ModuleRule | None:
    """The rule of ``module``'s class or of its nearest registered base class."""
    for cls in type(module).__mro__:
        rule = _MODULE_RULES.get(f"{cls.__module__}.{cls.__qualname__}")
        rule = rule or _MODULE_RULES.get(_public_name(cls))
        if rule is not None:
            return rule
    return None


def _public_name(cls: type) -> str:
    # torch.nn.Conv2d lives in torch.nn.modules.conv; rules use the public name.
    return f"torch.nn.{cls.__qualname__}" if cls.__module__.startswith("torch.nn.") else ""


def pair(v: Any) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _layers() -> Any:
    from keras import layers

    return layers


def pad(ctx: Context, x: Value, pads: tuple[tuple[int, int], tuple[int, int]],
        value: float = 0.0) -> Value:
    """Pad an NHWC value by ((top, bottom), (left, right)) (a no-op when all zero)."""
    from codenn_convert.twins.fx_layers import Pad2D

    if not any(p for side in pads for p in side):
        return x
    return with_keras(x, Pad2D(pads, value, name=ctx.op_name(".pad"))(x.keras))


# ------------------------------------------------------------------------------ convs


@dataclass(frozen=True)
class ConvArgs:
    """A 2-d convolution, from an ``nn.Conv2d`` or from ``F.conv2d``'s arguments."""

    out_channels: int
    in_channels: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: Any
    dilation: tuple[int, int]
    groups: int
    bias: bool

    @classmethod
    def of(cls, m: Any) -> ConvArgs:
        return cls(m.out_channels, m.in_channels, pair(m.kernel_size), pair(m.stride),
                   m.padding, pair(m.dilation), int(m.groups), m.bias is not None)


def _conv_pads(a: ConvArgs) -> tuple[tuple[int, int], tuple[int, int]]:
    if a.padding == "valid":
        return (0, 0), (0, 0)
    if a.padding == "same":  # torch: total = d*(k-1), the extra one at the end
        totals = [d * (k - 1) for d, k in zip(a.dilation, a.kernel, strict=True)]
        return tuple((t // 2, t - t // 2) for t in totals)  # type: ignore[return-value]
    ph, pw = pair(a.padding)
    return (ph, ph), (pw, pw)


def conv(ctx: Context, path: str, a: ConvArgs, x: Value) -> Value:
    """A conv named ``path``: Conv2D, DepthwiseConv2D or GroupedConv2D, 'valid' after
    explicit padding (never Keras' asymmetric 'same', never ``Conv2D(groups=g)``)."""
    from codenn_convert.models.common.keras_layers import Subsample2D
    from codenn_convert.twins.fx_layers import GroupedConv2D

    layers = _layers()
    x = pad(ctx, nhwc(ctx, x), _conv_pads(a))
    if a.groups > 1 and a.groups == a.in_channels:
        # TF's depthwise kernel refuses unequal strides: stride 1, then subsample.
        equal = a.stride[0] == a.stride[1]
        layer = ctx.module_layer(path, lambda: layers.DepthwiseConv2D(
            a.kernel, strides=a.stride if equal else (1, 1), padding="valid",
            depth_multiplier=a.out_channels // a.in_channels, dilation_rate=a.dilation,
            use_bias=a.bias, depthwise_initializer=ZEROS, name=path))
        y = layer(x.keras)
        if not equal:
            y = Subsample2D(a.stride, name=ctx.op_name(".subsample"))(y)
        return with_keras(x, y)
    if a.groups > 1:
        layer = ctx.module_layer(path, lambda: GroupedConv2D(
            a.out_channels, a.kernel, a.groups, a.stride, a.dilation, a.bias, name=path))
    else:
        layer = ctx.module_layer(path, lambda: layers.Conv2D(
            a.out_channels, a.kernel, strides=a.stride, padding="valid",
            dilation_rate=a.dilation, use_bias=a.bias, kernel_initializer=ZEROS, name=path))
    return with_keras(x, layer(x.keras))


@module_rule("torch.nn.Conv2d")
def _conv_module(ctx: Context, m: Any, x: Value) -> Value:
    if m.padding_mode != "zeros":
        raise ctx.fail(f"Conv2d padding_mode={m.padding_mode!r} at {ctx.node.target}")
    return conv(ctx, ctx.node.target, ConvArgs.of(m), x)


# ---------------------------------------------------------------- normalisation, dense


def batch_norm(ctx: Context, path: str, m: Any, x: Value, eps: float) -> Value:
    """BatchNormalization over torch axis 1, eps explicit, momentum in Keras' meaning."""
    if x.rank < 2:
        raise ctx.fail(f"BatchNorm of a rank-{x.rank} tensor at {path}")
    x = nhwc(ctx, x) if x.rank == 4 else channels_last(ctx, x)
    momentum = 1.0 - (m.momentum if m.momentum is not None else 0.1)
    layer = ctx.module_layer(path, lambda: _layers().BatchNormalization(
        axis=-1, epsilon=eps, momentum=momentum, center=m.affine, scale=m.affine, name=path))
    return with_keras(x, layer(x.keras))


@module_rule("torch.nn.BatchNorm2d", "torch.nn.BatchNorm1d")
def _batch_norm_module(ctx: Context, m: Any, x: Value) -> Value:
    return batch_norm(ctx, ctx.node.target, m, x, m.eps)


def layer_norm(ctx: Context, path: str, shape: tuple[int, ...], eps: float, affine: bool,
               x: Value) -> Value:
    """LayerNormalization over the last torch axis (channels-last), eps explicit."""
    if len(shape) != 1:
        raise ctx.fail(f"LayerNorm over {len(shape)} axes at {path}")
    x = channels_last(ctx, x)
    layer = ctx.module_layer(path, lambda: _layers().LayerNormalization(
        axis=-1, epsilon=eps, center=affine, scale=affine, name=path))
    return with_keras(x, layer(x.keras))


@module_rule("torch.nn.LayerNorm")
def _layer_norm_module(ctx: Context, m: Any, x: Value) -> Value:
    return layer_norm(ctx, ctx.node.target, tuple(m.normalized_shape), m.eps,
                      m.elementwise_affine, x)


def dense(ctx: Context, path: str, units: int, bias: bool, x: Value) -> Value:
    """Dense on the last torch axis; a flatten kept in H,W,C order is taken as it is (the
    mapper reorders the kernel: the first-dense-after-flatten rule)."""
    x = x if x.flat and x.rank == 2 else channels_last(ctx, x)
    layer = ctx.module_layer(path, lambda: _layers().Dense(
        units, use_bias=bias, kernel_initializer=ZEROS, name=path))
    return Value(layer(x.keras), x.perm)


@module_rule("torch.nn.Linear")
def _linear_module(ctx: Context, m: Any, x: Value) -> Value:
    return dense(ctx, ctx.node.target, m.out_features, m.bias is not None, x)


@module_rule("codenn_convert.models.common.torch_layers.KerasNormalization")
def _keras_normalization(ctx: Context, m: Any, x: Value) -> Value:
    from codenn_convert.models.common.keras_layers import SyncedNormalization

    x = nhwc(ctx, x)
    path = ctx.node.target
    layer = ctx.module_layer(path, lambda: SyncedNormalization(axis=-1, name=path))
    return with_keras(x, layer(x.keras))


# -------------------------------------------------------------------------- pooling


def max_pool(ctx: Context, kernel: Any, stride: Any, padding: Any, ceil_mode: bool,
             x: Value) -> Value:
    """MaxPool2d: -inf padding (torch's), ``ceil_mode`` as extra -inf rows/columns."""
    x = nhwc(ctx, x)
    k, s, p = pair(kernel), pair(stride or kernel), pair(padding)
    hw = x.keras.shape[1:3]
    extra = [_ceil_extra(int(n), k[i], s[i], p[i]) if ceil_mode else 0
             for i, n in enumerate(hw)]
    x = pad(ctx, x, ((p[0], p[0] + extra[0]), (p[1], p[1] + extra[1])), float("-inf"))
    k_ = _layers().MaxPooling2D(k, strides=s, padding="valid", name=ctx.op_name())(x.keras)
    return with_keras(x, k_)


def _ceil_extra(n: int, k: int, s: int, p: int) -> int:
    """Rows torch's ``ceil_mode`` adds at the end (a window must start inside the input
    or the left padding)."""
    out = math.ceil((n + 2 * p - k) / s) + 1
    if (out - 1) * s >= n + p:
        out -= 1
    return max(0, (out - 1) * s + k - (n + 2 * p))


def avg_pool(ctx: Context, kernel: Any, stride: Any, padding: Any, ceil_mode: bool,
             count_include_pad: bool, x: Value) -> Value:
    """AvgPool2d: zero padding + 'valid' counts the padding (torch's default); without
    ``count_include_pad``, stride 1 and k = 2p + 1 is Keras' 'same'."""
    x = nhwc(ctx, x)
    k, s, p = pair(kernel), pair(stride or kernel), pair(padding)
    hw = [int(n) for n in x.keras.shape[1:3]]
    if ceil_mode and any(_ceil_extra(n, k[i], s[i], p[i]) for i, n in enumerate(hw)):
        raise ctx.fail("AvgPool2d with ceil_mode adding a partial window")
    layers = _layers()
    if p != (0, 0) and not count_include_pad:
        if s != (1, 1) or k != (2 * p[0] + 1, 2 * p[1] + 1):
            raise ctx.fail("AvgPool2d(count_include_pad=False) other than stride 1, k=2p+1")
        return with_keras(x, layers.AveragePooling2D(k, strides=1, padding="same",
                                                     name=ctx.op_name())(x.keras))
    x = pad(ctx, x, ((p[0], p[0]), (p[1], p[1])))
    return with_keras(x, layers.AveragePooling2D(k, strides=s, padding="valid",
                                                 name=ctx.op_name())(x.keras))


def adaptive_avg_pool(ctx: Context, output_size: Any, x: Value) -> Value:
    """torch's exact adaptive bins (:class:`AdaptiveAvgPool2D`)."""
    from codenn_convert.models.common.keras_layers import AdaptiveAvgPool2D

    x = nhwc(ctx, x)
    size = (output_size, output_size) if isinstance(output_size, int) else output_size
    hw = x.keras.shape[1:3]
    size = tuple(int(hw[i]) if o is None else int(o) for i, o in enumerate(size))
    return with_keras(x, AdaptiveAvgPool2D(size, name=ctx.op_name())(x.keras))


@module_rule("torch.nn.MaxPool2d")
def _max_pool_module(ctx: Context, m: Any, x: Value) -> Value:
    if pair(m.dilation) != (1, 1) or m.return_indices:
        raise ctx.fail("MaxPool2d with dilation or return_indices")
    return max_pool(ctx, m.kernel_size, m.stride, m.padding, m.ceil_mode, x)


@module_rule("torch.nn.AvgPool2d")
def _avg_pool_module(ctx: Context, m: Any, x: Value) -> Value:
    if m.divisor_override is not None:
        raise ctx.fail("AvgPool2d with divisor_override")
    return avg_pool(ctx, m.kernel_size, m.stride, m.padding, m.ceil_mode,
                    m.count_include_pad, x)


@module_rule("torch.nn.AdaptiveAvgPool2d")
def _adaptive_module(ctx: Context, m: Any, x: Value) -> Value:
    return adaptive_avg_pool(ctx, m.output_size, x)


# --------------------------------------------------------------- weightless, shape-free


def activation(ctx: Context, kind: str, x: Value) -> Value:
    """An element-wise activation layer (torch class name, see ``ACTIVATIONS``)."""
    from codenn_convert.models.common.keras_layers import ACTIVATIONS

    table = {**ACTIVATIONS, "Tanh": lambda name: _layers().Activation("tanh", name=name)}
    return with_keras(x, table[kind](ctx.op_name())(x.keras))


def _activation_rule(kind: str) -> ModuleRule:
    return lambda ctx, m, x: activation(ctx, kind, x)


for _kind in ("ReLU", "ReLU6", "Hardswish", "Hardsigmoid", "SiLU", "Sigmoid", "Tanh"):
    module_rule(f"torch.nn.{_kind}")(_activation_rule(_kind))


@module_rule("torch.nn.GELU")
def _gelu(ctx: Context, m: Any, x: Value) -> Value:
    if m.approximate != "none":
        raise ctx.fail("GELU(approximate='tanh')")
    return activation(ctx, "GELU", x)


@module_rule("torch.nn.Identity", "torch.nn.Dropout", "torch.nn.Dropout2d")
def _identity(ctx: Context, m: Any, x: Value) -> Value:
    return x  # eval mode: dropout is the identity, and no random op reaches a graph


def flatten(ctx: Context, x: Value, start: int = 0, end: int = -1) -> Value:
    """``torch.flatten``. An NHWC map flattened from axis 1 to a vector is a Keras
    ``Flatten`` (H,W,C order, marked ``flat``: a Linear takes it through the mapper's
    first-dense-after-flatten rule); anything else is reshaped in torch's own order."""
    layers = _layers()
    start, end = normal_dim(start, x.rank), normal_dim(end, x.rank)
    if start == end or x.rank < 2:
        return x
    if start == 0:
        raise ctx.fail("flatten over the batch axis")
    if (start, end, x.perm, x.flat) == (1, 3, NHWC, None):
        h, w, c = (int(d) for d in x.keras.shape[1:])
        k = layers.Flatten(name=ctx.op_name())(x.keras)
        return Value(k, (0, 1), (h, w, c) if h * w > 1 else None)
    x = identity_perm(ctx, x)
    shape = ctx.out_shape()
    return Value(layers.Reshape(shape[1:], name=ctx.op_name())(x.keras),
                 tuple(range(len(shape))))


def softmax(ctx: Context, x: Value, dim: int | None) -> Value:
    """Softmax over torch axis ``dim``, i.e. the Keras axis holding it."""
    if dim is None:
        raise ctx.fail("softmax without dim")
    x = unflatten(ctx, x)
    axis = x.perm.index(normal_dim(dim, x.rank))
    return with_keras(x, _layers().Softmax(axis=axis, name=ctx.op_name())(x.keras))


@module_rule("torch.nn.Flatten")
def _flatten_module(ctx: Context, m: Any, x: Value) -> Value:
    return flatten(ctx, x, m.start_dim, m.end_dim)


@module_rule("torch.nn.Softmax")
def _softmax_module(ctx: Context, m: Any, x: Value) -> Value:
    return softmax(ctx, x, m.dim)
