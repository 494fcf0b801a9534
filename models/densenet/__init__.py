"""DenseNet-121/161/169/201, as torchvision defines them (``features.denseblock1...``,
``classifier``), and keras.applications' DenseNet121/169/201 as a style option of the same
builders.

The variant table below is the one family definition both twins read; this module imports
neither torch nor TensorFlow, so listing models stays light.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

from codenn_convert.registry import ModelSpec, register_model

#: Width of each dense layer's bottleneck, in multiples of the growth rate (torchvision's
#: ``bn_size``): conv1 is 1x1 to ``BN_SIZE * growth_rate`` channels, conv2 3x3 to
#: ``growth_rate``.
BN_SIZE = 4
#: Each transition halves the channels (``num_features // 2``) and H, W (2x2/2 avg pool).
TRANSITION_REDUCTION = 2


@dataclass(frozen=True)
class DenseNetVariant:
    """One DenseNet: growth rate, stem width, layers per dense block, and torchvision's
    parameter count."""

    growth_rate: int
    num_init_features: int
    block_config: tuple[int, int, int, int]
    num_params: int
    default: bool = False


@dataclass(frozen=True)
class DenseNetStyle:
    """Where the DenseNet definitions in the field differ (torchvision's values by default).

    keras.applications' DenseNet is torchvision's network with BatchNorm eps 1.001e-5. Its
    stem pads the 7x7/2 conv and the 3x3/2 max-pool with ``ZeroPadding2D``, which our Keras
    twin does too (exact, see ``keras_densenet``), so eps is the only option.
    """

    bn_eps: float = 1e-5


TORCHVISION_STYLE = DenseNetStyle()

VARIANTS: dict[str, DenseNetVariant] = {
    "densenet121": DenseNetVariant(32, 64, (6, 12, 24, 16), 7_978_856),
    "densenet161": DenseNetVariant(48, 96, (6, 12, 36, 24), 28_681_000),
    "densenet169": DenseNetVariant(32, 64, (6, 12, 32, 32), 14_149_480),
    "densenet201": DenseNetVariant(32, 64, (6, 12, 48, 32), 20_013_928),
}

#: keras.applications' style, as builder options (``DenseNetStyle`` fields).
KERAS_APPLICATIONS_STYLE = {"bn_eps": 1.001e-5}

#: keras.applications variants: name -> torchvision variant (same tree, same parameters).
KERAS_VARIANTS: dict[str, str] = {
    "keras_densenet121": "densenet121",
    "keras_densenet169": "densenet169",
    "keras_densenet201": "densenet201",
}

# The stem's 7x7/2 conv (pad 3) and 3x3/2 max-pool (pad 1) each map h >= 1 to
# floor((h - 1) / 2) + 1 = ceil(h / 2), so the first dense block sees ceil(h / 4). Each of the
# three transitions ends in an unpadded 2x2/2 average pool, floor(h / 2), which needs h >= 2;
# dense layers keep the size (1x1, and 3x3 pad 1). The last block needs ceil(h / 4) >= 8:
# 29 -> 15 -> 8 -> 4 -> 2 -> 1, while 28 -> 14 -> 7 -> 3 -> 1 -> 0 (an empty map).
MIN_INPUT_SIZE = (29, 29)

_PKG = "codenn_convert.models.densenet"


def _register(name: str, variant: str, *, style: dict[str, float],
              keras_filter: str | None = None, torch_filters: tuple[str, ...] = ()) -> None:
    register_model(
        ModelSpec(
            name=name,
            family="densenet",
            torch_builder=f"{_PKG}.torch_densenet:densenet",
            keras_builder=f"{_PKG}.keras_densenet:densenet",
            input_size=(224, 224),
            min_input_size=MIN_INPUT_SIZE,
            num_params=VARIANTS[variant].num_params,
            default=VARIANTS[variant].default and not style,
            builder_kwargs=MappingProxyType({"variant": variant, **style}),
            keras_filter=keras_filter,
            torch_filters=torch_filters,
        )
    )


for _name in VARIANTS:
    # torchvision's published DenseNet files spell ``norm.1`` for ``norm1``; only torchvision's
    # variants read them (keras.applications never wrote torch files), so such a file
    # identifies as one model.
    _register(_name, _name, style={},
              torch_filters=(f"{_PKG}.torchvision_legacy:rename_legacy_keys",))
for _name, _variant in KERAS_VARIANTS.items():
    _register(_name, _variant, style=KERAS_APPLICATIONS_STYLE,
              keras_filter=f"{_PKG}.keras_applications:keras_applications_filter")
