"""A small CNN the project has never seen (a held-out test of generated twins): a stem with
Hardswish, a block that concatenates three branches (ReLU6, SiLU, a max-pool branch),
ConvNeXt-style blocks written from scratch (depthwise 7x7, permute to channels-last,
LayerNorm, Linear, GELU, Linear, a bare layer-scale parameter, permute back, residual) and a
Flatten/Dropout head over a 2x2 map. Plain torch, no project imports."""

from __future__ import annotations

import torch
from torch import nn


class Branches(nn.Module):
    def __init__(self, cin: int, each: int) -> None:
        super().__init__()
        self.b1 = nn.Sequential(nn.Conv2d(cin, each, 1, bias=False), nn.BatchNorm2d(each),
                                nn.Hardswish())
        self.b2 = nn.Sequential(nn.Conv2d(cin, each, 3, padding=1, bias=False),
                                nn.BatchNorm2d(each), nn.ReLU6())
        self.b3 = nn.Sequential(nn.MaxPool2d(3, 1, 1), nn.Conv2d(cin, each, 1), nn.SiLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b1(x), self.b2(x), self.b3(x)], dim=1)


class ConvNeXtStyle(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dw = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pw1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pw2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.linspace(0.05, 0.5, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dw(x).permute(0, 2, 3, 1)  # N, H, W, C
        y = self.pw2(self.act(self.pw1(self.norm(y))))
        y = self.gamma * y
        return x + y.permute(0, 3, 1, 2)


class MixNet(nn.Module):
    def __init__(self, num_classes: int = 10, dim: int = 24) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16),
                                  nn.Hardswish())
        self.mix = Branches(16, dim // 3)
        self.blocks = nn.Sequential(ConvNeXtStyle(dim), ConvNeXtStyle(dim))
        self.down = nn.Conv2d(dim, 2 * dim, 2, 2)
        self.last = ConvNeXtStyle(2 * dim)
        self.pool = nn.AdaptiveAvgPool2d((2, 2))
        self.head = nn.Sequential(nn.Flatten(1), nn.Dropout(0.2),
                                  nn.Linear(2 * dim * 4, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.mix(self.stem(x)))
        x = self.last(self.down(x))
        return self.head(self.pool(x))


def mixnet(num_classes: int = 10, dim: int = 24) -> nn.Module:
    """The held-out mixed net."""
    return MixNet(num_classes, dim)
