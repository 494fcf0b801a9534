"""The nodes int8 quantisation leaves in float32, as a table of rules.

Each rule names the nodes of a (basic-optimised) float32 graph that
``onnxruntime.quantization.quantize_static`` must not quantise (its ``nodes_to_exclude``),
and why. :func:`excluded_nodes` is what :func:`codenn_convert.export.precision.to_int8`
passes on.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class _Graph:
    """What the rules read of a graph: its nodes, their producers and consumers, and the
    shapes of its initializers (their data is read only for small ones)."""

    nodes: list[Any]
    producer: dict[str, Any]
    consumers: dict[str, list[Any]]
    dims: dict[str, tuple[int, ...]]
    small: dict[str, Any]


def _index(model: Any) -> _Graph:
    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list[Any]] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    dims = {t.name: tuple(t.dims) for t in graph.initializer}
    small = {t.name: t for t in graph.initializer if math.prod(t.dims) <= 16}
    return _Graph(list(graph.node), producer, consumers, dims, small)


def _nonfinite_constant(g: _Graph) -> list[str]:
    """Nodes fed a non-finite constant, which int8 cannot represent (the Keras twins' −inf
    max-pool padding: a quantised ``Pad`` gets an infinite range, a NaN scale)."""
    from onnx import numpy_helper

    bad = {name for name, t in g.small.items() if not np.isfinite(numpy_helper.to_array(t)).all()}
    return [n.name for n in g.nodes if bad.intersection(n.input)]


def _channels(g: _Graph, name: str) -> int | None:
    """C if initializer ``name`` holds one value per channel of an NCHW tensor
    (``[C, 1, 1]`` or ``[1, C, 1, 1]``, C > 1), else None."""
    dims = g.dims.get(name)
    if dims is None or len(dims) not in (3, 4) or dims[-2:] != (1, 1) or dims[:-3] not in (
            (), (1,)):
        return None
    return dims[-3] if dims[-3] > 1 else None


def _affine(g: _Graph, node: Any) -> tuple[list[Any], str] | None:
    """The nodes of an unfolded BatchNorm starting at ``node`` (torch's
    ``BatchNormalization``; tf2onnx's ``Mul`` then ``Add`` by per-channel constants) and
    the tensor it normalises, or None."""
    if node.op_type == "BatchNormalization":
        return [node], node.input[0]
    if node.op_type != "Mul" or len(node.input) != 2:
        return None
    scale = [_channels(g, i) for i in node.input]
    users = g.consumers.get(node.output[0], [])
    if scale.count(None) != 1 or len(users) != 1 or users[0].op_type != "Add":
        return None
    shift = [_channels(g, i) for i in users[0].input if i != node.output[0]]
    c = next(s for s in scale if s)
    data = node.input[scale.index(None)]
    return ([node, users[0]], data) if shift == [c] else None


def _unfolded_batchnorm(g: _Graph) -> list[str]:
    """BatchNorms left after folding, with the ``Concat`` that feeds one.

    A BatchNorm after its conv is folded into it before quantising; one that comes first
    (DenseNet's BN-ReLU-conv on the concatenated features) cannot be. It divides each
    channel by that channel's spread, so quantising its input per tensor (one range for
    channels whose spreads differ by orders of magnitude) and then rescaling puts the small
    channels' rounding noise at the size of their signal; tf2onnx's ``Mul``/``Add`` would
    also get the per-channel scale and shift quantised per tensor. The conv outputs a
    ``Concat`` joins stay quantised (each with its own range); the ReLU after the BatchNorm
    and the conv reading it are quantised as before.
    """
    out: list[str] = []
    for node in g.nodes:
        found = _affine(g, node)
        if found is None:
            continue
        affine, data = found
        out += [n.name for n in affine]
        source = g.producer.get(data)
        if source is not None and source.op_type == "Concat":
            out.append(source.name)
    return out


@dataclass(frozen=True)
class Exclusion:
    """One rule: which nodes stay float32 (``find``), and its name."""

    name: str
    find: Callable[[_Graph], list[str]]


#: Every rule, applied in order; a node named twice is excluded once.
INT8_EXCLUSIONS: tuple[Exclusion, ...] = (
    Exclusion("nonfinite-constant", _nonfinite_constant),
    Exclusion("unfolded-batchnorm", _unfolded_batchnorm),
)


def excluded_nodes(path: str | os.PathLike[str]) -> dict[str, list[str]]:
    """``{rule name: node names}`` of the ONNX file ``path`` (weights not read).

    quantize_static excludes nodes by name, and ``""`` would name every unnamed node, so a
    node without a name is left out (both exporters name every node).
    """
    import onnx

    g = _index(onnx.load(str(path), load_external_data=False))
    return {rule.name: [n for n in rule.find(g) if n] for rule in INT8_EXCLUSIONS}
