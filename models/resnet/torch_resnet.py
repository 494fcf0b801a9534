"""ResNet in PyTorch, with torchvision's exact module tree and state_dict keys (v1.5 by
default; keras.applications' v1 through :class:`ResNetStyle`)."""

from __future__ import annotations

import torch
from torch import nn

from codenn_convert.models.resnet import (
    EXPANSION,
    STAGE_PLANES,
    STEM_CHANNELS,
    TORCHVISION_STYLE,
    VARIANTS,
    BlockKind,
    ResNetStyle,
)


def conv3x3(in_planes: int, out_planes: int, stride: int = 1, *, bias: bool = False
            ) -> nn.Conv2d:
    """3x3 convolution with padding 1 (torchvision: no bias, a BatchNorm follows)."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=bias)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1, *, bias: bool = False
            ) -> nn.Conv2d:
    """1x1 convolution (torchvision: no bias)."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=bias)


class BasicBlock(nn.Module):
    """Two 3x3 convs; the first one carries the stride."""

    expansion = EXPANSION["basic"]

    def __init__(
        self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
        style: ResNetStyle = TORCHVISION_STYLE,
    ) -> None:
        super().__init__()
        bias, eps = style.conv_bias, style.bn_eps
        self.conv1 = conv3x3(inplanes, planes, stride, bias=bias)
        self.bn1 = nn.BatchNorm2d(planes, eps=eps)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes, bias=bias)
        self.bn2 = nn.BatchNorm2d(planes, eps=eps)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand by ``expansion``. The 3x3 carries the stride (ResNet v1.5,
    torchvision), or the first 1x1 does (v1, keras.applications: ``style.stride_in_1x1``)."""

    expansion = EXPANSION["bottleneck"]

    def __init__(
        self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
        style: ResNetStyle = TORCHVISION_STYLE,
    ) -> None:
        super().__init__()
        bias, eps = style.conv_bias, style.bn_eps
        stride_1x1, stride_3x3 = (stride, 1) if style.stride_in_1x1 else (1, stride)
        self.conv1 = conv1x1(inplanes, planes, stride_1x1, bias=bias)
        self.bn1 = nn.BatchNorm2d(planes, eps=eps)
        self.conv2 = conv3x3(planes, planes, stride_3x3, bias=bias)
        self.bn2 = nn.BatchNorm2d(planes, eps=eps)
        self.conv3 = conv1x1(planes, planes * self.expansion, bias=bias)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion, eps=eps)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


BLOCKS: dict[BlockKind, type[BasicBlock] | type[Bottleneck]] = {
    "basic": BasicBlock,
    "bottleneck": Bottleneck,
}


class ResNet(nn.Module):
    """torchvision ``ResNet``: stem, ``layer1`` ... ``layer4``, ``avgpool``, ``fc``."""

    def __init__(
        self, block: BlockKind, layers: tuple[int, int, int, int], num_classes: int = 1000,
        style: ResNetStyle = TORCHVISION_STYLE,
    ) -> None:
        super().__init__()
        block_cls = BLOCKS[block]
        self.style = style
        self.inplanes = STEM_CHANNELS
        self.conv1 = nn.Conv2d(3, self.inplanes, kernel_size=7, stride=2, padding=3,
                               bias=style.conv_bias)
        self.bn1 = nn.BatchNorm2d(self.inplanes, eps=style.bn_eps)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block_cls, STAGE_PLANES[0], layers[0])
        self.layer2 = self._make_layer(block_cls, STAGE_PLANES[1], layers[1], stride=2)
        self.layer3 = self._make_layer(block_cls, STAGE_PLANES[2], layers[2], stride=2)
        self.layer4 = self._make_layer(block_cls, STAGE_PLANES[3], layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(STAGE_PLANES[3] * block_cls.expansion, num_classes)

    def _make_layer(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        planes: int,
        blocks: int,
        stride: int = 1,
    ) -> nn.Sequential:
        style = self.style
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                conv1x1(self.inplanes, planes * block.expansion, stride, bias=style.conv_bias),
                nn.BatchNorm2d(planes * block.expansion, eps=style.bn_eps),
            )
        stage = [block(self.inplanes, planes, stride, downsample, style)]
        self.inplanes = planes * block.expansion
        stage += [block(self.inplanes, planes, style=style) for _ in range(1, blocks)]
        return nn.Sequential(*stage)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))  # N, 64, 112, 112 at 224x224
        x = self.maxpool(x)  # N, 64, 56, 56
        x = self.layer1(x)  # N, 64 * expansion, 56, 56
        x = self.layer2(x)  # N, 128 * expansion, 28, 28
        x = self.layer3(x)  # N, 256 * expansion, 14, 14
        x = self.layer4(x)  # N, 512 * expansion, 7, 7
        x = self.avgpool(x)  # N, 512 * expansion, 1, 1
        x = torch.flatten(x, 1)
        return self.fc(x)  # N, num_classes


def resnet(
    *,
    variant: str,
    num_classes: int = 1000,
    stride_in_1x1: bool = False,
    conv_bias: bool = False,
    bn_eps: float = 1e-5,
) -> ResNet:
    """Build the ResNet ``variant`` of :data:`VARIANTS` (random weights), as timm's
    ``_create_resnet(variant, **model_args)``; the style options default to torchvision's."""
    spec = VARIANTS[variant]
    style = ResNetStyle(stride_in_1x1=stride_in_1x1, conv_bias=conv_bias, bn_eps=bn_eps)
    return ResNet(spec.block, spec.layers, num_classes=num_classes, style=style)


def small_residual_gamma(model: nn.Module, gen: torch.Generator) -> None:
    """Init hook: draw the last BatchNorm gamma of each residual branch from U(0, 0.2).

    Trained ResNets have small gammas there (torchvision even zero-inits them with
    ``zero_init_residual``), so each block adds a small correction to the identity path. With
    the generic gamma in [0.5, 1.5] activations grow through 16-50 blocks; with this they stay
    trained-like, and the parity tolerance then measures layout bugs, not overflow.
    """
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, Bottleneck):
                m.bn3.weight.uniform_(0.0, 0.2, generator=gen)
            elif isinstance(m, BasicBlock):
                m.bn2.weight.uniform_(0.0, 0.2, generator=gen)
