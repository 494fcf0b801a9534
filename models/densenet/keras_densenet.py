"""DenseNet in Keras 3 (NHWC). Layer names are the torch module paths
(``features.denseblock1.denselayer1.conv1``); weightless helpers are named
``<torch path>.<role>`` and the mapper ignores them.

The stem pads explicitly and then runs ``'valid'``: TF's ``'same'`` pads a stride-2 window
asymmetrically ((2, 3) for the 7x7/2 conv at an even size) where torch pads symmetrically.
The dense layers' 3x3 convs are stride 1, where symmetric padding is all there is.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import layers

from codenn_convert.models.common.keras_layers import avg_pool, batch_norm, conv2d
from codenn_convert.models.densenet import (
    BN_SIZE,
    TORCHVISION_STYLE,
    TRANSITION_REDUCTION,
    VARIANTS,
    DenseNetStyle,
)


def _stem(x: Any, num_init_features: int, style: DenseNetStyle) -> Any:
    """conv0 (7x7/2, pad 3) - norm0 - relu0 - pool0 (3x3/2, pad 1)."""
    x = conv2d(x, num_init_features, 7, stride=2, padding=3, use_bias=False,
               name="features.conv0")
    x = batch_norm(x, name="features.norm0", eps=style.bn_eps)
    x = layers.ReLU(name="features.relu0")(x)
    # torch pads max-pools with -inf; zero padding is the same here only because the input is
    # a ReLU output (>= 0) and every 3x3/2 window with pad 1 holds a real pixel, so a padded 0
    # never exceeds the window's maximum. keras.applications pads this way too.
    x = layers.ZeroPadding2D(1, name="features.pool0.pad")(x)
    return layers.MaxPooling2D(3, strides=2, padding="valid", name="features.pool0")(x)


def dense_layer(x: Any, growth_rate: int, style: DenseNetStyle, *, name: str) -> Any:
    """``_DenseLayer``: norm1-relu1-conv1 (1x1 bottleneck), norm2-relu2-conv2 (3x3), whose
    ``growth_rate`` channels are appended to ``x`` (torch's ``torch.cat(features, 1)``: the
    block input first, then each layer's output in order)."""
    y = batch_norm(x, name=f"{name}.norm1", eps=style.bn_eps)
    y = layers.ReLU(name=f"{name}.relu1")(y)
    y = conv2d(y, BN_SIZE * growth_rate, 1, use_bias=False, name=f"{name}.conv1")
    y = batch_norm(y, name=f"{name}.norm2", eps=style.bn_eps)
    y = layers.ReLU(name=f"{name}.relu2")(y)
    return conv2d(y, growth_rate, 3, padding=1, use_bias=False, name=f"{name}.conv2")


def dense_block(x: Any, num_layers: int, growth_rate: int, style: DenseNetStyle, *,
                name: str) -> Any:
    """``_DenseBlock``; the last concatenation is the block's output and carries its name,
    so localisation compares it with the torch block's."""
    for i in range(num_layers):
        layer = f"{name}.denselayer{i + 1}"
        new = dense_layer(x, growth_rate, style, name=layer)
        last = i == num_layers - 1
        x = layers.Concatenate(axis=-1, name=name if last else f"{layer}.cat")([x, new])
    return x


def transition(x: Any, style: DenseNetStyle, *, name: str) -> Any:
    """``_Transition``: norm-relu-conv (1x1, channels halved) and a 2x2/2 average pool."""
    channels = int(x.shape[-1]) // TRANSITION_REDUCTION
    x = batch_norm(x, name=f"{name}.norm", eps=style.bn_eps)
    x = layers.ReLU(name=f"{name}.relu")(x)
    x = conv2d(x, channels, 1, use_bias=False, name=f"{name}.conv")
    return avg_pool(x, 2, stride=2, name=f"{name}.pool")


def build_densenet(
    growth_rate: int,
    block_config: tuple[int, ...],
    num_init_features: int,
    *,
    input_size: tuple[int, int],
    num_classes: int = 1000,
    style: DenseNetStyle = TORCHVISION_STYLE,
    name: str = "densenet",
) -> keras.Model:
    """The Keras twin of torchvision's ``DenseNet`` for a fixed (H, W)."""
    inputs = keras.Input((*input_size, 3), name="input")
    x = _stem(inputs, num_init_features, style)
    for i, num_layers in enumerate(block_config):
        x = dense_block(x, num_layers, growth_rate, style, name=f"features.denseblock{i + 1}")
        if i != len(block_config) - 1:
            x = transition(x, style, name=f"features.transition{i + 1}")
    x = batch_norm(x, name="features.norm5", eps=style.bn_eps)
    # torch's forward: F.relu, adaptive_avg_pool2d to 1x1 (the mean over all pixels), flatten.
    # A 1x1 map flattens alike in NCHW and NHWC, so ``classifier`` maps as a plain Dense.
    x = layers.ReLU(name="relu")(x)
    x = layers.GlobalAveragePooling2D(keepdims=True, name="avgpool")(x)
    x = layers.Flatten(name="flatten")(x)
    outputs = layers.Dense(num_classes, name="classifier")(x)
    return keras.Model(inputs, outputs, name=name)


def densenet(
    *,
    variant: str,
    input_size: tuple[int, int] = (224, 224),
    num_classes: int = 1000,
    bn_eps: float = 1e-5,
) -> keras.Model:
    """Build the Keras twin of the DenseNet ``variant`` of :data:`VARIANTS` for a fixed
    ``input_size`` (H, W); ``bn_eps`` defaults to torchvision's."""
    spec = VARIANTS[variant]
    return build_densenet(spec.growth_rate, spec.block_config, spec.num_init_features,
                          input_size=input_size, num_classes=num_classes,
                          style=DenseNetStyle(bn_eps=bn_eps), name=variant)
