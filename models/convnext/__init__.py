"""ConvNeXt Tiny/Small/Base/Large, as torchvision defines them
(``torchvision/models/convnext.py``).

The variant table is the one family definition both twins read; this module imports
neither torch nor TensorFlow. ConvNeXt's layer types each have a registered rule
(:mod:`codenn_convert.twins.rules`): the 7x7 depthwise conv, LayerNorm (channels-first
``LayerNorm2d`` in the stem, downsamplers and head; channels-last ``nn.LayerNorm`` inside
each block, eps 1e-6), the channels-last ``Linear`` (the plain dense rule) and the layer
scale. GELU is exact (erf), as torchvision's ``nn.GELU()``.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

from codenn_convert.registry import ModelSpec, register_model

#: LayerNorm eps of every ConvNeXt norm (torchvision and keras.applications alike).
LN_EPS = 1e-6
#: torchvision's ``layer_scale`` initial value (trained checkpoints carry their own).
LAYER_SCALE_INIT = 1e-6


@dataclass(frozen=True)
class ConvNeXtVariant:
    """Channels and blocks of the four stages, stochastic depth, parameter count."""

    dims: tuple[int, int, int, int]
    depths: tuple[int, int, int, int]
    stochastic_depth_prob: float
    num_params: int
    default: bool = False


VARIANTS: dict[str, ConvNeXtVariant] = {
    "convnext_tiny": ConvNeXtVariant((96, 192, 384, 768), (3, 3, 9, 3), 0.1, 28_589_128,
                                     default=True),
    "convnext_small": ConvNeXtVariant((96, 192, 384, 768), (3, 3, 27, 3), 0.4, 50_223_688),
    "convnext_base": ConvNeXtVariant((128, 256, 512, 1024), (3, 3, 27, 3), 0.5, 88_591_464),
    "convnext_large": ConvNeXtVariant((192, 384, 768, 1536), (3, 3, 27, 3), 0.5,
                                      197_767_336),
}

# The 4x4/4 stem and three 2x2/2 downsamplers are unpadded: H must be >= 32 for one pixel
# to reach the last stage (the 7x7 depthwise convs pad 3 and keep any size).
MIN_INPUT_SIZE = (32, 32)

#: keras.applications' ``include_preprocessing`` (its default: True) normalises raw pixels
#: with these constants (not weights: they are not in its files).
PRESTEM_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
PRESTEM_VARIANCE = ((0.229 * 255) ** 2, (0.224 * 255) ** 2, (0.225 * 255) ** 2)

_PKG = "codenn_convert.models.convnext"


def _register(name: str, variant: str, *, style: dict[str, object],
              keras_filter: str | None = None) -> None:
    v = VARIANTS[variant]
    register_model(
        ModelSpec(
            name=name,
            family="convnext",
            torch_builder=f"{_PKG}.torch_convnext:convnext",
            keras_builder=f"{_PKG}.keras_convnext:convnext",
            input_size=(224, 224),
            min_input_size=MIN_INPUT_SIZE,
            num_params=v.num_params,
            default=v.default and not style,
            builder_kwargs=MappingProxyType({"variant": variant, **style}),
            keras_filter=keras_filter,
        )
    )


for _name in VARIANTS:
    _register(_name, _name, style={})
# keras.applications ConvNeXtTiny ... Large: torchvision's trees, with its pixel
# normalisation in the model (``--option include_preprocessing=false`` for models built
# without it: the weights files are the same).
for _name in VARIANTS:
    _register(f"keras_{_name}", _name, style={"include_preprocessing": True},
              keras_filter=f"{_PKG}.keras_applications:keras_filter")
