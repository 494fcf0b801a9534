"""InceptionV3 in Keras 3 (NHWC). Layer names are the torch module paths.

Weighted layers are named exactly like torch's modules (``Mixed_5b.branch1x1.conv``,
``Mixed_5b.branch1x1.bn``, ``AuxLogits.fc``), so the mapper derives every key by rule.
Weightless helpers carry descriptive names (``Mixed_5b.avg_pool``, ``Mixed_5b`` for a block's
concatenation).

The model lists ``[logits, aux]`` as outputs when ``aux_logits=True`` (torch only runs the aux
head in training mode, which a functional model cannot express); inference, export and
verification use ``codenn_convert.twins.build.inference_view(model)``, the logits-only view.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
from keras import layers

from codenn_convert.models.common.keras_layers import avg_pool, batch_norm, conv2d, max_pool
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

Size = int | tuple[int, int]


def basic_conv(
    x: Any, filters: int, kernel: Size, *, name: str, stride: int = 1, padding: Size = 0
) -> Any:
    """``BasicConv2d``: conv without bias (explicit symmetric padding), BN eps 1e-3, ReLU."""
    x = conv2d(x, filters, kernel, name=f"{name}.conv", stride=stride, padding=padding,
               use_bias=False)  # fmt: skip
    x = batch_norm(x, name=f"{name}.bn", eps=BN_EPS)
    return layers.ReLU(name=f"{name}.relu")(x)


def _branch_pool_avg(x: Any, name: str, count_include_pad: bool) -> Any:
    # torch: F.avg_pool2d(x, 3, stride=1, padding=1). With count_include_pad=True border
    # windows divide by 9, as zero padding then a 'valid' pool does; without, they divide by
    # the real pixels only, as Keras's 'same' pool does (symmetric at stride 1, 3x3).
    if not count_include_pad:
        return layers.AveragePooling2D(3, strides=1, padding="same", name=f"{name}.avg_pool")(x)
    return avg_pool(x, 3, stride=1, padding=1, name=f"{name}.avg_pool")


def inception_a(x: Any, name: str, pool_features: int, count_include_pad: bool = True) -> Any:
    """35x35 block: 1x1, 5x5, double 3x3 and pooled branches."""
    branch1x1 = basic_conv(x, 64, 1, name=f"{name}.branch1x1")
    branch5x5 = basic_conv(x, 48, 1, name=f"{name}.branch5x5_1")
    branch5x5 = basic_conv(branch5x5, 64, 5, padding=2, name=f"{name}.branch5x5_2")
    branch3x3dbl = basic_conv(x, 64, 1, name=f"{name}.branch3x3dbl_1")
    branch3x3dbl = basic_conv(branch3x3dbl, 96, 3, padding=1, name=f"{name}.branch3x3dbl_2")
    branch3x3dbl = basic_conv(branch3x3dbl, 96, 3, padding=1, name=f"{name}.branch3x3dbl_3")
    branch_pool = basic_conv(_branch_pool_avg(x, name, count_include_pad), pool_features, 1,
                             name=f"{name}.branch_pool")  # fmt: skip
    return layers.Concatenate(axis=-1, name=name)([branch1x1, branch5x5, branch3x3dbl, branch_pool])


def inception_b(x: Any, name: str) -> Any:
    """35x35 -> 17x17 reduction."""
    branch3x3 = basic_conv(x, 384, 3, stride=2, name=f"{name}.branch3x3")
    branch3x3dbl = basic_conv(x, 64, 1, name=f"{name}.branch3x3dbl_1")
    branch3x3dbl = basic_conv(branch3x3dbl, 96, 3, padding=1, name=f"{name}.branch3x3dbl_2")
    branch3x3dbl = basic_conv(branch3x3dbl, 96, 3, stride=2, name=f"{name}.branch3x3dbl_3")
    branch_pool = max_pool(x, 3, stride=2, name=f"{name}.max_pool")  # unpadded
    return layers.Concatenate(axis=-1, name=name)([branch3x3, branch3x3dbl, branch_pool])


def inception_c(x: Any, name: str, channels_7x7: int, count_include_pad: bool = True) -> Any:
    """17x17 block with factorised 1x7 / 7x1 convs."""
    c7 = channels_7x7
    branch1x1 = basic_conv(x, 192, 1, name=f"{name}.branch1x1")
    b7 = basic_conv(x, c7, 1, name=f"{name}.branch7x7_1")
    b7 = basic_conv(b7, c7, (1, 7), padding=(0, 3), name=f"{name}.branch7x7_2")
    b7 = basic_conv(b7, 192, (7, 1), padding=(3, 0), name=f"{name}.branch7x7_3")
    dbl = basic_conv(x, c7, 1, name=f"{name}.branch7x7dbl_1")
    dbl = basic_conv(dbl, c7, (7, 1), padding=(3, 0), name=f"{name}.branch7x7dbl_2")
    dbl = basic_conv(dbl, c7, (1, 7), padding=(0, 3), name=f"{name}.branch7x7dbl_3")
    dbl = basic_conv(dbl, c7, (7, 1), padding=(3, 0), name=f"{name}.branch7x7dbl_4")
    dbl = basic_conv(dbl, 192, (1, 7), padding=(0, 3), name=f"{name}.branch7x7dbl_5")
    pooled = _branch_pool_avg(x, name, count_include_pad)
    branch_pool = basic_conv(pooled, 192, 1, name=f"{name}.branch_pool")
    return layers.Concatenate(axis=-1, name=name)([branch1x1, b7, dbl, branch_pool])


def inception_d(x: Any, name: str) -> Any:
    """17x17 -> 8x8 reduction."""
    branch3x3 = basic_conv(x, 192, 1, name=f"{name}.branch3x3_1")
    branch3x3 = basic_conv(branch3x3, 320, 3, stride=2, name=f"{name}.branch3x3_2")
    b7 = basic_conv(x, 192, 1, name=f"{name}.branch7x7x3_1")
    b7 = basic_conv(b7, 192, (1, 7), padding=(0, 3), name=f"{name}.branch7x7x3_2")
    b7 = basic_conv(b7, 192, (7, 1), padding=(3, 0), name=f"{name}.branch7x7x3_3")
    b7 = basic_conv(b7, 192, 3, stride=2, name=f"{name}.branch7x7x3_4")
    branch_pool = max_pool(x, 3, stride=2, name=f"{name}.max_pool")  # unpadded
    return layers.Concatenate(axis=-1, name=name)([branch3x3, b7, branch_pool])


def inception_e(x: Any, name: str, count_include_pad: bool = True) -> Any:
    """8x8 block with split 1x3 / 3x1 branches."""
    branch1x1 = basic_conv(x, 320, 1, name=f"{name}.branch1x1")
    b3 = basic_conv(x, 384, 1, name=f"{name}.branch3x3_1")
    b3 = layers.Concatenate(axis=-1, name=f"{name}.branch3x3")([
        basic_conv(b3, 384, (1, 3), padding=(0, 1), name=f"{name}.branch3x3_2a"),
        basic_conv(b3, 384, (3, 1), padding=(1, 0), name=f"{name}.branch3x3_2b"),
    ])  # fmt: skip
    dbl = basic_conv(x, 448, 1, name=f"{name}.branch3x3dbl_1")
    dbl = basic_conv(dbl, 384, 3, padding=1, name=f"{name}.branch3x3dbl_2")
    dbl = layers.Concatenate(axis=-1, name=f"{name}.branch3x3dbl")([
        basic_conv(dbl, 384, (1, 3), padding=(0, 1), name=f"{name}.branch3x3dbl_3a"),
        basic_conv(dbl, 384, (3, 1), padding=(1, 0), name=f"{name}.branch3x3dbl_3b"),
    ])  # fmt: skip
    pooled = _branch_pool_avg(x, name, count_include_pad)
    branch_pool = basic_conv(pooled, 192, 1, name=f"{name}.branch_pool")
    return layers.Concatenate(axis=-1, name=name)([branch1x1, b3, dbl, branch_pool])


# Block kind -> builder; the option is pool_features (A) or channels_7x7 (C), as in torch;
# the flag is count_include_pad of the branch average pools (A, C, E).
_BLOCKS: dict[BlockKind, Callable[[Any, str, Any, bool], Any]] = {
    "A": lambda x, name, opt, cip: inception_a(x, name, opt, count_include_pad=cip),
    "B": lambda x, name, opt, cip: inception_b(x, name),
    "C": lambda x, name, opt, cip: inception_c(x, name, opt, count_include_pad=cip),
    "D": lambda x, name, opt, cip: inception_d(x, name),
    "E": lambda x, name, opt, cip: inception_e(x, name, count_include_pad=cip),
}


@keras.saving.register_keras_serializable(package="codenn")
class AuxSizeGuard(layers.Layer):
    """Feeds the aux head when Mixed_6e's map is too small for it (input below 299x299).

    The aux head's layers must exist at every input size (they own checkpoint weights the
    mapper must cover), but below 17x17 its 5x5/3 pool and 5x5 conv do not fit, and torch
    fails there too (in training mode, the only mode that runs the head). This layer makes
    the head's spatial size unknown so the layers can be built, and refuses to run: only the
    logits-only ``inference_view`` of such a model can be called.
    """

    def __init__(self, feature_size: tuple[int, int], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.feature_size = (int(feature_size[0]), int(feature_size[1]))

    def call(self, x: Any) -> Any:
        h, w = self.feature_size
        raise ValueError(
            f"InceptionV3's aux head needs a {AUX_SOURCE} map of at least "
            f"{AUX_MIN_FEATURE_SIZE[0]}x{AUX_MIN_FEATURE_SIZE[1]} (input >= "
            f"{AUX_MIN_INPUT_SIZE[0]}x{AUX_MIN_INPUT_SIZE[1]}); this twin's map is {h}x{w}. "
            "Call codenn_convert.twins.build.inference_view(model) for the logits."
        )

    def compute_output_shape(self, shape: tuple[Any, ...]) -> tuple[Any, ...]:
        return (shape[0], None, None, shape[3])

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "feature_size": self.feature_size}


def inception_aux(x: Any, num_classes: int, *, name: str = "AuxLogits") -> Any:
    """``InceptionAux`` on Mixed_6e's map: pool 5x5/3, 1x1 and 5x5 convs, global mean, fc."""
    h, w = int(x.shape[1]), int(x.shape[2])
    if h < AUX_MIN_FEATURE_SIZE[0] or w < AUX_MIN_FEATURE_SIZE[1]:
        x = AuxSizeGuard((h, w), name=f"{name}.size_guard")(x)
    x = avg_pool(x, 5, stride=3, name=f"{name}.avg_pool")  # F.avg_pool2d(x, 5, stride=3)
    x = basic_conv(x, 128, 1, name=f"{name}.conv0")
    x = basic_conv(x, 768, 5, name=f"{name}.conv1")
    x = layers.GlobalAveragePooling2D(name=f"{name}.avgpool")(x)  # adaptive (1, 1) = mean
    return layers.Dense(num_classes, name=f"{name}.fc")(x)


def inception_v3(
    *,
    input_size: tuple[int, int] = (299, 299),
    num_classes: int = 1000,
    aux_logits: bool = True,
    transform_input: bool = False,
    dropout: float = 0.5,
    count_include_pad: bool = True,
) -> keras.Model:
    """Build the Keras twin of torchvision's InceptionV3 for a fixed ``input_size`` (H, W).

    Outputs ``[logits, aux_logits]`` when ``aux_logits`` (logits first), else the logits.
    """
    inputs = keras.Input((*input_size, 3), name="input")
    x = inputs
    if transform_input:
        # torch: x[:, c] * (std[c] / 0.5) + (mean[c] - 0.5) / 0.5, in float32; Rescaling
        # computes the same x * scale + offset per channel (last axis), with no weights.
        x = layers.Rescaling(
            scale=list(TRANSFORM_SCALE), offset=list(TRANSFORM_OFFSET), name="transform_input"
        )(x)
    for name, out, kernel, stride, padding in STEM:
        x = basic_conv(x, out, kernel, stride=stride, padding=padding, name=name)
        if name in STEM_POOLS:
            x = max_pool(x, 3, stride=2, name=STEM_POOLS[name])  # unpadded
    aux = None
    for name, kind, option in MIXED:
        x = _BLOCKS[kind](x, name, option, count_include_pad)
        if name == AUX_SOURCE and aux_logits:
            aux = inception_aux(x, num_classes)
    x = layers.GlobalAveragePooling2D(name="avgpool")(x)  # AdaptiveAvgPool2d((1, 1))
    x = layers.Dropout(dropout, name="dropout")(x)
    logits = layers.Dense(num_classes, name="fc")(x)
    outputs = [logits, aux] if aux is not None else logits
    return keras.Model(inputs, outputs, name="inception_v3")
