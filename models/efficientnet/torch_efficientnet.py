"""EfficientNet / EfficientNetV2 in PyTorch, with torchvision's exact module tree and
state_dict keys (``features.<s>.<b>.block.<i>...``, ``classifier.1``)."""

from __future__ import annotations

import torch
from torch import nn

from codenn_convert.models.common.torch_layers import StochasticDepth
from codenn_convert.models.efficientnet import (
    VARIANTS,
    Block,
    blocks,
    head_channels,
    stem_channels,
)


class ConvNormActivation(nn.Sequential):
    """torchvision's ``Conv2dNormActivation``: conv (pad (k-1)//2, no bias), BatchNorm,
    optional SiLU."""

    def __init__(self, inp: int, out: int, kernel: int, eps: float, *, stride: int = 1,
                 groups: int = 1, act: bool = True) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(inp, out, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(out, eps=eps),
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


def _block_layers(b: Block, eps: float) -> list[nn.Module]:
    """MBConv: [expand 1x1], depthwise kxk, SE, project 1x1. FusedMBConv: fused kxk expand
    and project 1x1, or (expand ratio 1) one kxk conv with SiLU."""
    if b.kind == "fused":
        if b.expanded == b.inp:
            return [ConvNormActivation(b.inp, b.out, b.kernel, eps, stride=b.stride)]
        return [ConvNormActivation(b.inp, b.expanded, b.kernel, eps, stride=b.stride),
                ConvNormActivation(b.expanded, b.out, 1, eps, act=False)]
    out: list[nn.Module] = []
    if b.expanded != b.inp:
        out.append(ConvNormActivation(b.inp, b.expanded, 1, eps))
    out += [ConvNormActivation(b.expanded, b.expanded, b.kernel, eps, stride=b.stride,
                               groups=b.expanded),
            SqueezeExcitation(b.expanded, b.squeeze),
            ConvNormActivation(b.expanded, b.out, 1, eps, act=False)]
    return out


class MBConv(nn.Module):
    """torchvision's ``MBConv`` / ``FusedMBConv`` (same keys: ``block``, and a
    weight-free ``stochastic_depth``, the identity in eval)."""

    def __init__(self, b: Block, sd_prob: float, eps: float) -> None:
        super().__init__()
        self.use_res_connect = b.residual
        self.block = nn.Sequential(*_block_layers(b, eps))
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
                 stochastic_depth_prob: float = 0.2) -> None:
        super().__init__()
        v = VARIANTS[variant]
        stages = blocks(v)
        total = sum(len(s) for s in stages)
        layers: list[nn.Module] = [ConvNormActivation(3, stem_channels(v), 3, v.bn_eps,
                                                      stride=2)]
        done = 0
        for stage in stages:
            mods = []
            for b in stage:
                mods.append(MBConv(b, stochastic_depth_prob * done / total, v.bn_eps))
                done += 1
            layers.append(nn.Sequential(*mods))
        head = head_channels(v)
        layers.append(ConvNormActivation(stages[-1][-1].out, head, 1, v.bn_eps))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(p=v.dropout, inplace=True),
                                        nn.Linear(head, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


def efficientnet(*, variant: str, num_classes: int = 1000) -> EfficientNet:
    """Build the EfficientNet ``variant`` of :data:`VARIANTS` (random weights)."""
    return EfficientNet(variant, num_classes)


def small_residual_gamma(model: nn.Module, gen: torch.Generator) -> None:
    """Init hook: the last BatchNorm gamma of each residual block from U(0, 0.2), so 16-79
    residual blocks add trained-like small corrections instead of growing activations
    (as ResNet's hook; torchvision's trained EfficientNets have small gammas there)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, MBConv) and m.use_res_connect:
                m.block[-1][1].weight.uniform_(0.0, 0.2, generator=gen)
