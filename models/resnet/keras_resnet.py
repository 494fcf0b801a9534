"""ResNet in Keras 3 (NHWC). Layer names are the torch module paths (``layer1.0.conv1``).

Every padded conv and the stem max-pool pad explicitly and then run ``'valid'``: TF's
``'same'`` pads a stride-2 window asymmetrically ((2, 3) for the 7x7 stem, (0, 1) for a 3x3)
where torch pads symmetrically, which would shift every downsampled map by a pixel.
Weightless helper layers are named ``<torch path>.<role>``; the mapper ignores them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
from keras import layers

from codenn_convert.models.common.keras_layers import batch_norm, conv2d, max_pool
from codenn_convert.models.resnet import (
    EXPANSION,
    STAGE_PLANES,
    STEM_CHANNELS,
    TORCHVISION_STYLE,
    VARIANTS,
    BlockKind,
    ResNetStyle,
)


def _shortcut(x: Any, out_channels: int, stride: int, style: ResNetStyle, *, name: str) -> Any:
    """Identity, or torchvision's ``downsample`` (1x1 conv with the stride, then BN).

    A 1x1/2 'valid' conv samples pixels 0, 2, 4, ... exactly like torch's unpadded one.
    """
    if stride == 1 and int(x.shape[-1]) == out_channels:
        return x
    x = conv2d(x, out_channels, 1, stride=stride, use_bias=style.conv_bias,
               name=f"{name}.downsample.0")
    return batch_norm(x, name=f"{name}.downsample.1", eps=style.bn_eps)


def basic_block(x: Any, planes: int, stride: int, style: ResNetStyle, *, name: str) -> Any:
    """``BasicBlock``: conv3x3 (stride) - BN - ReLU - conv3x3 - BN, plus the shortcut."""
    bias, eps = style.conv_bias, style.bn_eps
    y = conv2d(x, planes, 3, stride=stride, padding=1, use_bias=bias, name=f"{name}.conv1")
    y = batch_norm(y, name=f"{name}.bn1", eps=eps)
    y = layers.ReLU(name=f"{name}.relu_1")(y)
    y = conv2d(y, planes, 3, padding=1, use_bias=bias, name=f"{name}.conv2")
    y = batch_norm(y, name=f"{name}.bn2", eps=eps)
    shortcut = _shortcut(x, planes * EXPANSION["basic"], stride, style, name=name)
    y = layers.Add(name=f"{name}.add")([y, shortcut])
    return layers.ReLU(name=f"{name}.relu_out")(y)


def bottleneck_block(x: Any, planes: int, stride: int, style: ResNetStyle, *, name: str
                     ) -> Any:
    """``Bottleneck``: conv1x1 - conv3x3 - conv1x1 (x expansion), BN after each, ReLU after
    the first two, plus the shortcut. The stride sits on the 3x3 (v1.5) or, with
    ``style.stride_in_1x1``, on the first 1x1 (v1: unpadded, so it samples 0, 2, 4, ...)."""
    bias, eps = style.conv_bias, style.bn_eps
    s1, s3 = (stride, 1) if style.stride_in_1x1 else (1, stride)
    out_channels = planes * EXPANSION["bottleneck"]
    y = conv2d(x, planes, 1, stride=s1, use_bias=bias, name=f"{name}.conv1")
    y = batch_norm(y, name=f"{name}.bn1", eps=eps)
    y = layers.ReLU(name=f"{name}.relu_1")(y)
    y = conv2d(y, planes, 3, stride=s3, padding=1, use_bias=bias, name=f"{name}.conv2")
    y = batch_norm(y, name=f"{name}.bn2", eps=eps)
    y = layers.ReLU(name=f"{name}.relu_2")(y)
    y = conv2d(y, out_channels, 1, use_bias=bias, name=f"{name}.conv3")
    y = batch_norm(y, name=f"{name}.bn3", eps=eps)
    shortcut = _shortcut(x, out_channels, stride, style, name=name)
    y = layers.Add(name=f"{name}.add")([y, shortcut])
    return layers.ReLU(name=f"{name}.relu_out")(y)


BLOCKS: dict[BlockKind, Callable[..., Any]] = {
    "basic": basic_block,
    "bottleneck": bottleneck_block,
}


def build_resnet(
    block: BlockKind,
    stages: tuple[int, int, int, int],
    *,
    input_size: tuple[int, int],
    num_classes: int = 1000,
    style: ResNetStyle = TORCHVISION_STYLE,
    name: str = "resnet",
) -> keras.Model:
    """The Keras twin of torchvision's ``ResNet(block, layers)`` for a fixed (H, W)."""
    make_block = BLOCKS[block]
    inputs = keras.Input((*input_size, 3), name="input")
    x = conv2d(inputs, STEM_CHANNELS, 7, stride=2, padding=3, use_bias=style.conv_bias,
               name="conv1")
    x = batch_norm(x, name="bn1", eps=style.bn_eps)
    x = layers.ReLU(name="relu")(x)
    x = max_pool(x, 3, stride=2, padding=1, name="maxpool")  # pads with -inf, like torch
    for i, (planes, blocks) in enumerate(zip(STAGE_PLANES, stages, strict=True)):
        for j in range(blocks):
            # The first block of every stage but layer1 halves H and W.
            stride = 2 if i > 0 and j == 0 else 1
            x = make_block(x, planes, stride, style, name=f"layer{i + 1}.{j}")
    # torch's AdaptiveAvgPool2d((1, 1)) is the mean over all pixels. The flattened 1x1 map has
    # the same order in NCHW and NHWC, so ``fc`` maps as a plain Dense.
    x = layers.GlobalAveragePooling2D(keepdims=True, name="avgpool")(x)
    x = layers.Flatten(name="flatten")(x)
    outputs = layers.Dense(num_classes, name="fc")(x)
    return keras.Model(inputs, outputs, name=name)


def resnet(
    *,
    variant: str,
    input_size: tuple[int, int] = (224, 224),
    num_classes: int = 1000,
    stride_in_1x1: bool = False,
    conv_bias: bool = False,
    bn_eps: float = 1e-5,
) -> keras.Model:
    """Build the Keras twin of the ResNet ``variant`` of :data:`VARIANTS` for a fixed
    ``input_size`` (H, W); the style options default to torchvision's."""
    spec = VARIANTS[variant]
    style = ResNetStyle(stride_in_1x1=stride_in_1x1, conv_bias=conv_bias, bn_eps=bn_eps)
    return build_resnet(spec.block, spec.layers, input_size=input_size,
                        num_classes=num_classes, style=style, name=variant)
