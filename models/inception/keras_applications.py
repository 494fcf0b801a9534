"""Rename ``keras.applications`` InceptionV3 layers to our Keras twin's layer names.

keras.applications builds InceptionV3 from ``conv2d_bn`` calls whose layers get Keras's
automatic names (``conv2d``, ``conv2d_1``, ... and ``batch_normalization``, ...; the Keras 2
downloads count from 1), so the names carry only the creation order. That order is
torchvision's module order (every branch of every block in the same sequence), so the n-th
conv/BatchNorm pair maps to the n-th ``BasicConv2d`` of the twin, and ``predictions`` to
``fc``. Its BatchNorms have no gamma (``scale=False``); the filter inserts gamma = 1, which
computes the same function. Kernels are already in our Keras layout.
"""

from __future__ import annotations

import functools
import re

import numpy as np

_AUTO = re.compile(r"(conv2d|batch_normalization)(?:_(\d+))?")


@functools.cache
def basic_conv_paths() -> tuple[str, ...]:
    """Module paths of the ``BasicConv2d`` units of InceptionV3 without aux head, in order."""
    import torch

    from codenn_convert.models.inception.torch_inception import BasicConv2d, inception_v3

    with torch.device("meta"):
        model = inception_v3(aux_logits=False)
    return tuple(name for name, m in model.named_modules() if isinstance(m, BasicConv2d))


def _in_creation_order(weights: dict[str, list[np.ndarray]]) -> dict[str, list[str]] | None:
    found: dict[str, list[tuple[int, str]]] = {"conv2d": [], "batch_normalization": []}
    for name in weights:
        match = _AUTO.fullmatch(name)
        if match is None:
            if name != "predictions":
                return None
            continue
        found[match[1]].append((int(match[2] or 0), name))
    return {kind: [n for _, n in sorted(items)] for kind, items in found.items()}


def keras_applications_filter(
    weights: dict[str, list[np.ndarray]],
) -> dict[str, list[np.ndarray]] | None:
    """``weights`` renamed to the twin's layer names (gamma = 1 added to BatchNorms without
    one), or None if they are not keras.applications InceptionV3 names and counts."""
    ordered = _in_creation_order(weights)
    paths = basic_conv_paths()
    if ordered is None or "predictions" not in weights or not all(
            len(names) == len(paths) for names in ordered.values()):
        return None
    out = {"fc": weights["predictions"]}
    for path, conv, bn in zip(paths, ordered["conv2d"], ordered["batch_normalization"],
                              strict=True):
        out[f"{path}.conv"] = weights[conv]
        arrays = weights[bn]
        if len(arrays) == 3:  # beta, moving_mean, moving_variance: scale=False
            arrays = [np.ones_like(arrays[0]), *arrays]
        out[f"{path}.bn"] = arrays
    return out
