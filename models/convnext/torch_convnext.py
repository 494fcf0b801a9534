"""ConvNeXt in PyTorch, with torchvision's exact module tree and state_dict keys
(``features.<i>.<j>.block.<k>``, ``features.<i>.<j>.layer_scale``, ``classifier.<k>``)."""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from codenn_convert.models.common.torch_layers import (
    ConstantNormalization,
    LayerNorm2d,
    Permute,
    ScaledResidual,
    StochasticDepth,
)
from codenn_convert.models.convnext import (
    LAYER_SCALE_INIT,
    LN_EPS,
    PRESTEM_MEAN,
    PRESTEM_VARIANCE,
    VARIANTS,
)


class CNBlock(ScaledResidual):
    """torchvision's ``CNBlock``: depthwise 7x7, permute to NHWC, LayerNorm, Linear 4C,
    GELU, Linear C, permute back; ``x + layer_scale * block(x)`` (stochastic depth is the
    identity in eval)."""

    def __init__(self, dim: int, layer_scale: float, sd_prob: float) -> None:
        super().__init__(dim, layer_scale)
        self.block = nn.Sequential(
            nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim, bias=True),
            Permute([0, 2, 3, 1]),
            nn.LayerNorm(dim, eps=LN_EPS),
            nn.Linear(dim, 4 * dim, bias=True),
            nn.GELU(),
            nn.Linear(4 * dim, dim, bias=True),
            Permute([0, 3, 1, 2]),
        )
        self.stochastic_depth = StochasticDepth(sd_prob, "row")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.layer_scale * self.block(x)
        result = self.stochastic_depth(result)
        result += x
        return result


class ConvNeXt(nn.Module):
    """torchvision's ``ConvNeXt``: ``features`` (stem, stage, downsample, ...),
    ``avgpool``, ``classifier`` (LayerNorm2d, Flatten, Linear)."""

    def __init__(self, variant: str, num_classes: int = 1000,
                 layer_scale: float = LAYER_SCALE_INIT,
                 include_preprocessing: bool = False) -> None:
        super().__init__()
        v = VARIANTS[variant]
        # keras.applications' PreStem: constants, not weights (no state_dict entry).
        self.prestem = ConstantNormalization(PRESTEM_MEAN, PRESTEM_VARIANCE) \
            if include_preprocessing else None
        norm = partial(LayerNorm2d, eps=LN_EPS)
        # Conv2dNormActivation(3, C, 4, stride 4, padding 0, LayerNorm2d, no act, bias).
        layers: list[nn.Module] = [nn.Sequential(
            nn.Conv2d(3, v.dims[0], kernel_size=4, stride=4, padding=0, bias=True),
            norm(v.dims[0]))]
        total, done = sum(v.depths), 0
        for i, (dim, depth) in enumerate(zip(v.dims, v.depths, strict=True)):
            stage = []
            for _ in range(depth):
                sd_prob = v.stochastic_depth_prob * done / (total - 1.0)
                stage.append(CNBlock(dim, layer_scale, sd_prob))
                done += 1
            layers.append(nn.Sequential(*stage))
            if i + 1 < len(v.dims):
                layers.append(nn.Sequential(
                    norm(dim), nn.Conv2d(dim, v.dims[i + 1], kernel_size=2, stride=2)))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(norm(v.dims[-1]), nn.Flatten(1),
                                        nn.Linear(v.dims[-1], num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.prestem is not None:
            x = self.prestem(x)
        return self.classifier(self.avgpool(self.features(x)))


def convnext(*, variant: str, num_classes: int = 1000,
             include_preprocessing: bool = False) -> ConvNeXt:
    """Build the ConvNeXt ``variant`` of :data:`VARIANTS` (random weights);
    ``include_preprocessing`` is keras.applications' (pixels 0..255 in)."""
    return ConvNeXt(variant, num_classes, include_preprocessing=include_preprocessing)
