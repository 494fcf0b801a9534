"""EfficientNet B0-B7 and EfficientNetV2-S/M/L, as torchvision defines them
(``torchvision/models/efficientnet.py``).

The variant table below is the one family definition both twins read; this module imports
neither torch nor TensorFlow, so listing models stays light. Every difference between
variants (width and depth multipliers, stage table, dropout, BatchNorm eps, input size) is a
row of data: torchvision's B0-B4 use BatchNorm's default eps 1e-5, while B5-B7 and all V2
variants pass ``eps=1e-3``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

from codenn_convert.registry import ModelSpec, register_model

BlockKind = Literal["mbconv", "fused"]


@dataclass(frozen=True)
class Stage:
    """One row of torchvision's ``inverted_residual_setting`` (before width/depth scaling)."""

    block: BlockKind
    expand_ratio: int
    kernel: int
    stride: int
    input_channels: int
    out_channels: int
    num_layers: int


@dataclass(frozen=True)
class Block:
    """One block after scaling: what both twins build."""

    kind: BlockKind
    inp: int
    out: int
    expanded: int
    kernel: int
    stride: int
    squeeze: int  # SE channels (MBConv only): max(1, inp // 4)

    @property
    def residual(self) -> bool:
        return self.stride == 1 and self.inp == self.out


@dataclass(frozen=True)
class EfficientNetVariant:
    """One variant: stage table, multipliers, head width (None: 4 x last stage), dropout,
    BatchNorm eps, torchvision's eval crop size and parameter count."""

    stages: tuple[Stage, ...]
    width_mult: float
    depth_mult: float
    dropout: float
    bn_eps: float
    input_size: tuple[int, int]
    num_params: int
    last_channel: int | None = None
    default: bool = False


def _mb(*row: int) -> Stage:
    return Stage("mbconv", *row)


def _fused(*row: int) -> Stage:
    return Stage("fused", *row)


V1_STAGES = (_mb(1, 3, 1, 32, 16, 1), _mb(6, 3, 2, 16, 24, 2), _mb(6, 5, 2, 24, 40, 2),
             _mb(6, 3, 2, 40, 80, 3), _mb(6, 5, 1, 80, 112, 3), _mb(6, 5, 2, 112, 192, 4),
             _mb(6, 3, 1, 192, 320, 1))
V2_S = (_fused(1, 3, 1, 24, 24, 2), _fused(4, 3, 2, 24, 48, 4), _fused(4, 3, 2, 48, 64, 4),
        _mb(4, 3, 2, 64, 128, 6), _mb(6, 3, 1, 128, 160, 9), _mb(6, 3, 2, 160, 256, 15))
V2_M = (_fused(1, 3, 1, 24, 24, 3), _fused(4, 3, 2, 24, 48, 5), _fused(4, 3, 2, 48, 80, 5),
        _mb(4, 3, 2, 80, 160, 7), _mb(6, 3, 1, 160, 176, 14), _mb(6, 3, 2, 176, 304, 18),
        _mb(6, 3, 1, 304, 512, 5))
V2_L = (_fused(1, 3, 1, 32, 32, 4), _fused(4, 3, 2, 32, 64, 7), _fused(4, 3, 2, 64, 96, 7),
        _mb(4, 3, 2, 96, 192, 10), _mb(6, 3, 1, 192, 224, 19), _mb(6, 3, 2, 224, 384, 25),
        _mb(6, 3, 1, 384, 640, 7))

_V1 = EfficientNetVariant
VARIANTS: dict[str, EfficientNetVariant] = {
    "efficientnet_b0": _V1(V1_STAGES, 1.0, 1.0, 0.2, 1e-5, (224, 224), 5_288_548, default=True),
    "efficientnet_b1": _V1(V1_STAGES, 1.0, 1.1, 0.2, 1e-5, (240, 240), 7_794_184),
    "efficientnet_b2": _V1(V1_STAGES, 1.1, 1.2, 0.3, 1e-5, (288, 288), 9_109_994),
    "efficientnet_b3": _V1(V1_STAGES, 1.2, 1.4, 0.3, 1e-5, (300, 300), 12_233_232),
    "efficientnet_b4": _V1(V1_STAGES, 1.4, 1.8, 0.4, 1e-5, (380, 380), 19_341_616),
    "efficientnet_b5": _V1(V1_STAGES, 1.6, 2.2, 0.4, 1e-3, (456, 456), 30_389_784),
    "efficientnet_b6": _V1(V1_STAGES, 1.8, 2.6, 0.5, 1e-3, (528, 528), 43_040_704),
    "efficientnet_b7": _V1(V1_STAGES, 2.0, 3.1, 0.5, 1e-3, (600, 600), 66_347_960),
    "efficientnet_v2_s": _V1(V2_S, 1.0, 1.0, 0.2, 1e-3, (384, 384), 21_458_488, 1280),
    "efficientnet_v2_m": _V1(V2_M, 1.0, 1.0, 0.3, 1e-3, (480, 480), 54_139_356, 1280),
    "efficientnet_v2_l": _V1(V2_L, 1.0, 1.0, 0.4, 1e-3, (480, 480), 118_515_272, 1280),
}


@dataclass(frozen=True)
class EfficientNetStyle:
    """Where keras.applications' EfficientNet differs from torchvision's (the keras_*
    variants' builder options; torchvision's values by default).

    * ``tf_padding``: stride-2 convs pad like ``imagenet_utils.correct_pad`` (TF 'same':
      (k//2 - 1, k//2) at even sizes) instead of (k-1)//2 on both sides;
    * ``bn_eps``: Keras' BatchNormalization default 1e-3 for every variant;
    * ``preprocessing``: the model starts with ``Rescaling(1/255)`` and a
      ``Normalization`` whose mean, variance and count are weights of the file.

    * ``imagenet_rescaling``: ``EfficientNetB*(weights="imagenet")`` adds, after the
      Normalization, a weight-free ``Rescaling(1 / sqrt(IMAGENET_STDDEV_RGB))``: its
      weight file stores the standard deviations as the "variance" (tensorflow#49930).
      A weights file cannot tell the two models apart, so this is an option
      (``--option imagenet_rescaling=true``) for the function of the ImageNet model.

    The SE convs have biases and the head (1x1 conv to round_filters(1280), BN, swish,
    pool, dense) is torchvision's in both, so neither needs an option.
    """

    tf_padding: bool = False
    bn_eps: float | None = None  # None: the variant's (torchvision) eps
    preprocessing: bool = False
    imagenet_rescaling: bool = False


TORCHVISION_STYLE = EfficientNetStyle()
#: keras.applications' style, as builder options (``EfficientNetStyle`` fields).
KERAS_APPLICATIONS_STYLE = {"tf_padding": True, "bn_eps": 1e-3, "preprocessing": True}
#: keras.applications.efficientnet.IMAGENET_STDDEV_RGB (see ``imagenet_rescaling``).
IMAGENET_STDDEV_RGB = (0.229, 0.224, 0.225)
#: Keras' backend epsilon, the floor of the Normalization layer's standard deviation.
KERAS_EPSILON = 1e-7


def tf_same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF 'same' padding (before, after) of one axis; for stride 2 it is correct_pad's."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def make_divisible(v: float, divisor: int = 8) -> int:
    """torchvision's ``_make_divisible``: round to a multiple of ``divisor``, never more
    than 10% down."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


def blocks(variant: EfficientNetVariant) -> list[list[Block]]:
    """The scaled blocks of each stage (``features.1`` ... ``features.<n>``), as
    torchvision's ``MBConvConfig``/``FusedMBConvConfig`` and ``EfficientNet`` compute them:
    only V1 stages scale (V2's multipliers are 1)."""
    out = []
    for s in variant.stages:
        inp = make_divisible(s.input_channels * variant.width_mult)
        cout = make_divisible(s.out_channels * variant.width_mult)
        stage = []
        for i in range(int(math.ceil(s.num_layers * variant.depth_mult))):
            b_in, stride = (inp, s.stride) if i == 0 else (cout, 1)
            stage.append(Block(s.block, b_in, cout, make_divisible(b_in * s.expand_ratio),
                               s.kernel, stride, max(1, b_in // 4)))
        out.append(stage)
    return out


def stem_channels(variant: EfficientNetVariant) -> int:
    return make_divisible(variant.stages[0].input_channels * variant.width_mult)


def head_channels(variant: EfficientNetVariant) -> int:
    last = make_divisible(variant.stages[-1].out_channels * variant.width_mult)
    return variant.last_channel or 4 * last


# Every conv pads (k - 1) // 2 and maps h >= 1 to floor((h - 1) / s) + 1 >= 1; the pool is
# global. torchvision lists min_size (1, 1) for V1 and (33, 33) for V2 (its recipe's), but
# the network itself accepts 1x1 either way.
MIN_INPUT_SIZE = (1, 1)

_PKG = "codenn_convert.models.efficientnet"


def _register(name: str, variant: str, *, style: dict[str, object],
              keras_filter: str | None = None) -> None:
    v = VARIANTS[variant]
    register_model(
        ModelSpec(
            name=name,
            family="efficientnet",
            torch_builder=f"{_PKG}.torch_efficientnet:efficientnet",
            keras_builder=f"{_PKG}.keras_efficientnet:efficientnet",
            input_size=v.input_size,
            min_input_size=MIN_INPUT_SIZE,
            num_params=v.num_params,
            default=v.default and not style,
            builder_kwargs=MappingProxyType({"variant": variant, **style}),
            init_hooks=(f"{_PKG}.torch_efficientnet:small_residual_gamma",),
            keras_filter=keras_filter,
        )
    )


for _name in VARIANTS:
    _register(_name, _name, style={})
# keras.applications EfficientNetB0-B7: torchvision's trees (same parameter counts) in
# Keras' style; V2 is not among them here.
for _b in range(8):
    _register(f"keras_efficientnet_b{_b}", f"efficientnet_b{_b}",
              style=KERAS_APPLICATIONS_STYLE,
              keras_filter=f"{_PKG}.keras_applications:keras_filter")
