"""Where a mapped layer's output lives in an ONNX graph, read from how each exporter names
its nodes.

A torch-exported graph is read through the dynamo exporter's ``pkg.torch.onnx.name_scopes``
node metadata (the module path of every node), or the TorchScript exporter's node names; a
tf2onnx graph through its node names, which start with the Keras layer name's TF name scope
(``layer1.0.conv1_1/convolution``). Layers with no tensor of their own are skipped: BatchNorm
fused into the conv before it makes the conv's output vanish from the torch graph, and
Dropout is no node at all.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Sequence
from typing import Any, Literal

from codenn_convert.verification.matching import MappedLayer


def _name_scopes(node: Any) -> list[str] | None:
    for prop in node.metadata_props:
        if prop.key == "pkg.torch.onnx.name_scopes":
            try:
                value = ast.literal_eval(prop.value)
            except (ValueError, SyntaxError):
                return None
            return [str(v) for v in value] if isinstance(value, list) else None
    return None


_TF_SUFFIX = re.compile(r"(.+)_\d+")


#: Nodes an int8 (QDQ) conversion inserts between a layer and its consumers.
_QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})


#: How an ONNX graph names its nodes after the model's layers (see find_layer_tensors).
Flavour = Literal["torch", "torchscript", "tf2onnx"]


def _keras_scope(node_name: str, wanted: set[str]) -> str | None:
    """The Keras layer a tf2onnx node belongs to: the first name-scope component that is a
    wanted layer name, as is or with TF's uniquifying ``_<n>`` suffix."""
    for part in node_name.split("/")[:-1]:
        if part in wanted:
            return part
        m = _TF_SUFFIX.fullmatch(part)
        if m and m.group(1) in wanted:
            return m.group(1)
    return None


def _torchscript_paths(node_name: str) -> list[str]:
    """Module paths enclosing a node of torch's TorchScript exporter, outermost first.

    Its names nest attribute names, except that a container's child is named with the
    container's attribute: ``/layer2/layer2.0/downsample/downsample.0/Conv`` is in
    ``layer2``, ``layer2.0``, ``layer2.0.downsample``, ``layer2.0.downsample.0``.
    """
    parts = node_name.split("/")[1:-1]
    paths: list[str] = []
    for k, part in enumerate(parts):
        child_of_container = k > 0 and part.startswith(parts[k - 1] + ".")
        base = paths[-2] if child_of_container and k > 1 else (
            "" if child_of_container else (paths[-1] if paths else ""))
        paths.append(f"{base}.{part}" if base else part)
    return paths


def _weight_names(graph: Any) -> set[str]:
    """Initializer names and, in a QDQ (int8) graph, which reads each weight through a
    DequantizeLinear, that node's output: it stands for the weight when a renamed node is
    traced to its layer."""
    weights = {t.name for t in graph.initializer}
    return weights | {n.output[0] for n in graph.node
                      if n.op_type == "DequantizeLinear" and n.input and n.input[0] in weights}


def find_layer_tensors(graph: Any, layers: Sequence[MappedLayer]
                       ) -> tuple[dict[str, str], Flavour]:
    """Map layer names to the ONNX tensors holding their outputs.

    The flavour says how nodes are tied to layers: ``"torch"``, the dynamo exporter's
    ``pkg.torch.onnx.name_scopes`` metadata; ``"torchscript"``, the older exporter's
    ``/module/path/Op`` node names; ``"tf2onnx"``, TF name scopes (``layer1.0.conv1_1/...``)
    or, for nodes tf2onnx renamed, the Keras variable they read (``features.0/kernel``).
    A layer's output is the last tensor its nodes produce that is used outside them (or is a
    graph output). Quantize/DequantizeLinear nodes of an int8 graph belong to no layer (a
    layer's output is the float tensor they quantise); fp16 Casts carry no layer's name.
    A layer whose rule folds it into its source (BatchNorm) and has no node of its own was folded
    into the conv feeding it, so that conv's tensor is its output (the conv's own is gone).
    """
    wanted = {m.name for m in layers}
    weights = _weight_names(graph)
    scoped = [_name_scopes(n) for n in graph.node]
    flavour: Flavour
    if any(s is not None for s in scoped):
        flavour = "torch"
    elif graph.node and sum(n.name.startswith("/") for n in graph.node) * 2 > len(graph.node):
        flavour = "torchscript"
    else:
        flavour = "tf2onnx"
    owner: dict[int, str | None] = {}
    for i, node in enumerate(graph.node):
        if node.op_type in _QDQ_OPS:
            # Quantiser nodes are named after the tensor they quantise, which may be another
            # layer's; they belong to no layer, so a layer's output is its float tensor.
            owner[i] = None
            continue
        if flavour == "tf2onnx":
            # tf2onnx renames some nodes it rewrites (a Conv fused with its BiasAdd becomes
            # ``Conv__199``); such a node still reads its layer's kernel, which the export
            # names after the Keras variable path (``features.0/kernel``).
            owner[i] = _keras_scope(node.name, wanted) or next(
                (s for t in node.input if t in weights
                 for s in [_keras_scope(t, wanted)] if s), None)
            continue
        # The dynamo scopes' last entry is the FX op's own name (``relu_3``), not a module.
        paths = (scoped[i] or [])[:-1] if flavour == "torch" else _torchscript_paths(node.name)
        inner = [p for p in paths if p in wanted]
        owner[i] = inner[-1] if inner else None
    consumers: dict[str, set[str | None]] = {}
    for i, node in enumerate(graph.node):
        for t in node.input:
            consumers.setdefault(t, set()).add(owner[i])
    graph_outputs = {o.name for o in graph.output}
    found: dict[str, str] = {}
    for i, node in enumerate(graph.node):
        layer = owner[i]
        if layer is None:
            continue
        for t in node.output:
            if t and (t in graph_outputs or consumers.get(t, set()) - {layer}):
                found[layer] = t  # graph order is topological: the last one wins
    for m in layers:
        if m.folds_into_source and m.name not in found and m.source in found:
            found[m.name] = found.pop(m.source)
    return found, flavour
