"""InceptionV3, as torchvision defines it (``inception_v3``, 299x299, aux head included).

The tables below are the one family definition both twins read; this module imports neither
torch nor TensorFlow, so listing models stays light.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Literal

from codenn_convert.registry import ModelSpec, register_model

BlockKind = Literal["A", "B", "C", "D", "E"]

#: ``BasicConv2d``'s BatchNorm eps (torchvision uses 0.001 there, not torch's 1e-5).
BN_EPS = 1e-3

#: Stem convs before the Mixed blocks: (module name, out channels, kernel, stride, padding).
#: ``maxpool1`` follows ``Conv2d_2b_3x3`` and ``maxpool2`` follows ``Conv2d_4a_3x3``.
STEM: tuple[tuple[str, int, int, int, int], ...] = (
    ("Conv2d_1a_3x3", 32, 3, 2, 0),
    ("Conv2d_2a_3x3", 32, 3, 1, 0),
    ("Conv2d_2b_3x3", 64, 3, 1, 1),
    ("Conv2d_3b_1x1", 80, 1, 1, 0),
    ("Conv2d_4a_3x3", 192, 3, 1, 0),
)
STEM_POOLS: dict[str, str] = {"Conv2d_2b_3x3": "maxpool1", "Conv2d_4a_3x3": "maxpool2"}

#: Mixed blocks in order: (module name, block kind, option). The option is ``pool_features``
#: for InceptionA and ``channels_7x7`` for InceptionC; B, D and E take none.
MIXED: tuple[tuple[str, BlockKind, int | None], ...] = (
    ("Mixed_5b", "A", 32),
    ("Mixed_5c", "A", 64),
    ("Mixed_5d", "A", 64),
    ("Mixed_6a", "B", None),
    ("Mixed_6b", "C", 128),
    ("Mixed_6c", "C", 160),
    ("Mixed_6d", "C", 160),
    ("Mixed_6e", "C", 192),
    ("Mixed_7a", "D", None),
    ("Mixed_7b", "E", None),
    ("Mixed_7c", "E", None),
)

#: The block whose output feeds ``AuxLogits`` (torchvision registers AuxLogits right after it).
AUX_SOURCE = "Mixed_6e"

#: The aux head pools 5x5/3 and then applies a 5x5 'valid' conv, so it needs a 17x17 map
#: from Mixed_6e: floor((17 - 5) / 3) + 1 = 5. That map needs a 299x299 input (298 -> 16).
AUX_MIN_FEATURE_SIZE = (17, 17)
AUX_MIN_INPUT_SIZE = (299, 299)

#: ``transform_input``: torchvision maps ImageNet-normalised input to the [-1, 1] scaling the
#: Google weights expect, channel c -> x * (std[c] / 0.5) + (mean[c] - 0.5) / 0.5.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TRANSFORM_SCALE = tuple(s / 0.5 for s in IMAGENET_STD)
TRANSFORM_OFFSET = tuple((m - 0.5) / 0.5 for m in IMAGENET_MEAN)

# Mixed_7a's 3x3/2 convs and max-pool need a 3x3 map from Mixed_6e. Working back:
# 75 -> 37 (1a, 3x3/2) -> 35 (2a) -> 35 (2b) -> 17 (maxpool1) -> 17 (3b) -> 15 (4a)
# -> 7 (maxpool2) -> 7 (Mixed_5*) -> 3 (Mixed_6a) -> 3 (Mixed_6*) -> 1 (Mixed_7a);
# 74 gives 2x2 at Mixed_6e, where Mixed_7a's 3x3 windows do not fit.
MIN_INPUT_SIZE = (75, 75)

_TORCH = "codenn_convert.models.inception.torch_inception"
_KERAS = "codenn_convert.models.inception.keras_inception"

register_model(
    ModelSpec(
        name="inception_v3",
        family="inception",
        torch_builder="codenn_convert.models.inception.torch_inception:inception_v3",
        keras_builder="codenn_convert.models.inception.keras_inception:inception_v3",
        input_size=(299, 299),
        min_input_size=MIN_INPUT_SIZE,
        num_params=27_161_264,
        default=True,
        init_hooks=(
            "codenn_convert.twins.init:positive_batchnorm_shift",
            "codenn_convert.models.inception.torch_inception:calibrate_aux_head",
        ),
    )
)

# keras.applications InceptionV3 as options of the same builders: branch average pools that
# do not count the padding (Keras 'same'), no aux head; its BatchNorms have no gamma (eps is
# 1e-3, as torchvision's), which the filter fills with 1, and its classifier is ``predictions``.
register_model(
    ModelSpec(
        name="keras_inception_v3",
        family="inception",
        torch_builder=f"{_TORCH}:inception_v3",
        keras_builder=f"{_KERAS}:inception_v3",
        input_size=(299, 299),
        min_input_size=MIN_INPUT_SIZE,
        num_params=23_834_568,
        builder_kwargs=MappingProxyType({"aux_logits": False, "count_include_pad": False}),
        init_hooks=("codenn_convert.twins.init:positive_batchnorm_shift",),
        keras_filter="codenn_convert.models.inception.keras_applications:"
                     "keras_applications_filter",
    )
)
