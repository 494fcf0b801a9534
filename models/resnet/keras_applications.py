"""Rename ``keras.applications`` ResNet50/101/152 layers to our Keras twin's layer names.

keras.applications names its layers ``conv1_conv``/``conv1_bn`` (stem),
``conv<s>_block<b>_<k>_conv``/``_bn`` (k-th conv of block b of stage s, k = 0 being the
projection shortcut) and ``predictions``. The renaming is a fixed rule onto torchvision's
module paths: stage s is ``layer<s-1>``, block b is index ``b-1``, conv k is ``conv<k>``
(``bn<k>``) and the shortcut is ``downsample.0``/``downsample.1``. Values pass through
untouched: the kernels are already in our Keras layout. The network itself is v1 (stride on
the first 1x1, conv biases, BN eps 1.001e-5), which the ``keras_resnet*`` variants build.
"""

from __future__ import annotations

import re

import numpy as np

_BLOCK = re.compile(r"conv([2-5])_block([1-9]\d*)_([0-3])_(conv|bn)")
_FIXED = {"conv1_conv": "conv1", "conv1_bn": "bn1", "predictions": "fc"}


def _rename(name: str) -> str | None:
    if name in _FIXED:
        return _FIXED[name]
    match = _BLOCK.fullmatch(name)
    if match is None:
        return None
    stage, block, k, kind = int(match[1]), int(match[2]), int(match[3]), match[4]
    prefix = f"layer{stage - 1}.{block - 1}"
    if k == 0:
        return f"{prefix}.downsample.{0 if kind == 'conv' else 1}"
    return f"{prefix}.{'conv' if kind == 'conv' else 'bn'}{k}"


def keras_applications_filter(
    weights: dict[str, list[np.ndarray]],
) -> dict[str, list[np.ndarray]] | None:
    """``weights`` renamed to the twin's layer names, or None if any name is not a
    keras.applications ResNet name."""
    out: dict[str, list[np.ndarray]] = {}
    for name, arrays in weights.items():
        new = _rename(name)
        if new is None:
            return None
        out[new] = arrays
    return out if "conv1" in out else None
