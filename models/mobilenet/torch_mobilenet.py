"""MobileNetV2/V3 in PyTorch, with torchvision's exact module trees and state_dict keys
(``features.<i>.conv...`` for V2, ``features.<i>.block...`` for V3, ``classifier.<j>``).

keras.applications' variants (``keras_style``) keep the same tree: their TF 'same' padding
lives inside :class:`TFSamePadConv2d` (a ``Conv2d``, so no key moves), and V3's 1x1-conv
head replaces the ``Linear`` layers at the same indices.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from codenn_convert.models.mobilenet import Block, NetConfig, config, tf_same_pads

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "ReLU": nn.ReLU, "ReLU6": nn.ReLU6, "Hardswish": nn.Hardswish,
}


class TFSamePadConv2d(nn.Conv2d):
    """``Conv2d`` with TF 'same' padding computed from the input size (asymmetric at even
    sizes and stride 2), as keras.applications' MobileNets pad."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        top, bottom = tf_same_pads(x.shape[-2], kh, sh)
        left, right = tf_same_pads(x.shape[-1], kw, sw)
        return super().forward(F.pad(x, (left, right, top, bottom)))


class ConvNormActivation(nn.Sequential):
    """torchvision's ``Conv2dNormActivation``: conv (no bias), BatchNorm, activation."""

    def __init__(self, inp: int, out: int, kernel: int, cfg: NetConfig, *, stride: int = 1,
                 groups: int = 1, act: str | None = None) -> None:
        if cfg.tf_padding:
            conv: nn.Conv2d = TFSamePadConv2d(inp, out, kernel, stride, 0, groups=groups,
                                              bias=False)
        else:
            conv = nn.Conv2d(inp, out, kernel, stride, (kernel - 1) // 2, groups=groups,
                             bias=False)
        mods = [conv, nn.BatchNorm2d(out, eps=cfg.bn_eps, momentum=cfg.bn_momentum)]
        super().__init__(*mods, *([ACTIVATIONS[act](inplace=True)] if act else []))


class SqueezeExcitation(nn.Module):
    """torchvision.ops' ``SqueezeExcitation`` as MobileNetV3 uses it: global average pool,
    1x1 conv, ReLU, 1x1 conv, Hardsigmoid gate, multiply."""

    def __init__(self, channels: int, squeeze: int) -> None:
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.activation = nn.ReLU()
        self.scale_activation = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))
        return scale * x


def _block_layers(b: Block, cfg: NetConfig) -> list[nn.Module]:
    """The inverted residual's layers in torchvision's order (V2's project conv and BN are
    two entries, V3's one ``ConvNormActivation``)."""
    out: list[nn.Module] = []
    if b.expanded != b.inp:
        out.append(ConvNormActivation(b.inp, b.expanded, 1, cfg, act=b.act))
    out.append(ConvNormActivation(b.expanded, b.expanded, b.kernel, cfg, stride=b.stride,
                                  groups=b.expanded, act=b.act))
    if b.se:
        out.append(SqueezeExcitation(b.expanded, b.se))
    if cfg.version == 2:
        out += [nn.Conv2d(b.expanded, b.out, 1, bias=False),
                nn.BatchNorm2d(b.out, eps=cfg.bn_eps, momentum=cfg.bn_momentum)]
    else:
        out.append(ConvNormActivation(b.expanded, b.out, 1, cfg))
    return out


class InvertedResidual(nn.Module):
    """One block; its layers sit in ``conv`` (V2) or ``block`` (V3), as in torchvision."""

    def __init__(self, b: Block, cfg: NetConfig) -> None:
        super().__init__()
        self.use_res_connect = b.residual
        self.attr = "conv" if cfg.version == 2 else "block"
        setattr(self, self.attr, nn.Sequential(*_block_layers(b, cfg)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = getattr(self, self.attr)(x)
        return x + y if self.use_res_connect else y


def _classifier(cfg: NetConfig, num_classes: int) -> nn.Sequential:
    if cfg.head is None:  # V2
        return nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(cfg.last_conv, num_classes))
    if cfg.conv_head:  # keras.applications V3: conv_2 and logits are 1x1 convs with bias
        return nn.Sequential(nn.Conv2d(cfg.last_conv, cfg.head, 1), nn.Hardswish(inplace=True),
                             nn.Dropout(cfg.dropout, inplace=True),
                             nn.Conv2d(cfg.head, num_classes, 1))
    return nn.Sequential(nn.Linear(cfg.last_conv, cfg.head), nn.Hardswish(inplace=True),
                         nn.Dropout(cfg.dropout, inplace=True),
                         nn.Linear(cfg.head, num_classes))


class MobileNet(nn.Module):
    """torchvision's ``MobileNetV2`` / ``MobileNetV3``: ``features``, (``avgpool``, V3 only),
    ``classifier``."""

    def __init__(self, cfg: NetConfig, num_classes: int = 1000) -> None:
        super().__init__()
        self.cfg = cfg
        last_in = cfg.blocks[-1].out
        self.features = nn.Sequential(
            ConvNormActivation(3, cfg.stem, 3, cfg, stride=2, act=cfg.stem_act),
            *(InvertedResidual(b, cfg) for b in cfg.blocks),
            ConvNormActivation(last_in, cfg.last_conv, 1, cfg, act=cfg.last_act),
        )
        if cfg.version == 3:
            self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = _classifier(cfg, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = F.adaptive_avg_pool2d(x, 1) if self.cfg.version == 2 else self.avgpool(x)
        if self.cfg.conv_head:
            return torch.flatten(self.classifier(x), 1)
        return self.classifier(torch.flatten(x, 1))


def mobilenet(*, arch: str, num_classes: int = 1000, width_mult: float = 1.0,
              keras_style: bool = False, dropout: float = 0.2) -> MobileNet:
    """Build ``arch`` (random weights). ``width_mult`` is torchvision's V2 ``width_mult``
    (V3's private ``_width_mult``) or, with ``keras_style``, keras.applications' ``alpha``."""
    if not (math.isfinite(width_mult) and width_mult > 0):
        raise ValueError(f"width_mult must be a positive number, got {width_mult}")
    return MobileNet(config(arch, width_mult=width_mult, keras_style=keras_style,
                            dropout=dropout), num_classes)
