"""VGG in Keras 3 (NHWC). Layer names are the torch module paths (``features.N``, ...)."""

from __future__ import annotations

import keras
from keras import layers

from codenn_convert.models.common.keras_layers import AdaptiveAvgPool2D, conv2d, max_pool
from codenn_convert.models.common.keras_layers import batch_norm as batch_norm_layer
from codenn_convert.models.vgg import VARIANTS, feature_modules


def _vgg(
    cfg: str,
    *,
    batch_norm: bool,
    input_size: tuple[int, int],
    num_classes: int,
    dropout: float,
    name: str,
) -> keras.Model:
    inputs = keras.Input((*input_size, 3), name="input")
    x = inputs
    for i, (kind, channels) in enumerate(feature_modules(cfg, batch_norm=batch_norm)):
        if kind == "conv":
            x = conv2d(x, channels, 3, padding=1, name=f"features.{i}")
        elif kind == "bn":
            x = batch_norm_layer(x, name=f"features.{i}")
        elif kind == "relu":
            x = layers.ReLU(name=f"features.{i}")(x)
        else:
            x = max_pool(x, 2, stride=2, name=f"features.{i}")  # unpadded, floor mode
    x = AdaptiveAvgPool2D((7, 7), name="avgpool")(x)  # identity at 224x224
    # Flattens H, W, C; the mapper reorders classifier.0's weight from torch's C, H, W.
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(4096, name="classifier.0")(x)
    x = layers.ReLU(name="classifier.1")(x)
    x = layers.Dropout(dropout, name="classifier.2")(x)
    x = layers.Dense(4096, name="classifier.3")(x)
    x = layers.ReLU(name="classifier.4")(x)
    x = layers.Dropout(dropout, name="classifier.5")(x)
    outputs = layers.Dense(num_classes, name="classifier.6")(x)
    return keras.Model(inputs, outputs, name=name)


def vgg(
    *,
    variant: str,
    input_size: tuple[int, int] = (224, 224),
    num_classes: int = 1000,
    dropout: float = 0.5,
) -> keras.Model:
    """Build the Keras twin of the VGG ``variant`` of :data:`VARIANTS` for a fixed
    ``input_size`` (H, W)."""
    spec = VARIANTS[variant]
    return _vgg(spec.cfg, batch_norm=spec.batch_norm, input_size=input_size,
                num_classes=num_classes, dropout=dropout, name=variant)
