"""A small RegNetY-like CNN the project has never seen (a held-out test of generated twins):
grouped 3x3 convs (group width 8, not depthwise), squeeze-excitation with a sigmoid gate,
projection shortcuts, a functional global pool and head. Plain torch, no project imports."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, squeeze: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        s = torch.sigmoid(self.fc2(F.relu(self.fc1(s))))
        return x * s


class YBlock(nn.Module):
    """1x1 -> grouped 3x3 (stride) -> SE -> 1x1, plus a (projected) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int, group_width: int = 8) -> None:
        super().__init__()
        self.a = nn.Conv2d(cin, cout, 1, bias=False)
        self.a_bn = nn.BatchNorm2d(cout)
        self.b = nn.Conv2d(cout, cout, 3, stride, 1, groups=cout // group_width, bias=False)
        self.b_bn = nn.BatchNorm2d(cout)
        self.se = SqueezeExcite(cout, max(1, cin // 4))
        self.c = nn.Conv2d(cout, cout, 1, bias=False)
        self.c_bn = nn.BatchNorm2d(cout)
        self.proj = None
        if stride != 1 or cin != cout:
            self.proj = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                      nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.a_bn(self.a(x)))
        y = F.relu(self.b_bn(self.b(y)))
        y = self.c_bn(self.c(self.se(y)))
        shortcut = x if self.proj is None else self.proj(x)
        return F.relu(y + shortcut)


class RegNetish(nn.Module):
    def __init__(self, num_classes: int = 10, widths: tuple[int, ...] = (16, 32, 64),
                 depths: tuple[int, ...] = (1, 2, 2)) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16),
                                  nn.ReLU(inplace=True))
        blocks, cin = [], 16
        for width, depth in zip(widths, depths, strict=True):
            for i in range(depth):
                blocks.append(YBlock(cin, width, 2 if i == 0 else 1))
                cin = width
        self.trunk = nn.Sequential(*blocks)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.trunk(self.stem(x))
        x = F.adaptive_avg_pool2d(x, 1)
        return self.fc(torch.flatten(x, 1))


def regnetish(num_classes: int = 10) -> nn.Module:
    """The held-out RegNet-like net."""
    return RegNetish(num_classes)
