"""ResNet-18/34/50/101/152, as torchvision defines them (v1.5: stride on the 3x3 conv), and
keras.applications' ResNet50/101/152 (the original v1) as options of the same builders.

The variant table below is the one family definition both twins read; this module imports
neither torch nor TensorFlow, so listing models stays light.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

from codenn_convert.registry import ModelSpec, register_model

BlockKind = Literal["basic", "bottleneck"]

#: Output channels of a block relative to its ``planes`` (torchvision's ``block.expansion``).
EXPANSION: dict[BlockKind, int] = {"basic": 1, "bottleneck": 4}

#: ``planes`` of ``layer1`` ... ``layer4``; every stage but the first halves H and W.
STAGE_PLANES: tuple[int, int, int, int] = (64, 128, 256, 512)
STEM_CHANNELS = 64


@dataclass(frozen=True)
class ResNetVariant:
    """One ResNet depth: block type, blocks per stage, and torchvision's parameter count."""

    block: BlockKind
    layers: tuple[int, int, int, int]
    num_params: int
    default: bool = False


@dataclass(frozen=True)
class ResNetStyle:
    """Where the ResNet definitions in the field differ (torchvision's values by default).

    keras.applications ResNet is the original v1: the stride sits on the first 1x1 conv of a
    stage (``stride_in_1x1``), every conv has a bias, and BatchNorm eps is 1.001e-5.
    """

    stride_in_1x1: bool = False
    conv_bias: bool = False
    bn_eps: float = 1e-5


TORCHVISION_STYLE = ResNetStyle()

VARIANTS: dict[str, ResNetVariant] = {
    "resnet18": ResNetVariant("basic", (2, 2, 2, 2), 11_689_512),
    "resnet34": ResNetVariant("basic", (3, 4, 6, 3), 21_797_672),
    "resnet50": ResNetVariant("bottleneck", (3, 4, 6, 3), 25_557_032, default=True),
    "resnet101": ResNetVariant("bottleneck", (3, 4, 23, 3), 44_549_160),
    "resnet152": ResNetVariant("bottleneck", (3, 8, 36, 3), 60_192_808),
}

#: keras.applications' style, as builder options (``ResNetStyle`` fields).
KERAS_APPLICATIONS_STYLE = {"stride_in_1x1": True, "conv_bias": True, "bn_eps": 1.001e-5}

#: keras.applications variants: name -> (depth variant, parameter count of the torch twin).
KERAS_VARIANTS: dict[str, tuple[str, int]] = {
    "keras_resnet50": ("resnet50", 25_583_592),
    "keras_resnet101": ("resnet101", 44_601_832),
    "keras_resnet152": ("resnet152", 60_268_520),
}

# Every spatial op in a ResNet is either a stride-2 window whose padding is at least half its
# kernel rounded down (7x7/2 pad 3, 3x3/2 pad 1, max-pool 3x3/2 pad 1), a 1x1/2 downsample
# conv, or a shape-preserving stride-1 conv: each maps h >= 1 to floor((h - 1) / 2) + 1 >= 1,
# and the global average pool accepts any map. So a 1x1 input still yields >= 1 pixel at every
# layer (and every max-pool window holds a real pixel), while 0x0 is empty.
MIN_INPUT_SIZE = (1, 1)

_TORCH = "codenn_convert.models.resnet.torch_resnet"
_KERAS = "codenn_convert.models.resnet.keras_resnet"


def _register(name: str, variant: str, num_params: int, *, style: dict[str, object],
              keras_filter: str | None = None) -> None:
    register_model(
        ModelSpec(
            name=name,
            family="resnet",
            torch_builder=f"{_TORCH}:resnet",
            keras_builder=f"{_KERAS}:resnet",
            input_size=(224, 224),
            min_input_size=MIN_INPUT_SIZE,
            num_params=num_params,
            default=VARIANTS[variant].default and not style,
            builder_kwargs=MappingProxyType({"variant": variant, **style}),
            init_hooks=(f"{_TORCH}:small_residual_gamma",),
            keras_filter=keras_filter,
        )
    )


for _name, _variant in VARIANTS.items():
    _register(_name, _name, _variant.num_params, style={})
for _name, (_depth, _params) in KERAS_VARIANTS.items():
    _register(_name, _depth, _params, style=KERAS_APPLICATIONS_STYLE,
              keras_filter="codenn_convert.models.resnet.keras_applications:"
                           "keras_applications_filter")
