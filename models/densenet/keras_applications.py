"""Rename ``keras.applications`` DenseNet121/169/201 layers to our Keras twin's layer names.

keras.applications names its layers ``conv1_conv``/``conv1_bn`` (stem; the Keras 2 downloads
spell them ``conv1/conv``/``conv1/bn``), ``conv<s>_block<b>_<k>_<conv|bn>`` (dense layer b of
the dense block before transition s; k = 0 is the first BatchNorm, 1 the 1x1 conv and the
BatchNorm after it, 2 the 3x3 conv), ``pool<s>_<conv|bn>`` (transitions), ``bn`` (the final
BatchNorm) and ``predictions``. The renaming is a fixed rule onto torchvision's module paths:
stage s is ``denseblock<s-1>`` / ``transition<s-1>``. Values pass through untouched: the
kernels are in our Keras layout, and both concatenate the block input first and then each
layer's output, so the 1x1 kernels' input channels are in the same order.
"""

from __future__ import annotations

import re

import numpy as np

_LAYER = re.compile(r"conv([2-5])_block([1-9]\d*)_([0-2])_(conv|bn)")
_TRANSITION = re.compile(r"pool([2-4])_(conv|bn)")
#: (k, kind) of a dense layer's variables -> torchvision's module in ``_DenseLayer``.
_IN_LAYER = {("0", "bn"): "norm1", ("1", "conv"): "conv1", ("1", "bn"): "norm2",
             ("2", "conv"): "conv2"}
_FIXED = {"conv1_conv": "features.conv0", "conv1/conv": "features.conv0",
          "conv1_bn": "features.norm0", "conv1/bn": "features.norm0",
          "bn": "features.norm5", "predictions": "classifier"}


def _rename(name: str) -> str | None:
    if name in _FIXED:
        return _FIXED[name]
    if match := _LAYER.fullmatch(name):
        stage, block, k, kind = match.groups()
        module = _IN_LAYER.get((k, kind))
        if module is None:
            return None
        return f"features.denseblock{int(stage) - 1}.denselayer{block}.{module}"
    if match := _TRANSITION.fullmatch(name):
        stage, kind = match.groups()
        return f"features.transition{int(stage) - 1}.{'conv' if kind == 'conv' else 'norm'}"
    return None


def keras_applications_filter(
    weights: dict[str, list[np.ndarray]],
) -> dict[str, list[np.ndarray]] | None:
    """``weights`` renamed to the twin's layer names, or None if any name is not a
    keras.applications DenseNet name (or two names map to one layer)."""
    out: dict[str, list[np.ndarray]] = {}
    for name, arrays in weights.items():
        new = _rename(name)
        if new is None or new in out:
            return None
        out[new] = arrays
    return out if "features.conv0" in out else None
