"""ResNet-18/34/50/101/152, as torchvision defines them (v1.5: stride on the 3x3 conv).

The variant table below is the one family definition both twins read; this module imports
neither torch nor TensorFlow, so listing models stays light.
"""

from __future__ import annotations

from dataclasses import dataclass
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


VARIANTS: dict[str, ResNetVariant] = {
    "resnet18": ResNetVariant("basic", (2, 2, 2, 2), 11_689_512),
    "resnet34": ResNetVariant("basic", (3, 4, 6, 3), 21_797_672),
    "resnet50": ResNetVariant("bottleneck", (3, 4, 6, 3), 25_557_032, default=True),
    "resnet101": ResNetVariant("bottleneck", (3, 4, 23, 3), 44_549_160),
    "resnet152": ResNetVariant("bottleneck", (3, 8, 36, 3), 60_192_808),
}

# Every spatial op in a ResNet is either a stride-2 window whose padding is at least half its
# kernel rounded down (7x7/2 pad 3, 3x3/2 pad 1, max-pool 3x3/2 pad 1), a 1x1/2 downsample
# conv, or a shape-preserving stride-1 conv: each maps h >= 1 to floor((h - 1) / 2) + 1 >= 1,
# and the global average pool accepts any map. So a 1x1 input still yields >= 1 pixel at every
# layer (and every max-pool window holds a real pixel), while 0x0 is empty.
MIN_INPUT_SIZE = (1, 1)

for _name, _variant in VARIANTS.items():
    register_model(
        ModelSpec(
            name=_name,
            family="resnet",
            torch_builder=f"codenn_convert.models.resnet.torch_resnet:{_name}",
            keras_builder=f"codenn_convert.models.resnet.keras_resnet:{_name}",
            input_size=(224, 224),
            min_input_size=MIN_INPUT_SIZE,
            num_params=_variant.num_params,
            default=_variant.default,
            init_hooks=("codenn_convert.models.resnet.torch_resnet:small_residual_gamma",),
        )
    )
