"""Small torch modules that torchvision's modern CNNs use, with torchvision's keys, plus
the torch side of the layer-rule pairs that have no torch.nn type (layer scale, Keras'
in-model preprocessing). Each weighted one has a rule in :mod:`codenn_convert.twins.rules`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LayerNorm2d(nn.LayerNorm):
    """torchvision's channels-first LayerNorm (``convnext.LayerNorm2d``): NCHW -> NHWC,
    ``layer_norm`` over C, back. Its weights are ``nn.LayerNorm``'s, so the LayerNorm rule
    (Keras ``LayerNormalization(axis=-1)``) covers it through the subclass lookup."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class Permute(nn.Module):
    """torchvision.ops.misc.Permute."""

    def __init__(self, dims: list[int]) -> None:
        super().__init__()
        self.dims = dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.permute(x, self.dims)


class StochasticDepth(nn.Module):
    """torchvision.ops.StochasticDepth (mode "row"). In eval mode it returns its input
    before any random op is built, so no Bernoulli reaches a traced or exported graph
    (the old exporter failed on it, pytorch#96926)."""

    def __init__(self, p: float, mode: str = "row") -> None:
        super().__init__()
        self.p = p
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        shape = [x.shape[0]] + [1] * (x.ndim - 1) if self.mode == "row" else [1] * x.ndim
        keep = 1.0 - self.p
        noise = torch.empty(shape, dtype=x.dtype, device=x.device).bernoulli_(keep)
        return x * noise.div_(keep)


class ScaledResidual(nn.Module):
    """Base of blocks that own a layer scale ``layer_scale`` of shape ``(C, 1, 1)`` and
    return ``x + layer_scale * branch(x)`` (ConvNeXt's ``CNBlock``). The parameter lives
    on the block itself, as in torchvision (key ``<block>.layer_scale``); the Keras twin
    is one :class:`~codenn_convert.models.common.keras_layers.ScaledResidual` layer named
    after the block, whose output is the block's output."""

    def __init__(self, channels: int, init_value: float) -> None:
        super().__init__()
        self.layer_scale = nn.Parameter(torch.ones(channels, 1, 1) * init_value)


class KerasNormalization(nn.Module):
    """Keras' ``Normalization(axis=-1)`` on NCHW: ``(x - mean) / max(sqrt(var), eps)``
    with ``mean``, ``variance`` (C,) and ``count`` as buffers (Keras keeps all three as
    weights in its files, tensorflow#49930), in Keras' op order."""

    def __init__(self, channels: int, eps: float = 1e-7) -> None:
        super().__init__()
        self.eps = eps
        self.register_buffer("mean", torch.zeros(channels))
        self.register_buffer("variance", torch.ones(channels))
        self.register_buffer("count", torch.zeros((), dtype=torch.int64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = self.mean.view(1, -1, 1, 1)
        std = torch.clamp(torch.sqrt(self.variance), min=self.eps).view(1, -1, 1, 1)
        return (x - mean) / std


class Rescaling(nn.Module):
    """Keras' weight-free ``Rescaling(scale, offset)``: ``x * scale + offset``."""

    def __init__(self, scale: float, offset: float = 0.0) -> None:
        super().__init__()
        self.scale = scale
        self.offset = offset

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.offset


class ChannelScale(nn.Module):
    """Keras' weight-free ``Rescaling(scale=[s_c])`` with one scale per channel (NCHW)."""

    def __init__(self, scale: list[float]) -> None:
        super().__init__()
        self.scale = list(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * x.new_tensor(self.scale).view(1, -1, 1, 1)


class ConstantNormalization(nn.Module):
    """Keras' ``Normalization(mean=..., variance=...)`` built with constants (no weights,
    nothing in a state_dict): ``(x - mean) / max(sqrt(variance), 1e-7)`` per channel."""

    def __init__(self, mean: tuple[float, ...], variance: tuple[float, ...]) -> None:
        super().__init__()
        self.mean = tuple(mean)
        self.variance = tuple(variance)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.new_tensor(self.mean).view(1, -1, 1, 1)
        std = torch.clamp(torch.sqrt(x.new_tensor(self.variance)), min=1e-7).view(1, -1, 1, 1)
        return (x - mean) / std
