"""DenseNet in PyTorch, with torchvision's exact module tree and state_dict keys
(``features.denseblock1.denselayer1.norm1.weight``, ``features.transition1.conv.weight``,
``features.norm5``, ``classifier``); keras.applications' eps through :class:`DenseNetStyle`.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from codenn_convert.models.densenet import (
    BN_SIZE,
    TORCHVISION_STYLE,
    TRANSITION_REDUCTION,
    VARIANTS,
    DenseNetStyle,
)


class DenseLayer(nn.Module):
    """torchvision ``_DenseLayer``: BN-ReLU-conv1x1 (bottleneck), BN-ReLU-conv3x3 (growth).

    It takes the block's features so far and returns only its ``growth_rate`` new channels;
    the block concatenates them (torchvision's ``bn_function``), channel order preserved.
    """

    def __init__(self, num_input_features: int, growth_rate: int, style: DenseNetStyle
                 ) -> None:
        super().__init__()
        width = BN_SIZE * growth_rate
        self.norm1 = nn.BatchNorm2d(num_input_features, eps=style.bn_eps)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(num_input_features, width, kernel_size=1, stride=1, bias=False)
        self.norm2 = nn.BatchNorm2d(width, eps=style.bn_eps)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(width, growth_rate, kernel_size=3, stride=1, padding=1,
                               bias=False)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = torch.cat(features, 1)
        x = self.conv1(self.relu1(self.norm1(x)))
        return self.conv2(self.relu2(self.norm2(x)))


class DenseBlock(nn.ModuleDict):
    """torchvision ``_DenseBlock``: ``denselayer1`` ... ``denselayerN``; every layer sees the
    concatenation of the block input and all earlier layers' outputs."""

    def __init__(self, num_layers: int, num_input_features: int, growth_rate: int,
                 style: DenseNetStyle) -> None:
        super().__init__()
        for i in range(num_layers):
            layer = DenseLayer(num_input_features + i * growth_rate, growth_rate, style)
            self.add_module(f"denselayer{i + 1}", layer)

    def forward(self, init_features: torch.Tensor) -> torch.Tensor:
        features = [init_features]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, 1)


class Transition(nn.Sequential):
    """torchvision ``_Transition``: BN-ReLU-conv1x1 (halve channels) and a 2x2/2 avg pool."""

    def __init__(self, num_input_features: int, num_output_features: int,
                 style: DenseNetStyle) -> None:
        super().__init__()
        self.add_module("norm", nn.BatchNorm2d(num_input_features, eps=style.bn_eps))
        self.add_module("relu", nn.ReLU(inplace=True))
        self.add_module("conv", nn.Conv2d(num_input_features, num_output_features,
                                          kernel_size=1, stride=1, bias=False))
        self.add_module("pool", nn.AvgPool2d(kernel_size=2, stride=2))


def _stem(num_init_features: int, style: DenseNetStyle) -> OrderedDict[str, nn.Module]:
    return OrderedDict([
        ("conv0", nn.Conv2d(3, num_init_features, kernel_size=7, stride=2, padding=3,
                            bias=False)),
        ("norm0", nn.BatchNorm2d(num_init_features, eps=style.bn_eps)),
        ("relu0", nn.ReLU(inplace=True)),
        ("pool0", nn.MaxPool2d(kernel_size=3, stride=2, padding=1)),
    ])


class DenseNet(nn.Module):
    """torchvision ``DenseNet``: ``features`` (stem, dense blocks, transitions, ``norm5``),
    then ReLU, global average pool and ``classifier``."""

    def __init__(self, growth_rate: int, block_config: tuple[int, ...], num_init_features: int,
                 num_classes: int = 1000, style: DenseNetStyle = TORCHVISION_STYLE) -> None:
        super().__init__()
        self.features = nn.Sequential(_stem(num_init_features, style))
        channels = num_init_features
        for i, num_layers in enumerate(block_config):
            block = DenseBlock(num_layers, channels, growth_rate, style)
            self.features.add_module(f"denseblock{i + 1}", block)
            channels += num_layers * growth_rate
            if i != len(block_config) - 1:
                out = channels // TRANSITION_REDUCTION
                self.features.add_module(f"transition{i + 1}", Transition(channels, out, style))
                channels = out
        self.features.add_module("norm5", nn.BatchNorm2d(channels, eps=style.bn_eps))
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.features(x)  # N, 1024, 7, 7 for DenseNet-121 at 224x224
        out = F.relu(features, inplace=True)
        out = F.adaptive_avg_pool2d(out, (1, 1))
        out = torch.flatten(out, 1)
        return self.classifier(out)  # N, num_classes


def densenet(*, variant: str, num_classes: int = 1000, bn_eps: float = 1e-5) -> DenseNet:
    """Build the DenseNet ``variant`` of :data:`VARIANTS` (random weights); ``bn_eps``
    defaults to torchvision's (keras.applications uses 1.001e-5)."""
    spec = VARIANTS[variant]
    return DenseNet(spec.growth_rate, spec.block_config, spec.num_init_features,
                    num_classes=num_classes, style=DenseNetStyle(bn_eps=bn_eps))
