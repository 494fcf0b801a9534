"""MobileNetV2 and MobileNetV3 (Small, Large), as torchvision defines them, and
keras.applications' MobileNetV2 / MobileNetV3Small / MobileNetV3Large as options of the same
builders.

Both twins read one network description, :class:`NetConfig`, computed here from the variant
tables with torchvision's ``_make_divisible`` rounding (``width_mult``, V2) or, for the
keras.applications variants, with Keras's own channel rules (``alpha``). This module imports
neither torch nor TensorFlow, so listing models stays light.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

from codenn_convert.registry import ModelSpec, register_model

Activation = Literal["ReLU", "ReLU6", "Hardswish"]
Version = Literal[2, 3]


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """torchvision's (and Keras's ``_depth``) ``_make_divisible``: round ``v`` to the nearest
    multiple of ``divisor``, at least ``min_value``, never more than 10% below ``v``."""
    min_value = divisor if min_value is None else min_value
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


def tf_same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF's 'same' padding (before, after) along one axis: the extra pixel goes after.
    keras.applications' ``correct_pad`` + 'valid' computes the same at stride 2."""
    total = max(kernel - (stride if size % stride == 0 else size % stride), 0)
    return total // 2, total - total // 2


@dataclass(frozen=True)
class Block:
    """One inverted residual: 1x1 expand (if ``expanded != inp``), depthwise ``kernel``
    with ``stride``, optional squeeze-excitation (``se`` channels, 0 = none), 1x1 project."""

    inp: int
    kernel: int
    expanded: int
    out: int
    se: int
    act: Activation
    stride: int

    @property
    def residual(self) -> bool:
        return self.stride == 1 and self.inp == self.out


@dataclass(frozen=True)
class NetConfig:
    """Everything both twins need to build one MobileNet."""

    version: Version
    stem: int  # output channels of the 3x3/2 stem conv
    stem_act: Activation
    blocks: tuple[Block, ...]
    last_conv: int  # output channels of the final 1x1 conv of ``features``
    last_act: Activation
    head: int | None  # V3's hidden classifier width (``last_channel``); None for V2
    bn_eps: float
    bn_momentum: float  # torch's meaning (weight of the new batch)
    tf_padding: bool  # keras.applications: TF 'same' padding (correct_pad) at stride 2
    conv_head: bool  # keras.applications V3: 1x1 convs where torchvision has Linear
    dropout: float


#: torchvision MobileNetV2: (expand ratio t, channels c, repeats n, first stride s).
V2_SETTING: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
    (6, 160, 3, 2), (6, 320, 1, 1),
)

#: torchvision MobileNetV3 (``_mobilenet_v3_conf``): (in, kernel, expanded, out, SE, act, stride).
V3Row = tuple[int, int, int, int, bool, Activation, int]
V3_SETTINGS: dict[str, tuple[tuple[V3Row, ...], int]] = {
    "mobilenet_v3_large": ((
        (16, 3, 16, 16, False, "ReLU", 1), (16, 3, 64, 24, False, "ReLU", 2),
        (24, 3, 72, 24, False, "ReLU", 1), (24, 5, 72, 40, True, "ReLU", 2),
        (40, 5, 120, 40, True, "ReLU", 1), (40, 5, 120, 40, True, "ReLU", 1),
        (40, 3, 240, 80, False, "Hardswish", 2), (80, 3, 200, 80, False, "Hardswish", 1),
        (80, 3, 184, 80, False, "Hardswish", 1), (80, 3, 184, 80, False, "Hardswish", 1),
        (80, 3, 480, 112, True, "Hardswish", 1), (112, 3, 672, 112, True, "Hardswish", 1),
        (112, 5, 672, 160, True, "Hardswish", 2), (160, 5, 960, 160, True, "Hardswish", 1),
        (160, 5, 960, 160, True, "Hardswish", 1),
    ), 1280),
    "mobilenet_v3_small": ((
        (16, 3, 16, 16, True, "ReLU", 2), (16, 3, 72, 24, False, "ReLU", 2),
        (24, 3, 88, 24, False, "ReLU", 1), (24, 5, 96, 40, True, "Hardswish", 2),
        (40, 5, 240, 40, True, "Hardswish", 1), (40, 5, 240, 40, True, "Hardswish", 1),
        (40, 5, 120, 48, True, "Hardswish", 1), (48, 5, 144, 48, True, "Hardswish", 1),
        (48, 5, 288, 96, True, "Hardswish", 2), (96, 5, 576, 96, True, "Hardswish", 1),
        (96, 5, 576, 96, True, "Hardswish", 1),
    ), 1024),
}

#: torchvision's BatchNorm: V2 uses nn.BatchNorm2d's defaults, V3 eps 1e-3, momentum 0.01.
#: keras.applications uses eps 1e-3 for both.
V2_BN, V3_BN, KERAS_BN_EPS = (1e-5, 0.1), (1e-3, 0.01), 1e-3


def v2_config(width_mult: float = 1.0, keras_style: bool = False, dropout: float = 0.2
              ) -> NetConfig:
    """torchvision's ``MobileNetV2(width_mult=...)``; with ``keras_style``
    keras.applications' ``MobileNetV2(alpha=width_mult)``: BN eps 1e-3, TF padding, and the
    block outputs rounded from ``int(c * alpha)`` (Keras truncates first)."""
    stem = make_divisible(32 * width_mult)
    blocks, inp = [], stem
    for t, c, n, s in V2_SETTING:
        out = make_divisible(int(c * width_mult) if keras_style else c * width_mult)
        for i in range(n):
            blocks.append(Block(inp, 3, int(round(inp * t)), out, 0, "ReLU6", s if i == 0 else 1))
            inp = out
    eps, momentum = V2_BN
    return NetConfig(2, stem, "ReLU6", tuple(blocks), make_divisible(1280 * max(1.0, width_mult)),
                     "ReLU6", None, KERAS_BN_EPS if keras_style else eps, momentum,
                     keras_style, False, dropout)


def v3_config(arch: str, alpha: float = 1.0, keras_style: bool = False, dropout: float = 0.2
              ) -> NetConfig:
    """torchvision's ``mobilenet_v3_large`` / ``_small`` (``alpha`` = its private
    ``_width_mult``); with ``keras_style`` keras.applications' ``MobileNetV3*(alpha=...)``:
    a 16-channel stem whatever alpha, expansions as ratios of the (rounded) input, TF
    padding, 1x1-conv head, and the head width 1280/1024 unless alpha > 1."""
    rows, last_channel = V3_SETTINGS[arch]
    blocks: list[Block] = []
    inp = 16 if keras_style else make_divisible(16 * alpha)
    for r_in, kernel, r_exp, r_out, se, act, stride in rows:
        out = make_divisible(r_out * alpha)
        expanded = make_divisible(inp * (r_exp / r_in)) if keras_style else make_divisible(
            r_exp * alpha)
        if keras_style and not blocks:
            expanded = inp  # keras.applications' block 0 never has an expand conv
        blocks.append(Block(inp, kernel, expanded, out, make_divisible(expanded // 4) if se
                            else 0, act, stride))
        inp = out
    head = (make_divisible(last_channel * alpha) if alpha > 1.0 else last_channel) \
        if keras_style else make_divisible(last_channel * alpha)
    eps, momentum = V3_BN
    return NetConfig(3, blocks[0].inp, "Hardswish", tuple(blocks), 6 * inp, "Hardswish", head,
                     eps, momentum, keras_style, keras_style, dropout)


def config(arch: str, *, width_mult: float = 1.0, keras_style: bool = False,
           dropout: float = 0.2) -> NetConfig:
    """The :class:`NetConfig` of ``arch`` (``mobilenet_v2`` or a ``mobilenet_v3_*``)."""
    if arch == "mobilenet_v2":
        return v2_config(width_mult, keras_style, dropout)
    return v3_config(arch, width_mult, keras_style, dropout)


@dataclass(frozen=True)
class Variant:
    """One registered model: its architecture and parameter count (torchvision's; the
    keras.applications variants have the same trainable weights, V3's head as 1x1 convs)."""

    arch: str
    num_params: int
    keras_app: str | None = None  # keras.applications function name


VARIANTS: dict[str, Variant] = {
    "mobilenet_v2": Variant("mobilenet_v2", 3_504_872),
    "mobilenet_v3_small": Variant("mobilenet_v3_small", 2_542_856),
    "mobilenet_v3_large": Variant("mobilenet_v3_large", 5_483_032),
    "keras_mobilenet_v2": Variant("mobilenet_v2", 3_504_872, "MobileNetV2"),
    "keras_mobilenet_v3_small": Variant("mobilenet_v3_small", 2_542_856, "MobileNetV3Small"),
    "keras_mobilenet_v3_large": Variant("mobilenet_v3_large", 5_483_032, "MobileNetV3Large"),
}

# Every stride-2 window pads at least half its kernel rounded down (3x3/2 pad 1, 5x5/2 pad 2)
# or, TF-style, ceil(h / 2) outputs; either maps h >= 1 to >= 1, and the pools are global.
MIN_INPUT_SIZE = (1, 1)

_PKG = "codenn_convert.models.mobilenet"

for _name, _variant in VARIANTS.items():
    _kwargs = {"arch": _variant.arch, **({"keras_style": True} if _variant.keras_app else {})}
    register_model(
        ModelSpec(
            name=_name,
            family="mobilenet",
            torch_builder=f"{_PKG}.torch_mobilenet:mobilenet",
            keras_builder=f"{_PKG}.keras_mobilenet:mobilenet",
            input_size=(224, 224),
            min_input_size=MIN_INPUT_SIZE,
            num_params=_variant.num_params,
            default=_name == "mobilenet_v3_large",
            builder_kwargs=MappingProxyType(_kwargs),
            init_hooks=("codenn_convert.twins.init:positive_batchnorm_shift",),
            keras_filter=f"{_PKG}.keras_applications:filter_{_variant.arch}"
            if _variant.keras_app else None,
        )
    )
