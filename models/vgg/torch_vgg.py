"""VGG in PyTorch, with torchvision's exact module tree and state_dict keys."""

from __future__ import annotations

import torch
from torch import nn

from codenn_convert.models.vgg import VARIANTS, feature_modules


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


def vgg(*, variant: str, num_classes: int = 1000, dropout: float = 0.5) -> VGG:
    """Build the VGG ``variant`` of :data:`VARIANTS` (random weights)."""
    spec = VARIANTS[variant]
    features = make_features(spec.cfg, batch_norm=spec.batch_norm)
    return VGG(features, num_classes=num_classes, dropout=dropout)
