"""Rename ``keras.applications`` VGG layers to our Keras twin's layer names.

keras.applications names its layers ``block<b>_conv<k>`` (k-th conv of the b-th pooling
block), ``fc1``, ``fc2`` and ``predictions``. The renaming is derived from the config table:
the configuration whose per-block conv counts match the file's is chosen, and its n-th conv
maps to its ``features`` index. Values pass through untouched: keras.applications' convs
are 3x3 'same' (= torch's padding 1 at stride 1) and its ``fc1`` flattens the 7x7x512 map in
H, W, C order exactly as our twin's ``Flatten`` does, so every kernel is already in our
Keras layout. Its ``predictions`` layer applies softmax; ours returns the logits.
"""

from __future__ import annotations

import re

import numpy as np

from codenn_convert.models.vgg import CFGS, feature_modules

_CONV = re.compile(r"block([1-9]\d*)_conv([1-9]\d*)")
_HEAD = {"fc1": "classifier.0", "fc2": "classifier.3", "predictions": "classifier.6"}


def _convs_per_block(cfg: str) -> list[int]:
    counts = [0]
    for v in CFGS[cfg]:
        if v == "M":
            counts.append(0)
        else:
            counts[-1] += 1
    return counts[:-1]  # every configuration ends with a pool


def keras_applications_filter(
    weights: dict[str, list[np.ndarray]],
) -> dict[str, list[np.ndarray]] | None:
    """``weights`` renamed to the twin's layer names, or None if they are not keras.applications
    VGG names (any other name, or conv numbering that matches no configuration)."""
    convs: dict[tuple[int, int], str] = {}
    for name in weights:
        match = _CONV.fullmatch(name)
        if match:
            convs[(int(match[1]), int(match[2]))] = name
        elif name not in _HEAD:
            return None
    if not convs:
        return None
    for cfg in CFGS:
        blocks = _convs_per_block(cfg)
        if set(convs) != {(b + 1, k + 1) for b, n in enumerate(blocks) for k in range(n)}:
            continue
        modules = feature_modules(cfg, batch_norm=False)
        conv_indices = [i for i, (kind, _) in enumerate(modules) if kind == "conv"]
        out = {_HEAD[name]: arrays for name, arrays in weights.items() if name in _HEAD}
        # (block, k) sorts in network order, which is the order of the configuration's convs.
        for index, key in zip(conv_indices, sorted(convs), strict=True):
            out[f"features.{index}"] = weights[convs[key]]
        return out
    return None
