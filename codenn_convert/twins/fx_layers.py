"""Keras layers of generated twins (:mod:`codenn_convert.twins.fx_build`) that
``keras.layers`` and :mod:`codenn_convert.models.common.keras_layers` do not have.

Each is a plain, serialisable layer; the weighted ones (:class:`GroupedConv2D`,
:class:`TorchParameter`) have layer rules in :mod:`codenn_convert.twins.rules`.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import layers, ops

#: Element-wise binary operations by torch name, in torch's operand order.
BINARY: dict[str, Any] = {
    "add": ops.add, "sub": ops.subtract, "mul": ops.multiply, "div": ops.divide,
    "maximum": ops.maximum, "minimum": ops.minimum,
}


def _apply(op: str, a: Any, b: Any) -> Any:
    return BINARY[op](a, b)


def broadcast_shape(a: Any, b: Any) -> tuple[Any, ...]:
    """numpy's broadcast of two shapes (``None``: unknown). Every layer here states its
    output shape: otherwise Keras traces ``call`` symbolically to find it, which costs
    more than the rest of building a deep twin."""
    a, b = tuple(a), tuple(b)
    n = max(len(a), len(b))
    a, b = (1,) * (n - len(a)) + a, (1,) * (n - len(b)) + b
    return tuple(y if x == 1 else x if y == 1 or y is None else y if x is None else x
                 for x, y in zip(a, b, strict=True))


@keras.saving.register_keras_serializable(package="codenn")
class GroupedConv2D(layers.Layer):
    """``nn.Conv2d(groups=g)`` (not depthwise) as g ``'valid'`` convs on channel slices,
    concatenated, then the bias: what TF and tf2onnx both handle. Never
    ``Conv2D(groups=g)``: on TF CPU it runs through XLA, which tf2onnx cannot export
    (tf2onnx#2099). Kernels ``kernel_<i>`` ``(kH, kW, I/g, O/g)``, then ``bias`` ``(O,)``."""

    def __init__(self, filters: int, kernel_size: tuple[int, int], groups: int,
                 strides: tuple[int, int] = (1, 1), dilation_rate: tuple[int, int] = (1, 1),
                 use_bias: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.filters, self.groups, self.use_bias = int(filters), int(groups), bool(use_bias)
        self.kernel_size = tuple(int(k) for k in kernel_size)
        self.strides = tuple(int(s) for s in strides)
        self.dilation_rate = tuple(int(d) for d in dilation_rate)

    def build(self, input_shape: Any) -> None:
        cin = int(input_shape[-1]) // self.groups
        shape = (*self.kernel_size, cin, self.filters // self.groups)
        self.kernels = [self.add_weight(name=f"kernel_{i}", shape=shape,
                                        initializer="zeros")
                        for i in range(self.groups)]
        self.bias = self.add_weight(name="bias", shape=(self.filters,), initializer="zeros") \
            if self.use_bias else None

    def call(self, x: Any) -> Any:
        parts = ops.split(x, self.groups, axis=-1)
        outs = [ops.conv(p, k, strides=self.strides, padding="valid",
                         dilation_rate=self.dilation_rate)
                for p, k in zip(parts, self.kernels, strict=True)]
        y = ops.concatenate(outs, axis=-1)
        return y if self.bias is None else ops.add(y, self.bias)

    def compute_output_shape(self, shape: Any) -> Any:
        n, h, w, _ = shape
        hw = [None if d is None else (d - r * (k - 1) - 1) // s + 1 for d, k, s, r in zip(
            (h, w), self.kernel_size, self.strides, self.dilation_rate, strict=True)]
        return (n, *hw, self.filters)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "filters": self.filters,
                "kernel_size": self.kernel_size, "groups": self.groups,
                "strides": self.strides, "dilation_rate": self.dilation_rate,
                "use_bias": self.use_bias}


@keras.saving.register_keras_serializable(package="codenn")
class TorchParameter(layers.Layer):
    """A torch parameter used directly by an op (``x * self.gamma``), kept in torch's
    shape (so the mapping is the identity) and brought to the NHWC operand's layout in
    ``call``: left-padded to the operand's rank (``shape``), transposed (``perm``)."""

    def __init__(self, op: str, torch_shape: tuple[int, ...], shape: tuple[int, ...],
                 perm: tuple[int, ...], param_first: bool, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.op, self.param_first = op, bool(param_first)
        self.torch_shape = tuple(int(s) for s in torch_shape)
        self.shape = tuple(int(s) for s in shape)
        self.perm = tuple(int(p) for p in perm)

    def build(self, input_shape: Any) -> None:
        self.param = self.add_weight(name="param", shape=self.torch_shape, initializer="zeros")

    def call(self, x: Any) -> Any:
        p = ops.transpose(ops.reshape(self.param, self.shape), self.perm)
        return _apply(self.op, p, x) if self.param_first else _apply(self.op, x, p)

    def compute_output_shape(self, shape: Any) -> Any:
        return broadcast_shape(shape, [self.shape[p] for p in self.perm])

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "op": self.op, "torch_shape": self.torch_shape,
                "shape": self.shape, "perm": self.perm, "param_first": self.param_first}


@keras.saving.register_keras_serializable(package="codenn")
class Elementwise(layers.Layer):
    """A torch binary op on two tensors, or on one tensor and a constant (a number or an
    array already in the tensor's Keras layout), in torch's operand order."""

    def __init__(self, op: str, constant: Any = None, constant_first: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.op, self.constant_first = op, bool(constant_first)
        self.constant = None if constant is None else np.asarray(constant, np.float32)

    def call(self, inputs: Any) -> Any:
        if self.constant is None:
            a, b = inputs
            return _apply(self.op, a, b)
        c = ops.convert_to_tensor(self.constant)
        return _apply(self.op, c, inputs) if self.constant_first else _apply(self.op, inputs, c)

    def compute_output_shape(self, shape: Any) -> Any:
        if self.constant is None:
            return broadcast_shape(shape[0], shape[1])
        return broadcast_shape(shape, self.constant.shape)

    def get_config(self) -> dict[str, Any]:
        const = None if self.constant is None else self.constant.tolist()
        return {**super().get_config(), "op": self.op, "constant": const,
                "constant_first": self.constant_first}


@keras.saving.register_keras_serializable(package="codenn")
class Pad2D(layers.Layer):
    """Pad H and W of NHWC by ``((top, bottom), (left, right))`` with ``value`` (0 or -inf)."""

    def __init__(self, padding: Any, value: float = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.padding = tuple(tuple(int(p) for p in pair) for pair in padding)
        self.value = float(value)

    def call(self, x: Any) -> Any:
        return ops.pad(x, [[0, 0], list(self.padding[0]), list(self.padding[1]), [0, 0]],
                       constant_values=self.value)

    def compute_output_shape(self, shape: Any) -> Any:
        (t, b), (left, r) = self.padding
        n, h, w, c = shape
        return (n, None if h is None else h + t + b, None if w is None else w + left + r, c)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "padding": self.padding, "value": self.value}


@keras.saving.register_keras_serializable(package="codenn")
class Reduce(layers.Layer):
    """``torch.mean`` / ``amax`` / ``sum`` over Keras ``axes``."""

    def __init__(self, op: str, axes: tuple[int, ...], keepdims: bool, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.op, self.axes, self.keepdims = op, tuple(int(a) for a in axes), bool(keepdims)

    def call(self, x: Any) -> Any:
        fn = {"mean": ops.mean, "amax": ops.max, "sum": ops.sum}[self.op]
        return fn(x, axis=self.axes, keepdims=self.keepdims)

    def compute_output_shape(self, shape: Any) -> Any:
        if self.keepdims:
            return tuple(1 if i in self.axes else d for i, d in enumerate(shape))
        return tuple(d for i, d in enumerate(shape) if i not in self.axes)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "op": self.op, "axes": self.axes,
                "keepdims": self.keepdims}


@keras.saving.register_keras_serializable(package="codenn")
class Slice(layers.Layer):
    """``x[..., start:stop, ...]`` on one Keras axis (``chunk``/``split``)."""

    def __init__(self, axis: int, start: int, stop: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.axis, self.start, self.stop = int(axis), int(start), int(stop)

    def call(self, x: Any) -> Any:
        index = [slice(None)] * len(x.shape)
        index[self.axis] = slice(self.start, self.stop)
        return x[tuple(index)]

    def compute_output_shape(self, shape: Any) -> Any:
        return tuple(self.stop - self.start if i == self.axis else d
                     for i, d in enumerate(shape))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "axis": self.axis, "start": self.start,
                "stop": self.stop}
