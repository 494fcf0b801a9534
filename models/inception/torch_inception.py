"""InceptionV3 in PyTorch, with torchvision's exact module tree and state_dict keys."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from codenn_convert.models.inception import (
    AUX_MIN_FEATURE_SIZE,
    AUX_MIN_INPUT_SIZE,
    AUX_SOURCE,
    BN_EPS,
    MIXED,
    STEM,
    STEM_POOLS,
    TRANSFORM_OFFSET,
    TRANSFORM_SCALE,
    BlockKind,
)


class InceptionOutputs(NamedTuple):
    """What a training-mode forward with ``aux_logits=True`` returns, as in torchvision."""

    logits: torch.Tensor
    aux_logits: torch.Tensor | None


class BasicConv2d(nn.Module):
    """Conv (no bias) + BatchNorm (eps 1e-3) + ReLU: keys ``conv.weight``, ``bn.*``."""

    def __init__(self, in_channels: int, out_channels: int, **kwargs: Any) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(out_channels, eps=BN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)), inplace=True)


class InceptionA(nn.Module):
    """35x35 block: 1x1, 5x5, double 3x3 and pooled branches."""

    def __init__(
        self, in_channels: int, pool_features: int, count_include_pad: bool = True
    ) -> None:
        super().__init__()
        self.count_include_pad = count_include_pad
        self.branch1x1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(in_channels, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(in_channels, pool_features, kernel_size=1)
        self.out_channels = 64 + 64 + 96 + pool_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch1x1 = self.branch1x1(x)
        branch5x5 = self.branch5x5_2(self.branch5x5_1(x))
        branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        # torchvision counts the padding (border windows divide by 9); Keras 'same' does not.
        branch_pool = self.branch_pool(F.avg_pool2d(
            x, kernel_size=3, stride=1, padding=1, count_include_pad=self.count_include_pad))
        return torch.cat([branch1x1, branch5x5, branch3x3dbl, branch_pool], 1)


class InceptionB(nn.Module):
    """35x35 -> 17x17 reduction."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(in_channels, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)
        self.out_channels = 384 + 96 + in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch3x3 = self.branch3x3(x)
        branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        branch_pool = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([branch3x3, branch3x3dbl, branch_pool], 1)


class InceptionC(nn.Module):
    """17x17 block with factorised 1x7 / 7x1 convs."""

    def __init__(self, in_channels: int, channels_7x7: int, count_include_pad: bool = True) -> None:
        super().__init__()
        self.count_include_pad = count_include_pad
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)
        self.out_channels = 4 * 192

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch1x1 = self.branch1x1(x)
        branch7x7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        branch7x7dbl = self.branch7x7dbl_1(x)
        branch7x7dbl = self.branch7x7dbl_3(self.branch7x7dbl_2(branch7x7dbl))
        branch7x7dbl = self.branch7x7dbl_5(self.branch7x7dbl_4(branch7x7dbl))
        branch_pool = self.branch_pool(F.avg_pool2d(
            x, kernel_size=3, stride=1, padding=1, count_include_pad=self.count_include_pad))
        return torch.cat([branch1x1, branch7x7, branch7x7dbl, branch_pool], 1)


class InceptionD(nn.Module):
    """17x17 -> 8x8 reduction."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)
        self.out_channels = 320 + 192 + in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch3x3 = self.branch3x3_2(self.branch3x3_1(x))
        branch7x7x3 = self.branch7x7x3_2(self.branch7x7x3_1(x))
        branch7x7x3 = self.branch7x7x3_4(self.branch7x7x3_3(branch7x7x3))
        branch_pool = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([branch3x3, branch7x7x3, branch_pool], 1)


class InceptionE(nn.Module):
    """8x8 block with split 1x3 / 3x1 branches."""

    def __init__(self, in_channels: int, count_include_pad: bool = True) -> None:
        super().__init__()
        self.count_include_pad = count_include_pad
        self.branch1x1 = BasicConv2d(in_channels, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(in_channels, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)
        self.out_channels = 320 + 2 * 384 + 2 * 384 + 192

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch1x1 = self.branch1x1(x)
        branch3x3 = self.branch3x3_1(x)
        branch3x3 = torch.cat([self.branch3x3_2a(branch3x3), self.branch3x3_2b(branch3x3)], 1)
        branch3x3dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        branch3x3dbl = torch.cat(
            [self.branch3x3dbl_3a(branch3x3dbl), self.branch3x3dbl_3b(branch3x3dbl)], 1
        )
        branch_pool = self.branch_pool(F.avg_pool2d(
            x, kernel_size=3, stride=1, padding=1, count_include_pad=self.count_include_pad))
        return torch.cat([branch1x1, branch3x3, branch3x3dbl, branch_pool], 1)


class InceptionAux(nn.Module):
    """The training-only auxiliary classifier on Mixed_6e's 17x17 map."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.conv0 = BasicConv2d(in_channels, 128, kernel_size=1)
        self.conv1 = BasicConv2d(128, 768, kernel_size=5)
        self.fc = nn.Linear(768, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (h, w), (mh, mw) = x.shape[-2:], AUX_MIN_FEATURE_SIZE
        if h < mh or w < mw:
            # torchvision fails deep inside avg_pool2d/conv2d here; say why instead.
            raise ValueError(
                f"InceptionV3's aux head needs a Mixed_6e map of at least "
                f"{mh}x{mw} (input >= {AUX_MIN_INPUT_SIZE[0]}x{AUX_MIN_INPUT_SIZE[1]}), got {h}x{w}"
            )
        x = F.avg_pool2d(x, kernel_size=5, stride=3)  # N, 768, 5, 5 at 17x17
        x = self.conv0(x)  # N, 128, 5, 5
        x = self.conv1(x)  # N, 768, 1, 1
        x = F.adaptive_avg_pool2d(x, (1, 1))  # N, 768, 1, 1
        x = torch.flatten(x, 1)  # N, 768
        return self.fc(x)  # N, num_classes


# Block kind -> module; the option is pool_features (A) or channels_7x7 (C), as torchvision;
# the flag is count_include_pad of the branch average pools (A, C, E).
_BLOCKS: dict[BlockKind, Callable[[int, Any, bool], nn.Module]] = {
    "A": lambda c, opt, cip: InceptionA(c, pool_features=opt, count_include_pad=cip),
    "B": lambda c, opt, cip: InceptionB(c),
    "C": lambda c, opt, cip: InceptionC(c, channels_7x7=opt, count_include_pad=cip),
    "D": lambda c, opt, cip: InceptionD(c),
    "E": lambda c, opt, cip: InceptionE(c, count_include_pad=cip),
}


class Inception3(nn.Module):
    """torchvision ``Inception3``: ``Conv2d_1a_3x3`` ... ``Mixed_7c``, ``AuxLogits``, ``fc``.

    Modules are registered in torchvision's order, so state_dict keys come out in the same
    order (``AuxLogits`` between ``Mixed_6e`` and ``Mixed_7a``).
    """

    def __init__(
        self,
        *,
        num_classes: int = 1000,
        aux_logits: bool = True,
        transform_input: bool = False,
        dropout: float = 0.5,
        count_include_pad: bool = True,
    ) -> None:
        super().__init__()
        self.aux_logits = aux_logits
        self.transform_input = transform_input
        self.AuxLogits: InceptionAux | None = None
        channels = 3
        for name, out, kernel, stride, padding in STEM:
            self.add_module(
                name, BasicConv2d(channels, out, kernel_size=kernel, stride=stride, padding=padding)
            )
            channels = out
            if name in STEM_POOLS:
                self.add_module(STEM_POOLS[name], nn.MaxPool2d(kernel_size=3, stride=2))
        for name, kind, option in MIXED:
            block = _BLOCKS[kind](channels, option, count_include_pad)
            self.add_module(name, block)
            channels = block.out_channels
            if name == AUX_SOURCE and aux_logits:
                self.AuxLogits = InceptionAux(channels, num_classes)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(channels, num_classes)

    def _transform_input(self, x: torch.Tensor) -> torch.Tensor:
        # Same expression as torchvision: per channel x * scale + offset with Python floats.
        if not self.transform_input:
            return x
        chans = [
            torch.unsqueeze(x[:, c], 1) * scale + offset
            for c, (scale, offset) in enumerate(zip(TRANSFORM_SCALE, TRANSFORM_OFFSET, strict=True))
        ]
        return torch.cat(chans, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor | InceptionOutputs:
        x = self._transform_input(x)  # N, 3, 299, 299
        aux: torch.Tensor | None = None
        for name, _, _, _, _ in STEM:
            x = getattr(self, name)(x)  # 1a: N, 32, 149, 149 ... 4a: N, 192, 71, 71
            if name in STEM_POOLS:
                x = getattr(self, STEM_POOLS[name])(x)  # maxpool1: 73x73, maxpool2: 35x35
        for name, _, _ in MIXED:
            x = getattr(self, name)(x)  # 5*: 35x35, 6*: 17x17, 7*: 8x8
            if name == AUX_SOURCE and self.AuxLogits is not None and self.training:
                aux = self.AuxLogits(x)  # N, num_classes
        x = self.avgpool(x)  # N, 2048, 1, 1
        x = self.dropout(x)
        x = torch.flatten(x, 1)  # N, 2048
        x = self.fc(x)  # N, num_classes
        if self.training and self.aux_logits:
            return InceptionOutputs(x, aux)
        return x


def inception_v3(
    *,
    num_classes: int = 1000,
    aux_logits: bool = True,
    transform_input: bool = False,
    dropout: float = 0.5,
    count_include_pad: bool = True,
) -> Inception3:
    """Build InceptionV3 (random weights). ``transform_input`` is off by default here;
    ``count_include_pad=False`` gives keras.applications' branch pools (padding not counted)."""
    return Inception3(
        num_classes=num_classes,
        aux_logits=aux_logits,
        transform_input=transform_input,
        dropout=dropout,
        count_include_pad=count_include_pad,
    )


def calibrate_aux_head(model: Inception3, gen: torch.Generator | None = None) -> None:
    """Let the init's BatchNorm calibration pass reach the aux head too.

    Calibration runs one forward with the model in eval mode (only its BatchNorms in train
    mode), so the training-only aux head would be skipped and its BatchNorms would keep
    identity statistics. A one-shot hook on Mixed_6e feeds that pass's features to it (at the
    spec's 299x299 calibration size the head works).
    """
    aux = model.AuxLogits
    if aux is None:
        return

    def feed_aux(module: nn.Module, args: Any, output: torch.Tensor) -> None:
        handle.remove()
        # In training mode forward() runs the head itself. A calibration below 299x299
        # (tests at small sizes) cannot run it: the head keeps identity statistics.
        fits = all(a >= b for a, b in zip(output.shape[-2:], AUX_MIN_FEATURE_SIZE, strict=True))
        if not model.training and fits:
            aux(output)

    handle = getattr(model, AUX_SOURCE).register_forward_hook(feed_aux)
