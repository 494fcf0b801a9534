"""Rename ``keras.applications`` ConvNeXtTiny ... Large layers to our Keras twin's names.

keras.applications names layers after the model (``<m>`` = ``convnext_tiny``, ...):
``<m>_stem_conv``/``_stem_layernorm``, ``<m>_downsampling_layernorm_<i>``/``_conv_<i>``,
``<m>_stage_<s>_block_<b>_<part>`` (``depthwise_conv``, ``layernorm``,
``pointwise_conv_1``/``_2``, ``layer_scale``) and ``<m>_head_layernorm``/``_head_dense``.
In the legacy HDF5 layout the stem and each downsampler are one nested ``Sequential``
(``<m>_stem``: conv kernel, bias, LayerNorm gamma, beta; ``<m>_downsampling_block_<i>``:
gamma, beta, kernel, bias), which this splits. The depthwise convs are
``Conv2D(groups=C)`` with kernels ``(7, 7, 1, C)``; our twin's ``DepthwiseConv2D`` holds
``(7, 7, C, 1)``, the same numbers (a reshape).
"""

from __future__ import annotations

import re

import numpy as np

_BLOCK = re.compile(r".+_stage_([0-3])_block_(\d+)_(depthwise_conv|layernorm|pointwise_conv_1|"
                    r"pointwise_conv_2|layer_scale)")
_DOWN = re.compile(r".+_downsampling_(layernorm|conv|block)_([0-2])")
_FIXED = {"stem_conv": "features.0.0", "stem_layernorm": "features.0.1",
          "head_layernorm": "classifier.0", "head_dense": "classifier.2"}
_PARTS = {"depthwise_conv": ".block.0", "layernorm": ".block.2", "pointwise_conv_1": ".block.3",
          "pointwise_conv_2": ".block.5", "layer_scale": ""}


def _split(name: str, arrays: list[np.ndarray]) -> dict[str, list[np.ndarray]] | None:
    """One keras.applications layer's arrays under our layer names (None: not ours)."""
    for suffix, ours in _FIXED.items():
        if name.endswith("_" + suffix):
            return {ours: arrays}
    if name.endswith("_stem"):  # legacy nested Sequential: conv, then LayerNorm
        return {"features.0.0": arrays[:2], "features.0.1": arrays[2:]}
    if match := _DOWN.fullmatch(name):
        kind, index = match[1], f"features.{2 * int(match[2]) + 2}"
        if kind == "block":  # legacy nested Sequential: LayerNorm, then conv
            return {f"{index}.0": arrays[:2], f"{index}.1": arrays[2:]}
        return {f"{index}.{0 if kind == 'layernorm' else 1}": arrays}
    if match := _BLOCK.fullmatch(name):
        ours = f"features.{2 * int(match[1]) + 1}.{match[2]}{_PARTS[match[3]]}"
        if match[3] == "depthwise_conv":  # grouped (7, 7, 1, C) -> depthwise (7, 7, C, 1)
            arrays = [np.ascontiguousarray(arrays[0].transpose(0, 1, 3, 2)), *arrays[1:]]
        return {ours: arrays}
    return None


def keras_filter(weights: dict[str, list[np.ndarray]]) -> dict[str, list[np.ndarray]] | None:
    """``weights`` renamed to the twin's layer names, or None if any name is not a
    keras.applications ConvNeXt name."""
    out: dict[str, list[np.ndarray]] = {}
    for name, arrays in weights.items():
        renamed = _split(name, list(arrays))
        if renamed is None or set(renamed) & set(out):
            return None
        out.update(renamed)
    return out if {"features.0.0", "features.0.1"} <= set(out) else None
