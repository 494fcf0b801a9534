"""EfficientNet / EfficientNetV2 in PyTorch, with torchvision's exact module tree and
state_dict keys (``features.<s>.<b>.block.<i>...``, ``classifier.1``)."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from codenn_convert.models.common.torch_layers import (
    ChannelScale,
    KerasNormalization,
    Rescaling,
    StochasticDepth,
)
from codenn_convert.models.efficientnet import (
    IMAGENET_STDDEV_RGB,
    KERAS_EPSILON,
    TORCHVISION_STYLE,
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


class TFSamePadConv2d(nn.Conv2d):
    """``Conv2d`` padded like TF 'same' from the input size (keras.applications'
    ``correct_pad`` before a stride-2 conv: asymmetric at even sizes)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        top, bottom = tf_same_pads(x.shape[-2], kh, sh)
        left, right = tf_same_pads(x.shape[-1], kw, sw)
        return super().forward(F.pad(x, (left, right, top, bottom)))


class ConvNormActivation(nn.Sequential):
    """torchvision's ``Conv2dNormActivation``: conv (pad (k-1)//2, no bias), BatchNorm,
    optional SiLU. With ``tf_padding`` a stride-2 conv pads TF's way (same keys)."""

    def __init__(self, inp: int, out: int, kernel: int, norm: _Norm, *, stride: int = 1,
                 groups: int = 1, act: bool = True) -> None:
        conv_type = TFSamePadConv2d if norm.tf_padding and stride > 1 else nn.Conv2d
        pad = 0 if conv_type is TFSamePadConv2d else (kernel - 1) // 2
        layers: list[nn.Module] = [
            conv_type(inp, out, kernel, stride, pad, groups=groups, bias=False),
            nn.BatchNorm2d(out, eps=norm.eps),
        ]
        super().__init__(*layers, *([nn.SiLU(inplace=True)] if act else []))


class SqueezeExcitation(nn.Module):
    """torchvision.ops' ``SqueezeExcitation`` with SiLU and a sigmoid gate: global average
    pool, 1x1 conv, SiLU, 1x1 conv, sigmoid, ``scale * x``."""

    def __init__(self, channels: int, squeeze: int) -> None:
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.activation = nn.SiLU(inplace=True)
        self.scale_activation = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))
        return scale * x


def _block_layers(b: Block, norm: _Norm) -> list[nn.Module]:
    """MBConv: [expand 1x1], depthwise kxk, SE, project 1x1. FusedMBConv: fused kxk expand
    and project 1x1, or (expand ratio 1) one kxk conv with SiLU."""
    if b.kind == "fused":
        if b.expanded == b.inp:
            return [ConvNormActivation(b.inp, b.out, b.kernel, norm, stride=b.stride)]
        return [ConvNormActivation(b.inp, b.expanded, b.kernel, norm, stride=b.stride),
                ConvNormActivation(b.expanded, b.out, 1, norm, act=False)]
    out: list[nn.Module] = []
    if b.expanded != b.inp:
        out.append(ConvNormActivation(b.inp, b.expanded, 1, norm))
    out += [ConvNormActivation(b.expanded, b.expanded, b.kernel, norm, stride=b.stride,
                               groups=b.expanded),
            SqueezeExcitation(b.expanded, b.squeeze),
            ConvNormActivation(b.expanded, b.out, 1, norm, act=False)]
    return out


class MBConv(nn.Module):
    """torchvision's ``MBConv`` / ``FusedMBConv`` (same keys: ``block``, and a
    weight-free ``stochastic_depth``, the identity in eval)."""

    def __init__(self, b: Block, sd_prob: float, norm: _Norm) -> None:
        super().__init__()
        self.use_res_connect = b.residual
        self.block = nn.Sequential(*_block_layers(b, norm))
        self.stochastic_depth = StochasticDepth(sd_prob, "row")
        self.out_channels = b.out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.block(x)
        if self.use_res_connect:
            result = self.stochastic_depth(result)
            result += x
        return result


class EfficientNet(nn.Module):
    """torchvision's ``EfficientNet``: ``features``, ``avgpool``, ``classifier``."""

    def __init__(self, variant: str, num_classes: int = 1000,
                 style: EfficientNetStyle = TORCHVISION_STYLE,
                 stochastic_depth_prob: float = 0.2) -> None:
        super().__init__()
        v = VARIANTS[variant]
        v = replace(v, bn_eps=style.bn_eps or v.bn_eps)
        norm = _Norm(v.bn_eps, style.tf_padding)
        self.preprocessing = style.preprocessing
        if style.preprocessing:  # keras.applications: Rescaling(1/255), Normalization
            self.rescaling = Rescaling(1.0 / 255.0)
            self.normalization = KerasNormalization(3, eps=KERAS_EPSILON)
        self.stddev_scale = (
            ChannelScale([1.0 / math.sqrt(s) for s in IMAGENET_STDDEV_RGB])
            if style.imagenet_rescaling else None)
        stages = blocks(v)
        total = sum(len(s) for s in stages)
        layers: list[nn.Module] = [ConvNormActivation(3, stem_channels(v), 3, norm, stride=2)]
        done = 0
        for stage in stages:
            mods = []
            for b in stage:
                mods.append(MBConv(b, stochastic_depth_prob * done / total, norm))
                done += 1
            layers.append(nn.Sequential(*mods))
        head = head_channels(v)
        layers.append(ConvNormActivation(stages[-1][-1].out, head, 1, norm))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(p=v.dropout, inplace=True),
                                        nn.Linear(head, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.preprocessing:
            x = self.normalization(self.rescaling(x))
        if self.stddev_scale is not None:
            x = self.stddev_scale(x)
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


def efficientnet(*, variant: str, num_classes: int = 1000, tf_padding: bool = False,
                 bn_eps: float | None = None, preprocessing: bool = False,
                 imagenet_rescaling: bool = False) -> EfficientNet:
    """Build the EfficientNet ``variant`` of :data:`VARIANTS` (random weights); the style
    options (:class:`EfficientNetStyle`) default to torchvision's."""
    style = EfficientNetStyle(tf_padding=tf_padding, bn_eps=bn_eps,
                              preprocessing=preprocessing,
                              imagenet_rescaling=imagenet_rescaling)
    return EfficientNet(variant, num_classes, style)


def small_residual_gamma(model: nn.Module, gen: torch.Generator) -> None:
    """Init hook: the last BatchNorm gamma of each residual block from U(0, 0.2), so 16-79
    residual blocks add trained-like small corrections instead of growing activations
    (as ResNet's hook; torchvision's trained EfficientNets have small gammas there)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, MBConv) and m.use_res_connect:
                m.block[-1][1].weight.uniform_(0.0, 0.2, generator=gen)
