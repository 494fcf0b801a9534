"""Modules that cannot be twinned (tests of the one-line errors of generated twins)."""

from __future__ import annotations

import torch
from torch import nn


class SortBlock(nn.Module):
    """Sorts channels by value: no op rule for ``torch.sort``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sort(x, dim=1).values


class Gate(nn.Module):
    """Data-dependent control flow: the branch depends on the input's values."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.mean() > 0:
            return x * 2
        return x


class Net(nn.Module):
    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.block = block
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block(self.conv(x))
        return self.fc(x.mean((2, 3)))


def sorting() -> nn.Module:
    return Net(SortBlock())


def branching() -> nn.Module:
    return Net(Gate())
