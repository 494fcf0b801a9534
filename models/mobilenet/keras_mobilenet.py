"""MobileNetV2/V3 in Keras 3 (NHWC). Layer names are the torch module paths
(``features.2.conv.1.0``); weightless helpers are ``<torch path>.<role>``.

Depthwise convs are ``DepthwiseConv2D`` (never ``Conv2D(groups=C)``, which Keras 3 runs
through XLA on TF CPU and tf2onnx cannot export). Every padded window pads explicitly with
``ZeroPadding2D`` and runs 'valid': symmetric like torch, or, for the keras.applications
variants, TF 'same' (their ``correct_pad``: one pixel less before than after at even sizes).
"""

from __future__ import annotations

from typing import Any

import keras
from keras import layers

from codenn_convert.models.common.keras_layers import activation, batch_norm
from codenn_convert.models.mobilenet import Block, NetConfig, config, tf_same_pads


def _pad(x: Any, kernel: int, stride: int, cfg: NetConfig, name: str) -> Any:
    if cfg.tf_padding:
        pads = tuple(tf_same_pads(int(x.shape[i]), kernel, stride) for i in (1, 2))
    else:
        pads = (((kernel - 1) // 2,) * 2,) * 2
    return x if pads == ((0, 0), (0, 0)) else layers.ZeroPadding2D(pads, name=f"{name}.pad")(x)


def conv_bn_act(x: Any, out: int, kernel: int, cfg: NetConfig, *, name: str, stride: int = 1,
                depthwise: bool = False, act: str | None = None) -> Any:
    """torchvision's ``Conv2dNormActivation`` at ``name``: ``name.0`` conv, ``name.1`` BN,
    then the activation (``name.2``) if any."""
    x = _pad(x, kernel, stride, cfg, f"{name}.0")
    if depthwise:
        x = layers.DepthwiseConv2D(kernel, strides=stride, padding="valid", use_bias=False,
                                   name=f"{name}.0")(x)
    else:
        x = layers.Conv2D(out, kernel, strides=stride, padding="valid", use_bias=False,
                          name=f"{name}.0")(x)
    x = bn(x, cfg, f"{name}.1")
    return activation(x, act, name=f"{name}.2") if act else x


def bn(x: Any, cfg: NetConfig, name: str) -> Any:
    return batch_norm(x, name=name, eps=cfg.bn_eps, momentum=1.0 - cfg.bn_momentum)


def squeeze_excitation(x: Any, squeeze: int, *, name: str) -> Any:
    """avgpool -> 1x1 conv (fc1) -> ReLU -> 1x1 conv (fc2) -> Hardsigmoid -> multiply."""
    channels = int(x.shape[-1])
    s = layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}.avgpool")(x)
    s = layers.Conv2D(squeeze, 1, name=f"{name}.fc1")(s)
    s = activation(s, "ReLU", name=f"{name}.activation")
    s = layers.Conv2D(channels, 1, name=f"{name}.fc2")(s)
    s = activation(s, "Hardsigmoid", name=f"{name}.scale_activation")
    return layers.Multiply(name=f"{name}.mul")([s, x])


def inverted_residual(x: Any, b: Block, cfg: NetConfig, *, name: str) -> Any:
    """One block; its layers are ``name.conv.<i>`` (V2) or ``name.block.<i>`` (V3)."""
    seq = f"{name}.{'conv' if cfg.version == 2 else 'block'}"
    i, y = 0, x
    if b.expanded != b.inp:
        y = conv_bn_act(y, b.expanded, 1, cfg, name=f"{seq}.0", act=b.act)
        i += 1
    y = conv_bn_act(y, b.expanded, b.kernel, cfg, name=f"{seq}.{i}", stride=b.stride,
                    depthwise=True, act=b.act)
    i += 1
    if b.se:
        y = squeeze_excitation(y, b.se, name=f"{seq}.{i}")
        i += 1
    if cfg.version == 2:
        y = layers.Conv2D(b.out, 1, use_bias=False, name=f"{seq}.{i}")(y)
        y = bn(y, cfg, f"{seq}.{i + 1}")
    else:
        y = conv_bn_act(y, b.out, 1, cfg, name=f"{seq}.{i}")
    return layers.Add(name=f"{name}.add")([x, y]) if b.residual else y


def _head(x: Any, cfg: NetConfig, num_classes: int) -> Any:
    """Global average pool and classifier (torch's flatten of a 1x1 map is order-free)."""
    x = layers.GlobalAveragePooling2D(keepdims=True, name="avgpool")(x)
    if cfg.head is None:  # V2: Dropout, Linear
        x = layers.Flatten(name="flatten")(x)
        x = layers.Dropout(cfg.dropout, name="classifier.0")(x)
        return layers.Dense(num_classes, name="classifier.1")(x)
    hidden = layers.Conv2D(cfg.head, 1, name="classifier.0") if cfg.conv_head else \
        layers.Dense(cfg.head, name="classifier.0")
    x = hidden(x if cfg.conv_head else layers.Flatten(name="flatten")(x))
    x = activation(x, "Hardswish", name="classifier.1")
    x = layers.Dropout(cfg.dropout, name="classifier.2")(x)
    if cfg.conv_head:
        x = layers.Conv2D(num_classes, 1, name="classifier.3")(x)
        return layers.Flatten(name="flatten")(x)
    return layers.Dense(num_classes, name="classifier.3")(x)


def build_mobilenet(cfg: NetConfig, *, input_size: tuple[int, int], num_classes: int = 1000,
                    name: str = "mobilenet") -> keras.Model:
    """The Keras twin of the torch :class:`MobileNet` for ``cfg`` and a fixed (H, W)."""
    inputs = keras.Input((*input_size, 3), name="input")
    x = conv_bn_act(inputs, cfg.stem, 3, cfg, name="features.0", stride=2, act=cfg.stem_act)
    for i, b in enumerate(cfg.blocks, start=1):
        x = inverted_residual(x, b, cfg, name=f"features.{i}")
    x = conv_bn_act(x, cfg.last_conv, 1, cfg, name=f"features.{len(cfg.blocks) + 1}",
                    act=cfg.last_act)
    return keras.Model(inputs, _head(x, cfg, num_classes), name=name)


def mobilenet(*, arch: str, input_size: tuple[int, int] = (224, 224), num_classes: int = 1000,
              width_mult: float = 1.0, keras_style: bool = False, dropout: float = 0.2
              ) -> keras.Model:
    """Build the Keras twin of ``arch`` for a fixed ``input_size`` (H, W)."""
    cfg = config(arch, width_mult=width_mult, keras_style=keras_style, dropout=dropout)
    return build_mobilenet(cfg, input_size=input_size, num_classes=num_classes, name=arch)
