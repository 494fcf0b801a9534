"""EfficientNet / EfficientNetV2 in Keras 3 (NHWC). Layer names are the torch module paths
(``features.2.0.block.1.0``); weightless helpers are ``<torch path>.<role>``.

Convs pad (k - 1) // 2 on both sides explicitly and run 'valid' (TF's 'same' is asymmetric
at stride 2), unless the keras.applications style asks for exactly that asymmetry
(``tf_padding``, its ``correct_pad``). Depthwise convs are ``DepthwiseConv2D`` (never
``Conv2D(groups=C)``, which tf2onnx cannot export). The SE block's multiply and a residual
block's add carry the torch module's path, so each is compared with that module's output.
Stochastic depth is the identity at inference and has no layer here.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Any

import keras
from keras import layers

from codenn_convert.models.common.keras_layers import (
    SyncedNormalization,
    activation,
    batch_norm,
    conv2d,
    depthwise_conv2d,
)
from codenn_convert.models.efficientnet import (
    IMAGENET_STDDEV_RGB,
    VARIANTS,
    Block,
    EfficientNetStyle,
    blocks,
    head_channels,
    stem_channels,
    tf_same_pads,
)


@dataclass(frozen=True)
class _Norm:
    """What every conv block needs besides its shape: BN eps and the padding style."""

    eps: float
    tf_padding: bool


def conv_bn_act(x: Any, out: int, kernel: int, norm: _Norm, *, name: str, stride: int = 1,
                depthwise: bool = False, act: bool = True) -> Any:
    """``Conv2dNormActivation``: ``<name>.0`` conv, ``<name>.1`` BN, ``<name>.2`` SiLU."""
    pad = (kernel - 1) // 2
    if norm.tf_padding and stride > 1:  # keras.applications' correct_pad (TF 'same')
        pads = tuple(tf_same_pads(int(n), kernel, stride) for n in x.shape[1:3])
        x = layers.ZeroPadding2D(pads, name=f"{name}.0.pad")(x)
        pad = 0
    if depthwise:
        x = depthwise_conv2d(x, kernel, stride=stride, padding=pad, use_bias=False,
                             name=f"{name}.0")
    else:
        x = conv2d(x, out, kernel, stride=stride, padding=pad, use_bias=False,
                   name=f"{name}.0")
    x = batch_norm(x, name=f"{name}.1", eps=norm.eps)
    return activation(x, "SiLU", name=f"{name}.2") if act else x


def squeeze_excitation(x: Any, squeeze: int, *, name: str) -> Any:
    """torchvision's ``SqueezeExcitation`` (SiLU, sigmoid gate); the multiply is ``name``."""
    channels = int(x.shape[-1])
    s = layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}.avgpool")(x)
    s = layers.Conv2D(squeeze, 1, name=f"{name}.fc1")(s)
    s = activation(s, "SiLU", name=f"{name}.activation")
    s = layers.Conv2D(channels, 1, name=f"{name}.fc2")(s)
    s = activation(s, "Sigmoid", name=f"{name}.scale_activation")
    return layers.Multiply(name=name)([s, x])


def mbconv(x: Any, b: Block, norm: _Norm, *, name: str) -> Any:
    """``MBConv`` / ``FusedMBConv`` at ``name``; the residual add (if any) is ``name``."""
    y, i, p = x, 0, f"{name}.block"
    if b.kind == "fused":
        expands = b.expanded != b.inp  # else one kxk conv straight to b.out, with SiLU
        y = conv_bn_act(y, b.expanded if expands else b.out, b.kernel, norm, stride=b.stride,
                        name=f"{p}.0")
        if expands:
            y = conv_bn_act(y, b.out, 1, norm, act=False, name=f"{p}.1")
    else:
        if b.expanded != b.inp:
            y = conv_bn_act(y, b.expanded, 1, norm, name=f"{p}.0")
            i = 1
        y = conv_bn_act(y, b.expanded, b.kernel, norm, stride=b.stride, depthwise=True,
                        name=f"{p}.{i}")
        y = squeeze_excitation(y, b.squeeze, name=f"{p}.{i + 1}")
        y = conv_bn_act(y, b.out, 1, norm, act=False, name=f"{p}.{i + 2}")
    return layers.Add(name=name)([y, x]) if b.residual else y


def efficientnet(*, variant: str, input_size: tuple[int, int] = (224, 224),
                 num_classes: int = 1000, tf_padding: bool = False, bn_eps: float | None = None,
                 preprocessing: bool = False, imagenet_rescaling: bool = False) -> keras.Model:
    """The Keras twin of the EfficientNet ``variant`` for a fixed (H, W), in torchvision's
    style or, through the options (:class:`EfficientNetStyle`), keras.applications'."""
    style = EfficientNetStyle(tf_padding=tf_padding, bn_eps=bn_eps,
                              preprocessing=preprocessing,
                              imagenet_rescaling=imagenet_rescaling)
    v = VARIANTS[variant]
    norm = _Norm(style.bn_eps or v.bn_eps, style.tf_padding)
    inputs = keras.Input((*input_size, 3), name="input")
    x = inputs
    if style.preprocessing:  # keras.applications: raw 0..255 pixels in
        x = layers.Rescaling(1.0 / 255.0, name="rescaling")(x)
        x = SyncedNormalization(axis=-1, name="normalization")(x)
    if style.imagenet_rescaling:  # weights="imagenet" models (tensorflow#49930)
        scale = [1.0 / math.sqrt(s) for s in IMAGENET_STDDEV_RGB]
        x = layers.Rescaling(scale, name="stddev_scale")(x)
    x = conv_bn_act(x, stem_channels(v), 3, norm, stride=2, name="features.0")
    stages = blocks(v)
    for s, stage in enumerate(stages, start=1):
        for j, b in enumerate(stage):
            x = mbconv(x, b, norm, name=f"features.{s}.{j}")
    x = conv_bn_act(x, head_channels(v), 1, norm, name=f"features.{len(stages) + 1}")
    x = layers.GlobalAveragePooling2D(keepdims=True, name="avgpool")(x)
    x = layers.Flatten(name="flatten")(x)
    outputs = layers.Dense(num_classes, name="classifier.1")(x)
    # Keras maps a functional graph recursively, about one frame per layer on the longest
    # path: EfficientNetV2-L's is ~1,300 layers, past Python's default limit of 1,000.
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 20_000))
    return keras.Model(inputs, outputs, name=variant)
