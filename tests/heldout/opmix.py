"""A small net of the remaining ops (a held-out test of generated twins): ShuffleNet's
channel shuffle (view, transpose, view), chunk, cat, a max-pool with ``ceil_mode``, an
average pool without ``count_include_pad``, softmax over channels, amax, mean, unsqueeze
and a ``view(N, -1)`` flatten before the Linear. Plain torch, no project imports."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class OpMix(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.pool = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.avg = nn.AvgPool2d(3, 1, 1, count_include_pad=False)
        self.right = nn.Conv2d(4, 4, 1)
        self.fc = nn.Linear(8 * 4 * 4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avg(self.pool(F.relu(self.conv(x))))
        n, c, h, w = x.size()
        x = x.view(n, 2, c // 2, h, w).transpose(1, 2).contiguous().view(n, c, h, w)
        left, right = x.chunk(2, dim=1)
        x = torch.cat((left, self.right(right)), 1)
        x = F.softmax(x, dim=1) * x.amax(dim=(2, 3), keepdim=True)
        x = F.adaptive_avg_pool2d(x, (4, 4))
        return self.fc(x.view(x.size(0), -1)) - x.mean((1, 2, 3)).unsqueeze(1)


def opmix() -> nn.Module:
    return OpMix()
