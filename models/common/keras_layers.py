"""Keras layers and helpers that reproduce PyTorch semantics exactly (NHWC).

TensorFlow's ``'same'`` padding is asymmetric at stride 2 (it pads (0, 1) where torch pads
(1, 1)), so every helper here pads explicitly and then uses ``'valid'``.
"""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np
from keras import layers, ops


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def conv2d(
    x: Any,
    filters: int,
    kernel_size: int | tuple[int, int],
    *,
    name: str,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    use_bias: bool = True,
) -> Any:
    """``nn.Conv2d`` with torch's symmetric padding: ``ZeroPadding2D`` then a ``'valid'`` conv."""
    pad = _pair(padding)
    if pad != (0, 0):
        x = layers.ZeroPadding2D(pad, name=f"{name}.pad")(x)
    return layers.Conv2D(
        filters, _pair(kernel_size), strides=_pair(stride), padding="valid",
        use_bias=use_bias, name=name,
    )(x)


def batch_norm(x: Any, *, name: str, eps: float = 1e-5, momentum: float = 0.9) -> Any:
    """``nn.BatchNorm2d``: eps set explicitly (Keras defaults to 1e-3, torch to 1e-5).

    Keras momentum is the weight of the *old* statistic, torch's that of the new one, so
    torch's 0.1 is Keras's 0.9 (``momentum`` here is Keras's). It only matters in training,
    but we keep the meaning.
    """
    return layers.BatchNormalization(axis=-1, epsilon=eps, momentum=momentum, name=name)(x)


@keras.saving.register_keras_serializable(package="codenn")
class ConstantPadding2D(layers.Layer):
    """Pad H and W symmetrically with a constant (``-inf`` for max-pooling, like torch)."""

    def __init__(self, padding: int | tuple[int, int], value: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.padding = _pair(padding)
        self.value = float(value)

    def call(self, x: Any) -> Any:
        ph, pw = self.padding
        return ops.pad(x, [[0, 0], [ph, ph], [pw, pw], [0, 0]], constant_values=self.value)

    def compute_output_shape(self, shape: tuple[Any, ...]) -> tuple[Any, ...]:
        n, h, w, c = shape
        ph, pw = self.padding
        return (n, None if h is None else h + 2 * ph, None if w is None else w + 2 * pw, c)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "padding": self.padding, "value": self.value}


def max_pool(
    x: Any,
    pool_size: int | tuple[int, int],
    *,
    name: str,
    stride: int | tuple[int, int] | None = None,
    padding: int | tuple[int, int] = 0,
) -> Any:
    """``nn.MaxPool2d`` (``ceil_mode=False``). Torch pads max-pools with -inf, and so do we:
    zero padding would only be equivalent on non-negative inputs."""
    pad = _pair(padding)
    if pad != (0, 0):
        x = ConstantPadding2D(pad, float("-inf"), name=f"{name}.pad")(x)
    return layers.MaxPooling2D(
        _pair(pool_size), strides=_pair(stride or pool_size), padding="valid", name=name
    )(x)


def avg_pool(
    x: Any,
    pool_size: int | tuple[int, int],
    *,
    name: str,
    stride: int | tuple[int, int] | None = None,
    padding: int | tuple[int, int] = 0,
) -> Any:
    """``nn.AvgPool2d`` with torch's default ``count_include_pad=True``: zero padding followed
    by a ``'valid'`` pool divides by the full window at the borders, as torch does."""
    pad = _pair(padding)
    if pad != (0, 0):
        x = layers.ZeroPadding2D(pad, name=f"{name}.pad")(x)
    return layers.AveragePooling2D(
        _pair(pool_size), strides=_pair(stride or pool_size), padding="valid", name=name
    )(x)


def adaptive_bins(size: int, out: int) -> list[tuple[int, int]]:
    """torch's AdaptiveAvgPool bins: start = floor(i*size/out), end = ceil((i+1)*size/out)."""
    return [(math.floor(i * size / out), math.ceil((i + 1) * size / out)) for i in range(out)]


@keras.saving.register_keras_serializable(package="codenn")
class AdaptiveAvgPool2D(layers.Layer):
    """``nn.AdaptiveAvgPool2d`` with torch's exact bins, for a statically known input size.

    When the input already has the output size (AlexNet and VGG at 224) it is the identity;
    when the size divides evenly it is a plain average pool; otherwise each output cell is the
    mean of its own (possibly overlapping) torch bin.
    """

    def __init__(self, output_size: int | tuple[int, int], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.output_size = _pair(output_size)

    def call(self, x: Any) -> Any:
        h, w = int(x.shape[1]), int(x.shape[2])
        oh, ow = self.output_size
        if (h, w) == (oh, ow):
            return x
        if h % oh == 0 and w % ow == 0:
            k = (h // oh, w // ow)
            return ops.average_pool(x, k, strides=k, padding="valid")
        rows = [
            ops.concatenate(
                [ops.mean(x[:, r0:r1, c0:c1, :], axis=(1, 2), keepdims=True)
                 for c0, c1 in adaptive_bins(w, ow)],
                axis=2,
            )
            for r0, r1 in adaptive_bins(h, oh)
        ]
        return ops.concatenate(rows, axis=1)

    def compute_output_shape(self, shape: tuple[Any, ...]) -> tuple[Any, ...]:
        return (shape[0], *self.output_size, shape[3])

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "output_size": self.output_size}


def depthwise_conv2d(
    x: Any,
    kernel_size: int | tuple[int, int],
    *,
    name: str,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    depth_multiplier: int = 1,
    use_bias: bool = True,
) -> Any:
    """``nn.Conv2d(C, C*m, k, groups=C)`` as ``DepthwiseConv2D``, padded symmetrically.

    Never ``Conv2D(groups=C)``: Keras 3 runs grouped convs on TF CPU through XLA, which
    tf2onnx cannot export ("Unsupported ops: PartitionedCall", tf2onnx#2099), and the
    depthwise layer rule (:mod:`codenn_convert.twins.rules`) keys on this layer type.
    TF's depthwise kernel refuses unequal strides (nobuco#33), so those run at stride 1 and
    keep every ``stride``-th row and column (what a strided 'valid' window computes).
    """
    pad, strides = _pair(padding), _pair(stride)
    if pad != (0, 0):
        x = layers.ZeroPadding2D(pad, name=f"{name}.pad")(x)
    equal = strides[0] == strides[1]
    x = layers.DepthwiseConv2D(
        _pair(kernel_size), strides=strides if equal else (1, 1), padding="valid",
        depth_multiplier=depth_multiplier, use_bias=use_bias, name=name,
    )(x)
    return x if equal else Subsample2D(strides, name=f"{name}.subsample")(x)


@keras.saving.register_keras_serializable(package="codenn")
class Subsample2D(layers.Layer):
    """Keep rows ``0, sh, 2 sh, ...`` and columns ``0, sw, ...`` (a strided slice)."""

    def __init__(self, strides: int | tuple[int, int], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.strides = _pair(strides)

    def call(self, x: Any) -> Any:
        sh, sw = self.strides
        return x[:, ::sh, ::sw, :]

    def compute_output_shape(self, shape: tuple[Any, ...]) -> tuple[Any, ...]:
        n, h, w, c = shape
        sh, sw = self.strides
        return (n, None if h is None else -(-h // sh), None if w is None else -(-w // sw), c)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "strides": self.strides}


@keras.saving.register_keras_serializable(package="codenn")
class HardSigmoid(layers.Layer):
    """``nn.Hardsigmoid``: torch computes ``min(max(x + 3, 0), 6) / 6``, and so do we, op for
    op (Keras 2's ``hard_sigmoid`` was ``0.2 x + 0.5``, so we never rely on the name)."""

    def call(self, x: Any) -> Any:
        return ops.divide(ops.relu6(ops.add(x, 3.0)), 6.0)

    def compute_output_shape(self, shape: Any) -> Any:
        return shape  # element-wise (stated, so Keras need not trace call to find it)


@keras.saving.register_keras_serializable(package="codenn")
class HardSwish(layers.Layer):
    """``nn.Hardswish``: torch computes ``x * min(max(x + 3, 0), 6) / 6`` left to right, i.e.
    ``(x * relu6(x + 3)) / 6``. Keras' ``hard_silu`` is ``x * (relu6(x + 3) / 6)``, which
    rounds differently (1 ulp), so this layer keeps torch's order."""

    def call(self, x: Any) -> Any:
        return ops.divide(ops.multiply(x, ops.relu6(ops.add(x, 3.0))), 6.0)

    def compute_output_shape(self, shape: Any) -> Any:
        return shape  # element-wise (stated, so Keras need not trace call to find it)


@keras.saving.register_keras_serializable(package="codenn")
class GELU(layers.Layer):
    """Exact (erf) ``nn.GELU()`` in torch's op order, ``x * 0.5 * (1 + erf(x / sqrt 2))``.

    Keras' own ``gelu`` runs TF's ``Gelu``, which is ``erfc``-based: tf2onnx passes TF's
    ``Erfc`` through, and ONNX has no such op, so the Keras export would not load. ``erf``
    maps to ONNX ``Erf``. Never the tanh approximation: ConvNeXt is trained with the exact
    form, and the two differ by ~1e-3."""

    def call(self, x: Any) -> Any:
        half = ops.multiply(x, 0.5)
        return ops.multiply(half, ops.add(ops.erf(ops.multiply(x, math.sqrt(0.5))), 1.0))

    def compute_output_shape(self, shape: Any) -> Any:
        return shape  # element-wise (stated, so Keras need not trace call to find it)


#: torch activation module name -> the Keras layer computing it (``ReLU6`` via max_value).
ACTIVATIONS: dict[str, Any] = {
    "ReLU": lambda name: layers.ReLU(name=name),
    "ReLU6": lambda name: layers.ReLU(max_value=6.0, name=name),
    "Hardswish": lambda name: HardSwish(name=name),
    "Hardsigmoid": lambda name: HardSigmoid(name=name),
    "SiLU": lambda name: layers.Activation("silu", name=name),
    "Sigmoid": lambda name: layers.Activation("sigmoid", name=name),
    "GELU": lambda name: GELU(name=name),
}


def activation(x: Any, kind: str, *, name: str) -> Any:
    """Apply torch activation ``kind`` (a key of :data:`ACTIVATIONS`) as a Keras layer."""
    return ACTIVATIONS[kind](name)(x)


@keras.saving.register_keras_serializable(package="codenn")
class ScaledResidual(layers.Layer):
    """``residual + layer_scale * branch`` with a ``(C,)`` layer scale: the Keras side of
    :class:`codenn_convert.models.common.torch_layers.ScaledResidual` (torch keeps the
    scale as ``(C, 1, 1)``). Called on ``[branch, residual]``; named after the torch block,
    so its output is the block's output. Called on one tensor it is ``layer_scale * x``
    alone (a generated twin, whose residual add is the graph's own node)."""

    def build(self, input_shape: Any) -> None:
        pair = isinstance(input_shape, list | tuple) and isinstance(input_shape[0], list | tuple)
        channels = int((input_shape[0] if pair else input_shape)[-1])
        self.layer_scale = self.add_weight(name="layer_scale", shape=(channels,),
                                           initializer=keras.initializers.Constant(1e-6))

    def call(self, inputs: Any) -> Any:
        if not isinstance(inputs, list | tuple):
            return ops.multiply(self.layer_scale, inputs)
        branch, residual = inputs
        return ops.add(ops.multiply(self.layer_scale, branch), residual)

    def compute_output_shape(self, input_shape: Any) -> Any:
        pair = isinstance(input_shape, list | tuple) and isinstance(input_shape[0], list | tuple)
        return input_shape[1] if pair else input_shape


@keras.saving.register_keras_serializable(package="codenn")
class SyncedNormalization(layers.Normalization):
    """``Normalization`` computed from its variables at call time: Keras' own layer divides by
    tensors it derives from them in ``finalize_state``, so weights set in memory would be
    ignored, and a traced graph would capture those tensors as unbound inputs, which the
    weight-free ONNX export cannot bind. The arithmetic is Keras' own."""

    def set_weights(self, weights: Any) -> None:
        super().set_weights(weights)
        self.finalize_state()

    def call(self, inputs: Any) -> Any:
        x = ops.convert_to_tensor(inputs, dtype=self.compute_dtype)
        mean = ops.cast(ops.reshape(self.adapt_mean, self._broadcast_shape), self.compute_dtype)
        var = ops.cast(ops.reshape(self.adapt_variance, self._broadcast_shape),
                       self.compute_dtype)
        return ops.divide(ops.subtract(x, mean),
                          ops.maximum(ops.sqrt(var), keras.config.epsilon()))


class ConstantNormalization(layers.Layer):
    """Keras' ``Normalization(mean=..., variance=...)`` (keras.applications ConvNeXt's
    pre-stem), with the constants written into the graph: Keras' layer keeps them as captured
    tensors, which tf2onnx leaves as unbound graph inputs. Same arithmetic, no weights."""

    def __init__(self, mean: Any, variance: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.mean = np.asarray(mean, np.float32)
        self.variance = np.asarray(variance, np.float32)

    def call(self, inputs: Any) -> Any:
        x = ops.convert_to_tensor(inputs, dtype="float32")
        scale = ops.maximum(ops.sqrt(self.variance), keras.config.epsilon())
        return ops.divide(ops.subtract(x, self.mean), scale)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "mean": self.mean.tolist(),
                "variance": self.variance.tolist()}


def layer_norm(x: Any, *, name: str, eps: float = 1e-6) -> Any:
    """``nn.LayerNorm`` over the last axis (and torchvision's ``LayerNorm2d`` over C on
    NHWC): Keras' default eps is 1e-3, torch's 1e-5, ConvNeXt's 1e-6, so it is explicit."""
    return layers.LayerNormalization(axis=-1, epsilon=eps, name=name)(x)
