"""ResNet in PyTorch, with torchvision's exact module tree and state_dict keys (v1.5)."""

from __future__ import annotations

import torch
from torch import nn

from codenn_convert.models.resnet import EXPANSION, STAGE_PLANES, STEM_CHANNELS, VARIANTS, BlockKind


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution with padding 1, no bias (a BatchNorm follows)."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution, no bias."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convs; the first one carries the stride."""

    expansion = EXPANSION["basic"]

    def __init__(
        self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
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
    """1x1 reduce, 3x3 (carrying the stride: ResNet v1.5), 1x1 expand by ``expansion``."""

    expansion = EXPANSION["bottleneck"]

    def __init__(
        self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.conv1 = conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
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
        self, block: BlockKind, layers: tuple[int, int, int, int], num_classes: int = 1000
    ) -> None:
        super().__init__()
        block_cls = BLOCKS[block]
        self.inplanes = STEM_CHANNELS
        self.conv1 = nn.Conv2d(3, self.inplanes, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(self.inplanes)
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
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                conv1x1(self.inplanes, planes * block.expansion, stride),
                nn.BatchNorm2d(planes * block.expansion),
            )
        stage = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        stage += [block(self.inplanes, planes) for _ in range(1, blocks)]
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


def _resnet(name: str, num_classes: int) -> ResNet:
    variant = VARIANTS[name]
    return ResNet(variant.block, variant.layers, num_classes=num_classes)


def resnet18(*, num_classes: int = 1000) -> ResNet:
    """Build ResNet-18 (random weights)."""
    return _resnet("resnet18", num_classes)


def resnet34(*, num_classes: int = 1000) -> ResNet:
    """Build ResNet-34 (random weights)."""
    return _resnet("resnet34", num_classes)


def resnet50(*, num_classes: int = 1000) -> ResNet:
    """Build ResNet-50 (random weights)."""
    return _resnet("resnet50", num_classes)


def resnet101(*, num_classes: int = 1000) -> ResNet:
    """Build ResNet-101 (random weights)."""
    return _resnet("resnet101", num_classes)


def resnet152(*, num_classes: int = 1000) -> ResNet:
    """Build ResNet-152 (random weights)."""
    return _resnet("resnet152", num_classes)


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
