"""Rename ``keras.applications`` EfficientNetB0-B7 layers to our Keras twin's layer names.

keras.applications names the preprocessing ``normalization`` (Keras' automatic name, so
``normalization_<n>`` when the session held others), the stem ``stem_conv``/``stem_bn``,
the blocks ``block<s><letter>_<part>`` (stage s from 1, block a, b, ...; parts
``expand_conv``/``expand_bn`` when the expand ratio is not 1, ``dwconv``/``bn``,
``se_reduce``/``se_expand``, ``project_conv``/``project_bn``), the head
``top_conv``/``top_bn`` and ``predictions``. Our names are torchvision's module paths:
``features.<s>.<b>.block.<i>``, with ``i`` shifted by one when the block has no expand conv.
Values pass through untouched (the kernels are already in our Keras layout).
"""

from __future__ import annotations

import re

import numpy as np

_BLOCK = re.compile(r"block([1-9])([a-z])_(expand_conv|expand_bn|dwconv|bn|se_reduce|"
                    r"se_expand|project_conv|project_bn)")
_NORMALIZATION = re.compile(r"normalization(_\d+)?")
#: part -> (index in the block after the expand conv, torch suffix)
_PARTS = {"dwconv": (0, "0"), "bn": (0, "1"), "se_reduce": (1, "fc1"),
          "se_expand": (1, "fc2"), "project_conv": (2, "0"), "project_bn": (2, "1")}
_STAGES = 7  # keras.applications EfficientNet B0-B7: seven stages, then top_conv


def _rename(name: str, expands: set[str]) -> str | None:
    fixed = {"stem_conv": "features.0.0", "stem_bn": "features.0.1",
             "top_conv": f"features.{_STAGES + 1}.0", "top_bn": f"features.{_STAGES + 1}.1",
             "predictions": "classifier.1"}
    if name in fixed:
        return fixed[name]
    if _NORMALIZATION.fullmatch(name):
        return "normalization"
    match = _BLOCK.fullmatch(name)
    if match is None:
        return None
    stage, letter, part = int(match[1]), match[2], match[3]
    prefix = f"features.{stage}.{ord(letter) - ord('a')}.block"
    if part.startswith("expand_"):
        return f"{prefix}.0.{'0' if part == 'expand_conv' else '1'}"
    index, suffix = _PARTS[part]
    return f"{prefix}.{index + (f'block{stage}{letter}' in expands)}.{suffix}"


def keras_filter(weights: dict[str, list[np.ndarray]]) -> dict[str, list[np.ndarray]] | None:
    """``weights`` renamed to the twin's layer names, or None if any name is not a
    keras.applications EfficientNet name."""
    expands = {n[: -len("_expand_conv")] for n in weights if n.endswith("_expand_conv")}
    out: dict[str, list[np.ndarray]] = {}
    for name, arrays in weights.items():
        new = _rename(name, expands)
        if new is None or new in out:
            return None
        out[new] = arrays
    return out if {"features.0.0", "normalization"} <= set(out) else None
