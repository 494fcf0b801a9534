"""Which layers the two twins share (*mapped layers*), and their outputs in torch's layout.

A mapped layer is a Keras layer whose name is a torch module path that runs exactly once in
the torch forward pass (Keras layer names are the torch module paths, so the correspondence
is by name).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from codenn_convert.interface import Layout
from codenn_convert.twins.graph import KerasGraph
from codenn_convert.twins.rules import keras_rule


@dataclass(frozen=True)
class MappedLayer:
    """A layer that both twins have, with its per-sample output shape in torch layout."""

    name: str
    shape: tuple[int, ...]  # (C, H, W) or (F,)
    #: Set when the Keras output is a flattening of an (H, W, C) map (torch flattens C, H, W).
    flatten_hwc: tuple[int, int, int] | None = None
    kind: str = ""  # its layer rule (``conv``, ``batchnorm``, ...); "" for weightless layers
    source: str | None = None  # the layer feeding it, if it has exactly one input
    #: Exporters may fold it into ``source`` (its rule says so: BatchNorm after a conv).
    folds_into_source: bool = False

    def nbytes(self, batch: int) -> int:
        return 4 * batch * int(np.prod(self.shape))


def mapped_layers(keras_model: Any, torch_model: Any, sample: np.ndarray) -> list[MappedLayer]:
    """The layers both twins have, in the Keras model's topological order.

    A torch module that runs more than once (a ResNet block's shared ``relu``) or not at all
    (InceptionV3's aux head in eval) has no single output to compare and is left out; so are
    outputs that are not an NHWC map or a vector, and torch modules that run on a
    channels-last tensor (ConvNeXt's in-block LayerNorm and Linears between two permutes):
    their output is not in torch's NCHW layout, so the next NCHW layer judges them.
    ``sample`` (NCHW, one sample is enough) drives the torch pass that counts the calls.
    """
    modules = dict(torch_model.named_modules())
    candidates: dict[str, Any] = {}
    for layer in keras_model.layers:
        if layer.name in modules and layer.name and type(layer).__name__ != "InputLayer":
            shape = getattr(layer.output, "shape", None)
            if shape is not None and len(shape) in (2, 4):
                candidates[layer.name] = layer
    calls, shapes = _calls(torch_model, modules, candidates, sample)
    graph = KerasGraph(keras_model)
    out = []
    for name, layer in candidates.items():
        if calls[name] != 1:
            continue
        dims = tuple(int(d) for d in layer.output.shape[1:])
        if _channels_last(dims, shapes[name]):
            continue
        rule = keras_rule(layer, required=False)
        common = {"kind": rule.name if rule else "", "source": graph.source(name),
                  "folds_into_source": bool(rule and rule.folds_into_source)}
        if len(dims) == 3:
            out.append(MappedLayer(name, (dims[2], dims[0], dims[1]), **common))
        else:
            out.append(MappedLayer(name, dims, graph.hwc_flatten_of(name), **common))
    return out


def _channels_last(keras_dims: tuple[int, ...], torch_dims: tuple[int, ...] | None) -> bool:
    """Whether torch's output of a Keras (H, W, C) map is that map in (H, W, C) order too.
    (A map of another size is still compared: a padding bug shows as a shape mismatch.)"""
    return (len(keras_dims) == 3 and torch_dims == keras_dims
            and torch_dims != (keras_dims[2], *keras_dims[:2]))


def _calls(torch_model: Any, modules: dict[str, Any], names: Iterable[str], sample: np.ndarray
           ) -> tuple[dict[str, int], dict[str, tuple[int, ...] | None]]:
    """How often each named torch module runs in one forward pass of ``sample[:1]``, and
    its (last) per-sample output shape."""
    import torch

    calls = dict.fromkeys(names, 0)
    shapes: dict[str, tuple[int, ...] | None] = dict.fromkeys(names)

    def counter(name: str) -> Callable[..., None]:
        def hook(_m: Any, _i: Any, out: Any) -> None:
            calls[name] += 1
            shapes[name] = tuple(out.shape[1:]) if isinstance(out, torch.Tensor) else None
        return hook

    handles = [modules[n].register_forward_hook(counter(n)) for n in calls]
    try:
        with torch.no_grad():
            torch_model(torch.from_numpy(np.ascontiguousarray(sample[:1])))
    finally:
        for h in handles:
            h.remove()
    return calls, shapes


def to_torch_layout(y: np.ndarray, layer: MappedLayer, layout: Layout) -> np.ndarray:
    """A layer output in torch's layout: NHWC maps transposed, H,W,C flattenings permuted.

    Both are exact permutations of the same values (the C,H,W flattening of the transposed
    map); nothing is resized or reinterpreted.
    """
    spatial = (1, 2) if layout == "NHWC" else (2, 3)
    if y.ndim == 4 and len(layer.shape) == 1 and all(y.shape[a] == 1 for a in spatial):
        # A 1x1 map where the other twin holds a vector (global pooling with or without
        # keepdims, as in InceptionV3's avgpool): the same values, the unit axes dropped.
        return np.squeeze(y, axis=spatial)
    if layout == "NCHW":
        return y
    if y.ndim == 4:
        return np.ascontiguousarray(y.transpose(0, 3, 1, 2))
    if y.ndim == 2 and layer.flatten_hwc is not None and y.shape[1] == np.prod(layer.flatten_hwc):
        h, w, c = layer.flatten_hwc
        return np.ascontiguousarray(
            y.reshape(y.shape[0], h, w, c).transpose(0, 3, 1, 2)).reshape(y.shape[0], -1)
    return y
