"""VGG-11/13/16/19, with and without BatchNorm, as torchvision defines them.

This module holds the one configuration table that both twins (and the keras.applications
filter) read, and registers the eight specs. It imports neither torch nor TensorFlow.
"""

from __future__ import annotations

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


# depth -> (cfg, parameters without BN, with BN); counts are torchvision's documented ones.
_VARIANTS: dict[int, tuple[str, int, int]] = {
    11: ("A", 132_863_336, 132_868_840),
    13: ("B", 133_047_848, 133_053_736),
    16: ("D", 138_357_544, 138_365_992),
    19: ("E", 143_667_240, 143_678_248),
}

for _depth, (_cfg, _plain, _with_bn) in _VARIANTS.items():
    for _bn, _params in ((False, _plain), (True, _with_bn)):
        _name = f"vgg{_depth}_bn" if _bn else f"vgg{_depth}"
        register_model(
            ModelSpec(
                name=_name,
                family="vgg",
                torch_builder=f"codenn_convert.models.vgg.torch_vgg:{_name}",
                keras_builder=f"codenn_convert.models.vgg.keras_vgg:{_name}",
                input_size=(224, 224),
                # Five 2x2/2 max-pools (floor mode): 32 -> 16 -> 8 -> 4 -> 2 -> 1.
                min_input_size=(32, 32),
                num_params=_params,
                default=_name == "vgg19",
                # keras.applications ships VGG16/VGG19 without BN under its own layer names.
                # Deep and residual-free: see codenn_convert.init.positive_batchnorm_shift.
                init_hooks=("codenn_convert.init:positive_batchnorm_shift",) if _bn else (),
                keras_filter=(
                    None if _bn
                    else "codenn_convert.models.vgg.keras_applications:keras_applications_filter"
                ),
            )
        )
