"""ConvNeXt in Keras 3 (NHWC). Layer names are the torch module paths
(``features.1.0.block.0``); weightless helpers are ``<torch path>.<role>``.

The 7x7 depthwise convs are ``DepthwiseConv2D`` (never ``Conv2D(groups=C)``: XLA on TF CPU,
and tf2onnx#2099). torch's block permutes to NHWC around its LayerNorm and Linears; Keras
is NHWC throughout, so those are a ``LayerNormalization(axis=-1)`` and plain ``Dense``
layers. Each block's layer scale and residual add are one ``ScaledResidual`` layer named
after the block, so its output is the torch block's output.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import layers

from codenn_convert.models.common.keras_layers import (
    ConstantNormalization,
    ScaledResidual,
    activation,
    conv2d,
    depthwise_conv2d,
    layer_norm,
)
from codenn_convert.models.convnext import LN_EPS, PRESTEM_MEAN, PRESTEM_VARIANCE, VARIANTS


def cn_block(x: Any, dim: int, *, name: str) -> Any:
    """torchvision's ``CNBlock`` at ``name``."""
    y = depthwise_conv2d(x, 7, padding=3, name=f"{name}.block.0")
    y = layer_norm(y, eps=LN_EPS, name=f"{name}.block.2")
    y = layers.Dense(4 * dim, name=f"{name}.block.3")(y)
    y = activation(y, "GELU", name=f"{name}.block.4")
    y = layers.Dense(dim, name=f"{name}.block.5")(y)
    return ScaledResidual(name=name)([y, x])


def convnext(*, variant: str, input_size: tuple[int, int] = (224, 224),
             num_classes: int = 1000, include_preprocessing: bool = False) -> keras.Model:
    """The Keras twin of the ConvNeXt ``variant`` for a fixed (H, W);
    ``include_preprocessing`` is keras.applications' (constants, no weights)."""
    v = VARIANTS[variant]
    inputs = keras.Input((*input_size, 3), name="input")
    x = inputs
    if include_preprocessing:
        x = ConstantNormalization(PRESTEM_MEAN, PRESTEM_VARIANCE, name="prestem")(x)
    x = conv2d(x, v.dims[0], 4, stride=4, name="features.0.0")
    x = layer_norm(x, eps=LN_EPS, name="features.0.1")
    index = 1
    for i, (dim, depth) in enumerate(zip(v.dims, v.depths, strict=True)):
        for j in range(depth):
            x = cn_block(x, dim, name=f"features.{index}.{j}")
        index += 1
        if i + 1 < len(v.dims):
            x = layer_norm(x, eps=LN_EPS, name=f"features.{index}.0")
            x = conv2d(x, v.dims[i + 1], 2, stride=2, name=f"features.{index}.1")
            index += 1
    x = layers.GlobalAveragePooling2D(keepdims=True, name="avgpool")(x)
    x = layer_norm(x, eps=LN_EPS, name="classifier.0")
    x = layers.Flatten(name="classifier.1")(x)
    outputs = layers.Dense(num_classes, name="classifier.2")(x)
    return keras.Model(inputs, outputs, name=variant)
