"""Rename keras.applications MobileNetV2 / MobileNetV3Small / MobileNetV3Large layers to our
Keras twin's layer names (torchvision's module paths).

The map is derived from the twin's own :class:`~codenn_convert.models.mobilenet.NetConfig`
(which blocks have an expand conv or a squeeze-excitation), never from the file, and a file
must hold exactly the expected names to match. Values pass through untouched: kernels are in
our Keras layout already (depthwise ``(kh, kw, C, 1)``). keras.applications names:

* V2: ``Conv1``/``bn_Conv1``; block 0 ``expanded_conv_{depthwise,project}[_BN]``; block i
  ``block_<i>_{expand,depthwise,project}[_BN]``; ``Conv_1``/``Conv_1_bn``; ``predictions``.
* V3: ``conv``/``conv_bn``; block 0 ``expanded_conv_*``, block i ``expanded_conv_<i>_*``
  with ``expand``, ``depthwise``, ``squeeze_excite_conv``, ``squeeze_excite_conv_1``,
  ``project`` (BatchNorms ``_bn``); ``conv_1``/``conv_1_bn``; ``conv_2`` and ``logits``
  (the 1x1-conv head).

``minimalistic=True`` MobileNetV3s (3x3 kernels, ReLU, no squeeze-excitation) are refused by
name: their names are exactly the full model's without the squeeze-excitation layers, and
the filter says so (their kernels differ too, so nothing could convert them silently).
"""

from __future__ import annotations

import functools

import numpy as np

from codenn_convert.errors import UsageError
from codenn_convert.models.mobilenet import NetConfig, config

Weights = dict[str, list[np.ndarray]]


def _v2_block(i: int, has_expand: bool) -> dict[str, str]:
    src = f"block_{i}_" if i else "expanded_conv_"
    dst = f"features.{i + 1}.conv"
    j = 1 if has_expand else 0
    names = {f"{src}depthwise": f"{dst}.{j}.0", f"{src}depthwise_BN": f"{dst}.{j}.1",
             f"{src}project": f"{dst}.{j + 1}", f"{src}project_BN": f"{dst}.{j + 2}"}
    if has_expand:
        names |= {f"{src}expand": f"{dst}.0.0", f"{src}expand_BN": f"{dst}.0.1"}
    return names


def _v3_block(i: int, has_expand: bool, has_se: bool) -> dict[str, str]:
    src = f"expanded_conv_{i}_" if i else "expanded_conv_"
    dst = f"features.{i + 1}.block"
    j = 1 if has_expand else 0
    names = {f"{src}depthwise": f"{dst}.{j}.0", f"{src}depthwise_bn": f"{dst}.{j}.1"}
    if has_expand:
        names |= {f"{src}expand": f"{dst}.0.0", f"{src}expand_bn": f"{dst}.0.1"}
    if has_se:
        names |= {f"{src}squeeze_excite_conv": f"{dst}.{j + 1}.fc1",
                  f"{src}squeeze_excite_conv_1": f"{dst}.{j + 1}.fc2"}
    k = j + 1 + has_se
    return names | {f"{src}project": f"{dst}.{k}.0", f"{src}project_bn": f"{dst}.{k}.1"}


def keras_names(cfg: NetConfig) -> dict[str, str]:
    """keras.applications layer name -> twin layer name, for ``cfg``."""
    last = f"features.{len(cfg.blocks) + 1}"
    if cfg.version == 2:
        out = {"Conv1": "features.0.0", "bn_Conv1": "features.0.1", "Conv_1": f"{last}.0",
               "Conv_1_bn": f"{last}.1", "predictions": "classifier.1"}
        for i, b in enumerate(cfg.blocks):
            out |= _v2_block(i, b.expanded != b.inp)
        return out
    out = {"conv": "features.0.0", "conv_bn": "features.0.1", "conv_1": f"{last}.0",
           "conv_1_bn": f"{last}.1", "conv_2": "classifier.0", "logits": "classifier.3"}
    for i, b in enumerate(cfg.blocks):
        out |= _v3_block(i, b.expanded != b.inp, bool(b.se))
    return out


@functools.cache
def _keras_names(arch: str) -> dict[str, str]:
    return keras_names(config(arch, keras_style=True))


def _filter(arch: str, app: str, weights: Weights) -> Weights | None:
    names = _keras_names(arch)
    if set(weights) == set(names):
        return {names[k]: v for k, v in weights.items()}
    if arch != "mobilenet_v2" and set(weights) == {k for k in names if "squeeze_excite" not in k}:
        raise UsageError(f"this looks like keras.applications {app}(minimalistic=True) (no "
                         "squeeze-excitation layers): minimalistic MobileNetV3 is not "
                         "supported; only minimalistic=False converts")
    return None


def filter_mobilenet_v2(weights: Weights) -> Weights | None:
    """keras.applications ``MobileNetV2`` names -> ``keras_mobilenet_v2``'s, else None."""
    return _filter("mobilenet_v2", "MobileNetV2", weights)


def filter_mobilenet_v3_small(weights: Weights) -> Weights | None:
    """keras.applications ``MobileNetV3Small`` names -> ``keras_mobilenet_v3_small``'s."""
    return _filter("mobilenet_v3_small", "MobileNetV3Small", weights)


def filter_mobilenet_v3_large(weights: Weights) -> Weights | None:
    """keras.applications ``MobileNetV3Large`` names -> ``keras_mobilenet_v3_large``'s."""
    return _filter("mobilenet_v3_large", "MobileNetV3Large", weights)
