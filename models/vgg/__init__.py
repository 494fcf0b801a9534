"""VGG-11/13/16/19, with and without BatchNorm, as torchvision defines them.

This module holds the one configuration table that both twins (and the keras.applications
filter) read, and registers the eight specs. It imports neither torch nor TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

from codenn_convert.registry import ModelSpec, register_model

#: torchvision's ``cfgs``: conv output widths in order, ``"M"`` for a 2x2/2 max-pool.
CFGS: dict[str, tuple[int | Literal["M"], ...]] = {
    "A": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "B": (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "D": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512,
          "M"),
    "E": (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
          512, 512, 512, 512, "M"),
}

ModuleKind = Literal["conv", "bn", "relu", "pool"]


def feature_modules(cfg: str, *, batch_norm: bool) -> list[tuple[ModuleKind, int]]:
    """The ``features`` modules in order, as ``(kind, channels)``; the position is the index
    in ``features`` (torchvision's ``make_layers``: conv, [bn], relu per width; pool per M)."""
    out: list[tuple[ModuleKind, int]] = []
    channels = 3
    for v in CFGS[cfg]:
        if v == "M":
            out.append(("pool", channels))
            continue
        channels = int(v)
        out.append(("conv", channels))
        if batch_norm:
            out.append(("bn", channels))
        out.append(("relu", channels))
    return out


@dataclass(frozen=True)
class VGGVariant:
    """One VGG: configuration, BatchNorm or not, and torchvision's parameter count."""

    cfg: str
    batch_norm: bool
    num_params: int


#: Every variant both twins build; parameter counts are torchvision's documented ones.
VARIANTS: dict[str, VGGVariant] = {
    "vgg11": VGGVariant("A", False, 132_863_336),
    "vgg11_bn": VGGVariant("A", True, 132_868_840),
    "vgg13": VGGVariant("B", False, 133_047_848),
    "vgg13_bn": VGGVariant("B", True, 133_053_736),
    "vgg16": VGGVariant("D", False, 138_357_544),
    "vgg16_bn": VGGVariant("D", True, 138_365_992),
    "vgg19": VGGVariant("E", False, 143_667_240),
    "vgg19_bn": VGGVariant("E", True, 143_678_248),
}

for _name, _variant in VARIANTS.items():
    register_model(
        ModelSpec(
            name=_name,
            family="vgg",
            torch_builder="codenn_convert.models.vgg.torch_vgg:vgg",
            keras_builder="codenn_convert.models.vgg.keras_vgg:vgg",
            input_size=(224, 224),
            # Five 2x2/2 max-pools (floor mode): 32 -> 16 -> 8 -> 4 -> 2 -> 1.
            min_input_size=(32, 32),
            num_params=_variant.num_params,
            default=_name == "vgg19",
            builder_kwargs=MappingProxyType({"variant": _name}),
            # Deep and residual-free: see codenn_convert.twins.init.positive_batchnorm_shift.
            init_hooks=(
                ("codenn_convert.twins.init:positive_batchnorm_shift",)
                if _variant.batch_norm else ()
            ),
            # keras.applications ships VGG16/VGG19 without BN under its own layer names.
            keras_filter=(
                None if _variant.batch_norm
                else "codenn_convert.models.vgg.keras_applications:keras_applications_filter"
            ),
        )
    )
