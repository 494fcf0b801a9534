"""AlexNet in PyTorch, with torchvision's exact module tree and state_dict keys."""

from __future__ import annotations

import torch
from torch import nn


class AlexNet(nn.Module):
    """torchvision ``AlexNet``: ``features.0`` ... ``features.12``, ``classifier.1/4/6``."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.5) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(64, 192, kernel_size=5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(192, 384, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout),
            nn.Linear(256 * 6 * 6, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)  # N, 256, 6, 6 at 224x224
        x = self.avgpool(x)  # N, 256, 6, 6
        x = torch.flatten(x, 1)  # N, 9216 in C, H, W order
        return self.classifier(x)  # N, num_classes


def alexnet(*, num_classes: int = 1000, dropout: float = 0.5) -> AlexNet:
    """Build AlexNet (random weights)."""
    return AlexNet(num_classes=num_classes, dropout=dropout)
