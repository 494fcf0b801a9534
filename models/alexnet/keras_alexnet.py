"""AlexNet in Keras 3 (NHWC). Layer names are the torch module paths."""

from __future__ import annotations

import keras
from keras import layers

from codenn_convert.models.common.keras_layers import AdaptiveAvgPool2D, conv2d, max_pool


def alexnet(
    *, input_size: tuple[int, int] = (224, 224), num_classes: int = 1000, dropout: float = 0.5
) -> keras.Model:
    """Build the Keras twin of torchvision's AlexNet for a fixed ``input_size`` (H, W)."""
    inputs = keras.Input((*input_size, 3), name="input")
    x = conv2d(inputs, 64, 11, stride=4, padding=2, name="features.0")
    x = layers.ReLU(name="features.1")(x)
    x = max_pool(x, 3, stride=2, name="features.2")
    x = conv2d(x, 192, 5, padding=2, name="features.3")
    x = layers.ReLU(name="features.4")(x)
    x = max_pool(x, 3, stride=2, name="features.5")
    x = conv2d(x, 384, 3, padding=1, name="features.6")
    x = layers.ReLU(name="features.7")(x)
    x = conv2d(x, 256, 3, padding=1, name="features.8")
    x = layers.ReLU(name="features.9")(x)
    x = conv2d(x, 256, 3, padding=1, name="features.10")
    x = layers.ReLU(name="features.11")(x)
    x = max_pool(x, 3, stride=2, name="features.12")
    x = AdaptiveAvgPool2D((6, 6), name="avgpool")(x)
    # Flattens H, W, C; the mapper reorders classifier.1's weight from torch's C, H, W.
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dropout(dropout, name="classifier.0")(x)
    x = layers.Dense(4096, name="classifier.1")(x)
    x = layers.ReLU(name="classifier.2")(x)
    x = layers.Dropout(dropout, name="classifier.3")(x)
    x = layers.Dense(4096, name="classifier.4")(x)
    x = layers.ReLU(name="classifier.5")(x)
    outputs = layers.Dense(num_classes, name="classifier.6")(x)
    return keras.Model(inputs, outputs, name="alexnet")
