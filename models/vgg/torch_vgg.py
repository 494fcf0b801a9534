"""VGG in PyTorch, with torchvision's exact module tree and state_dict keys."""

from __future__ import annotations

import torch
from torch import nn

from codenn_convert.models.vgg import feature_modules


def make_features(cfg: str, *, batch_norm: bool) -> nn.Sequential:
    """torchvision's ``make_layers``: ``features.N`` indices follow :func:`feature_modules`."""
    modules: list[nn.Module] = []
    in_channels = 3
    for kind, channels in feature_modules(cfg, batch_norm=batch_norm):
        if kind == "conv":
            modules.append(nn.Conv2d(in_channels, channels, kernel_size=3, padding=1))
            in_channels = channels
        elif kind == "bn":
            modules.append(nn.BatchNorm2d(channels))  # eps 1e-5
        elif kind == "relu":
            modules.append(nn.ReLU(inplace=True))
        else:
            modules.append(nn.MaxPool2d(kernel_size=2, stride=2))
    return nn.Sequential(*modules)


class VGG(nn.Module):
    """torchvision ``VGG``: ``features.N``, ``avgpool`` (7x7), ``classifier.0/3/6``."""

    def __init__(self, features: nn.Sequential, num_classes: int = 1000, dropout: float = 0.5):
        super().__init__()
        self.features = features
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096),
            nn.ReLU(True),
            nn.Dropout(p=dropout),
            nn.Linear(4096, 4096),
            nn.ReLU(True),
            nn.Dropout(p=dropout),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)  # N, 512, H/32, W/32 (7x7 at 224x224)
        x = self.avgpool(x)  # N, 512, 7, 7
        x = torch.flatten(x, 1)  # N, 25088 in C, H, W order
        return self.classifier(x)  # N, num_classes


def _vgg(cfg: str, *, batch_norm: bool, num_classes: int, dropout: float) -> VGG:
    return VGG(make_features(cfg, batch_norm=batch_norm), num_classes=num_classes, dropout=dropout)


def vgg11(*, num_classes: int = 1000, dropout: float = 0.5) -> VGG:
    """VGG-11 (configuration "A"), random weights."""
    return _vgg("A", batch_norm=False, num_classes=num_classes, dropout=dropout)


def vgg11_bn(*, num_classes: int = 1000, dropout: float = 0.5) -> VGG:
    """VGG-11 with BatchNorm (configuration "A"), random weights."""
    return _vgg("A", batch_norm=True, num_classes=num_classes, dropout=dropout)


def vgg13(*, num_classes: int = 1000, dropout: float = 0.5) -> VGG:
    """VGG-13 (configuration "B"), random weights."""
    return _vgg("B", batch_norm=False, num_classes=num_classes, dropout=dropout)


def vgg13_bn(*, num_classes: int = 1000, dropout: float = 0.5) -> VGG:
    """VGG-13 with BatchNorm (configuration "B"), random weights."""
    return _vgg("B", batch_norm=True, num_classes=num_classes, dropout=dropout)


def vgg16(*, num_classes: int = 1000, dropout: float = 0.5) -> VGG:
    """VGG-16 (configuration "D"), random weights."""
    return _vgg("D", batch_norm=False, num_classes=num_classes, dropout=dropout)


def vgg16_bn(*, num_classes: int = 1000, dropout: float = 0.5) -> VGG:
    """VGG-16 with BatchNorm (configuration "D"), random weights."""
    return _vgg("D", batch_norm=True, num_classes=num_classes, dropout=dropout)


def vgg19(*, num_classes: int = 1000, dropout: float = 0.5) -> VGG:
    """VGG-19 (configuration "E"), random weights."""
    return _vgg("E", batch_norm=False, num_classes=num_classes, dropout=dropout)


def vgg19_bn(*, num_classes: int = 1000, dropout: float = 0.5) -> VGG:
    """VGG-19 with BatchNorm (configuration "E"), random weights."""
    return _vgg("E", batch_norm=True, num_classes=num_classes, dropout=dropout)
