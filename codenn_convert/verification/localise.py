"""Layer-wise localisation: name the first mapped layer where two runtimes diverge.

A *mapped layer* is a Keras layer whose name is a torch module path that runs exactly once in
the torch forward pass (Keras layer names are the torch module paths, so the correspondence
is by name). Every runtime exposes a *probe*: given layer names, it returns those layers'
outputs for the verifier's batch in torch layout (NCHW, or torch's C,H,W flatten order).

* torch: forward hooks on the named modules; the pass stops once the last one has fired.
* keras: a sub-model whose outputs are the named layers.
* ONNX: the layers' tensors exposed as extra graph outputs. A torch-exported graph is read
  through the dynamo exporter's ``pkg.torch.onnx.name_scopes`` node metadata (the module
  path of every node); a tf2onnx graph through its node names, which start with the Keras
  layer name's TF name scope (``layer1.0.conv1_1/convolution``). Layers with no tensor of
  their own are skipped: BatchNorm fused into the conv before it makes the conv's output
  vanish from the torch graph, and Dropout is no node at all.

Memory: layers are compared in chunks whose activations (all probes together) fit in a byte
budget; each chunk is compared and freed before the next one runs, so the activations of two
frameworks are never all held at once. The price is re-running the network's prefix once per
chunk (the torch pass stops early, the Keras sub-model only computes what it needs).
"""

from __future__ import annotations

import ast
import itertools
import math
import os
import re
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from codenn_convert.twins.mapper import hwc_flatten_of

#: Per-layer tolerance on ``max|a-b| / max|a|``, each layer relative to its own largest
#: reference magnitude (the logits' measure, applied per layer).
#:
#: Why 1e-4 and not the logits' 1e-5: float32 rounding differs between runtimes at every op
#: (different summation orders in conv/GEMM kernels), and relative to a layer's *largest*
#: value it grows through depth and is amplified by BatchNorm with small running variances
#: (scale gamma / sqrt(var + eps) up to ~10x here), so clean twins show up to a few 1e-6 on
#: some intermediate layers at 224x224 (measured: AlexNet 1.1e-6, VGG-19 2.5e-6, ResNet-50
#: 4.5e-6, InceptionV3 3.6e-6). The logits' 1e-5 would leave no margin there. Semantic faults
#: are orders of magnitude above 1e-4 at the layer that has them (a 1% weight change, a
#: changed running variance or a one-pixel padding shift gives 1e-3 .. 1), so 1e-4 separates
#: noise from faults by >= 20x on both sides. A pair that fails on its logits but whose
#: layers all stay within 1e-4 reports no first divergent layer (the per-layer list shows
#: where the error grows).
LAYER_RTOL = 1e-4

#: A lossy pair's layers fail below its logits' SQNR floor less this margin (dB).
#:
#: Why: rounding noise is larger inside the network than at the logits, whose pooling and
#: classifier average it out: with seeded realistic weights at full size, the lowest layer
#: SQNR sat 7.6-9.9 dB below the logits' (int8: ResNet-50 29.6 dB logits, 19.7 dB at
#: layer4.2.bn3; InceptionV3 26.0 dB logits, 18.4 dB inside Mixed_7c). A fault is far below
#: any of them: a sign-flipped conv gives about -6 dB at its layer (the error is twice the
#: signal). 12 dB keeps every measured layer of a clean file above its floor.
LAYER_SQNR_MARGIN_DB = 12.0

#: Bytes of layer outputs held at once, all probes of a chunk together.
DEFAULT_BUDGET_BYTES = 512 << 20

Layout = Literal["NCHW", "NHWC"]


@dataclass
class LayerError:
    """Relative error of one mapped layer's output (named by its torch module path)."""

    name: str
    max_rel: float
    #: For a lossy pair: 10*log10(sum a^2 / sum (a - b)^2) of this layer's output.
    sqnr_db: float | None = None


@dataclass(frozen=True)
class MappedLayer:
    """A layer that both twins have, with its per-sample output shape in torch layout."""

    name: str
    shape: tuple[int, ...]  # (C, H, W) or (F,)
    #: Set when the Keras output is a flattening of an (H, W, C) map (torch flattens C, H, W).
    flatten_hwc: tuple[int, int, int] | None = None
    kind: str = ""  # the Keras layer class (``Conv2D``, ``BatchNormalization``, ...)
    source: str | None = None  # the layer feeding it, if it has exactly one input

    def nbytes(self, batch: int) -> int:
        return 4 * batch * int(np.prod(self.shape))


@dataclass
class Localisation:
    """Per-layer errors of one runtime pair and the first layer beyond tolerance."""

    layers: list[LayerError]
    first_divergent_layer: str | None


class Probe(Protocol):
    """A runtime that returns the outputs of named layers (``names``: those it can see) for
    an NCHW batch, in torch layout."""

    names: frozenset[str]

    def run(self, names: Sequence[str], x: np.ndarray) -> dict[str, np.ndarray]: ...


# --------------------------------------------------------------------------- comparison


def layer_error(ref: np.ndarray, other: np.ndarray) -> float:
    """``max|ref - other| / max|ref|``; inf if shapes differ or either holds NaN/Inf.

    NaN/Inf never agree, not even at the same places (issue 9): a layer past the point
    where a corrupted weight enters is infinitely wrong, never "0.0 over the rest".
    """
    if ref.shape != other.shape:
        return float("inf")
    if not (np.isfinite(ref).all() and np.isfinite(other).all()):
        return float("inf")
    if ref.size == 0:
        return 0.0
    # float32 differences: the rounding of a - b is relative 6e-8 of the difference itself.
    diff = float(np.max(np.abs(ref - other)))
    scale = float(np.max(np.abs(ref)))
    return diff / scale if scale > 0 else diff


def first_divergent(errors: Sequence[LayerError], tol: float) -> str | None:
    """The first layer (in topological order) whose error exceeds ``tol``."""
    return next((e.name for e in errors if not e.max_rel <= tol), None)


def layer_sqnr(ref: np.ndarray, other: np.ndarray) -> float:
    """SQNR of ``other`` against ``ref`` in dB; -inf if shapes differ or either holds NaN/Inf
    (a broken layer is infinitely noisy, never "clean over the rest")."""
    from codenn_convert.export.precision import sqnr_db

    if ref.shape != other.shape or not (np.isfinite(ref).all() and np.isfinite(other).all()):
        return float("-inf")
    return sqnr_db(ref, other)


def first_below(errors: Sequence[LayerError], min_sqnr_db: float) -> str | None:
    """The first layer (in topological order) whose SQNR is below ``min_sqnr_db``."""
    return next((e.name for e in errors
                 if e.sqnr_db is not None and not e.sqnr_db >= min_sqnr_db), None)


def sqnr_drop(errors: Sequence[LayerError]) -> tuple[str | None, float | None]:
    """The layer where SQNR falls most from the layer before it (topological order), and
    the fall in dB: where the precision is lost. The first layer has no layer before it and
    is only named when it is the only one."""
    values = [(e.name, e.sqnr_db) for e in errors if e.sqnr_db is not None]
    if len(values) == 1:
        return values[0][0], None
    best: tuple[str | None, float | None] = (None, None)
    for (_, before), (name, after) in itertools.pairwise(values):
        if not (math.isfinite(before) or math.isfinite(after)):
            continue  # inf -> inf or -inf -> -inf: no measurable fall
        fall = before - after
        if best[1] is None or fall > best[1]:
            best = (name, fall)
    return best


# --------------------------------------------------------------------------- mapped layers


def mapped_layers(keras_model: Any, torch_model: Any, sample: np.ndarray) -> list[MappedLayer]:
    """The layers both twins have, in the Keras model's topological order.

    A torch module that runs more than once (a ResNet block's shared ``relu``) or not at all
    (InceptionV3's aux head in eval) has no single output to compare and is left out; so are
    outputs that are not an NHWC map or a vector. ``sample`` (NCHW, one sample is enough)
    drives the torch pass that counts the calls.
    """
    import torch

    modules = dict(torch_model.named_modules())
    candidates: dict[str, Any] = {}
    for layer in keras_model.layers:
        if layer.name in modules and layer.name and type(layer).__name__ != "InputLayer":
            shape = getattr(layer.output, "shape", None)
            if shape is not None and len(shape) in (2, 4):
                candidates[layer.name] = layer
    calls = dict.fromkeys(candidates, 0)

    def counter(name: str) -> Callable[..., None]:
        def hook(_m: Any, _i: Any, _o: Any) -> None:
            calls[name] += 1
        return hook

    handles = [modules[n].register_forward_hook(counter(n)) for n in candidates]
    try:
        with torch.no_grad():
            torch_model(torch.from_numpy(np.ascontiguousarray(sample[:1])))
    finally:
        for h in handles:
            h.remove()
    out = []
    for name, layer in candidates.items():
        if calls[name] != 1:
            continue
        dims = tuple(int(d) for d in layer.output.shape[1:])
        inbound = layer._inbound_nodes[0].input_tensors if layer._inbound_nodes else []
        source = inbound[0]._keras_history.operation.name if len(inbound) == 1 else None
        kind = type(layer).__name__
        if len(dims) == 3:
            out.append(MappedLayer(name, (dims[2], dims[0], dims[1]), kind=kind, source=source))
        else:
            out.append(MappedLayer(name, dims, hwc_flatten_of(layer), kind, source))
    return out


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


# --------------------------------------------------------------------------- probes


class _Stop(Exception):
    """Raised by the last wanted hook to end the torch pass early."""


class TorchProbe:
    """Outputs of torch modules through forward hooks.

    Each hook copies its output at once: the ReLUs after a conv or BatchNorm run in place
    (``inplace=True`` / ``F.relu(..., inplace=True)``) and would overwrite a kept reference.
    """

    def __init__(self, model: Any, layers: Sequence[MappedLayer]) -> None:
        self.model = model
        self.modules = dict(model.named_modules())
        self.layers = {m.name: m for m in layers if m.name in self.modules}
        self.names = frozenset(self.layers)

    def run(self, names: Sequence[str], x: np.ndarray) -> dict[str, np.ndarray]:
        import torch

        wanted = set(names)
        got: dict[str, np.ndarray] = {}

        def make(name: str) -> Callable[..., None]:
            def hook(_m: Any, _i: Any, out: Any) -> None:
                if isinstance(out, torch.Tensor):
                    got[name] = to_torch_layout(out.detach().numpy().copy(),
                                                self.layers[name], "NCHW")
                if wanted <= got.keys():
                    raise _Stop  # everything wanted is in: skip the rest of the network
            return hook

        handles = [self.modules[n].register_forward_hook(make(n)) for n in wanted]
        try:
            with torch.no_grad():
                self.model(torch.from_numpy(np.ascontiguousarray(x)))
        except _Stop:
            pass
        finally:
            for h in handles:
                h.remove()
        return got


class KerasProbe:
    """Outputs of Keras layers through a sub-model of the named layers' outputs."""

    def __init__(self, model: Any, layers: Sequence[MappedLayer]) -> None:
        self.model = model
        known = {layer.name for layer in model.layers}
        self.layers = {layer.name: layer for layer in layers if layer.name in known}
        self.names = frozenset(self.layers)

    def run(self, names: Sequence[str], x: np.ndarray) -> dict[str, np.ndarray]:
        import keras

        names = list(names)
        sub = keras.Model(self.model.inputs[0], [self.model.get_layer(n).output for n in names])
        ys = sub(np.ascontiguousarray(x.transpose(0, 2, 3, 1)), training=False)  # NHWC
        ys = ys if isinstance(ys, list | tuple) else [ys]
        return {n: to_torch_layout(np.asarray(y), self.layers[n], "NHWC")
                for n, y in zip(names, ys, strict=True)}


def onnx_input_layout(shape: Sequence[Any], input_size: tuple[int, int]) -> Layout:
    """NCHW or NHWC from an ONNX input's declared shape (``[N, 3, H, W]`` vs ``[N, H, W, 3]``).

    The channel axis decides where only one of axes 1 and 3 can be 3; where both can (a
    symbolic or 3-pixel dimension), the spatial size ``input_size`` (H, W) decides.
    """
    from codenn_convert.errors import UsageError

    dims = [d if isinstance(d, int) and d > 0 else None for d in shape]
    if len(dims) != 4:
        raise UsageError(f"expected a 4-d image input, found shape {list(shape)}")
    h, w = input_size

    def fits(actual: Sequence[int | None], expected: Sequence[int]) -> bool:
        return all(a is None or a == e for a, e in zip(actual, expected, strict=True))

    nchw = fits(dims[1:], (3, h, w))
    nhwc = fits(dims[1:], (h, w, 3))
    if nchw and nhwc:
        # Only symbolic dimensions (or a 3x3 image) leave both open; a literal 3 on one side
        # is the channel axis, else ONNX's own convention, NCHW.
        return "NHWC" if dims[3] == 3 and dims[1] is None else "NCHW"
    if nchw or nhwc:
        return "NCHW" if nchw else "NHWC"
    raise UsageError(f"ONNX input shape {list(shape)} fits neither [N, 3, {h}, {w}] nor "
                     f"[N, {h}, {w}, 3]")


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
    A BatchNorm with no node of its own was folded into the conv feeding it,
    so that conv's tensor is the BatchNorm's output, and the conv's own is not in the graph.
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
        if m.kind == "BatchNormalization" and m.name not in found and m.source in found:
            found[m.name] = found.pop(m.source)
    return found, flavour


class OnnxProbe:
    """Outputs of layers in an ONNX graph, exposed as extra graph outputs.

    The weights are written once to a private external-data file; each run builds a session
    whose extra outputs are just the layers asked for, and drops it afterwards. So no
    session outlives its chunk (several probes never hold their weights all at once), and
    onnxruntime keeps no other layers' outputs alive during a run. The input layout (NCHW
    or NHWC) is read from the graph's input shape.
    """

    def __init__(self, path: str | os.PathLike[str], layers: Sequence[MappedLayer], *,
                 input_size: tuple[int, int]) -> None:
        import onnx

        model = onnx.load(str(path))
        self.tensors, self.flavour = find_layer_tensors(model.graph, layers)
        self.layers = {m.name: m for m in layers if m.name in self.tensors}
        self.names = frozenset(self.layers)
        inp = model.graph.input[0]
        shape = [d.dim_value if d.HasField("dim_value") else d.dim_param
                 for d in inp.type.tensor_type.shape.dim]
        self.input_layout = onnx_input_layout(shape, input_size)
        # Saving with external data moves each weight out of the proto as it is written:
        # what stays in memory is the graph alone.
        self._dir = tempfile.TemporaryDirectory(prefix="codenn-probe-")
        onnx.save_model(model, str(Path(self._dir.name) / "model.onnx"),
                        save_as_external_data=True, all_tensors_to_one_file=True,
                        location="weights.data")
        self._graph = model

    def close(self) -> None:
        """Remove the probe's weight file (also done when the probe is garbage-collected)."""
        self._dir.cleanup()

    def _layout(self, y: np.ndarray, layer: MappedLayer) -> Layout | None:
        """The layout of one intermediate tensor, from its shape (None if undecidable)."""
        if y.ndim == 4 and len(layer.shape) == 1:  # a 1x1 map for the other twin's vector
            return "NCHW" if y.shape[2:] == (1, 1) else "NHWC"
        if y.ndim != 4 or len(layer.shape) != 3:
            # Vectors: a tf2onnx graph keeps Keras's H,W,C flattening, torch graphs C,H,W.
            return "NHWC" if self.flavour == "tf2onnx" else "NCHW"
        c, h, w = layer.shape
        nchw, nhwc = y.shape[1:] == (c, h, w), y.shape[1:] == (h, w, c)
        if nchw and nhwc:
            # c == h == w. The torch exporters never change layouts; tf2onnx moves its
            # transposes around, and a square map with as many channels cannot tell which.
            return None if self.flavour == "tf2onnx" else "NCHW"
        return "NHWC" if nhwc else "NCHW"

    def run(self, names: Sequence[str], x: np.ndarray) -> dict[str, np.ndarray]:
        import onnx

        names = list(names)
        tensors = list(dict.fromkeys(self.tensors[n] for n in names))
        chunk = onnx.ModelProto()
        chunk.CopyFrom(self._graph)
        outputs = {o.name for o in chunk.graph.output}
        # Untyped outputs: onnxruntime infers them, whatever the graph's float type is.
        chunk.graph.output.extend(onnx.ValueInfoProto(name=t) for t in tensors
                                  if t not in outputs)
        path = Path(self._dir.name) / "chunk.onnx"  # beside the weights it refers to
        onnx.save_model(chunk, str(path))
        session = onnx_session(path, arena=False)
        values = dict(zip(tensors, run_onnx(session, tensors, x, self.input_layout),
                          strict=True))
        del session
        out = {}
        for n in names:
            y = np.asarray(values[self.tensors[n]])
            layout = self._layout(y, self.layers[n])
            if layout is not None:
                out[n] = to_torch_layout(y, self.layers[n], layout)
        return out


def run_onnx(session: Any, outputs: Sequence[str] | None, x: np.ndarray, layout: Layout
             ) -> list[np.ndarray]:
    """Run ``session`` on the NCHW batch ``x`` (transposed if it takes NHWC).

    A graph exported with a fixed batch size (torch's TorchScript exporter fixes it) gets
    the batch in slices of that size, the outputs concatenated.
    """
    from codenn_convert.errors import UsageError

    inp = session.get_inputs()[0]
    feed = np.ascontiguousarray(x.transpose(0, 2, 3, 1) if layout == "NHWC" else x)
    step = inp.shape[0] if isinstance(inp.shape[0], int) and inp.shape[0] > 0 else len(x)
    if len(x) % step:
        raise UsageError(f"the ONNX graph takes batches of exactly {step}; the batch has "
                         f"{len(x)} samples (use --batch {step})")
    parts = [session.run(outputs, {inp.name: feed[i:i + step]})
             for i in range(0, len(x), step)]
    return [np.concatenate(ys) if len(parts) > 1 else np.asarray(ys[0])
            for ys in zip(*parts, strict=True)]


def onnx_session(model: str | os.PathLike[str] | bytes, *, arena: bool = True) -> Any:
    """An onnxruntime CPU session with only exact-preserving graph rewrites.

    Full optimisation can fuse ops into a different float ordering; we compare the graphs as
    written. ``arena=False`` returns each run's memory when the run ends (ORT's arena keeps
    its high-water mark, which a probe's run, holding many layer outputs, would raise).
    """
    import onnxruntime as ort

    from codenn_convert.thirdparty import ort_severity, quiet_onnxruntime

    quiet_onnxruntime(ort)
    opts = ort.SessionOptions()
    opts.log_severity_level = ort_severity()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    opts.enable_cpu_mem_arena = arena
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])


# --------------------------------------------------------------------------- driver


def _chunks(layers: Sequence[MappedLayer], cost: Callable[[MappedLayer], int],
            budget: int) -> list[list[MappedLayer]]:
    chunks: list[list[MappedLayer]] = [[]]
    used = 0
    for layer in layers:
        c = cost(layer)
        if chunks[-1] and used + c > budget:
            chunks.append([])
            used = 0
        chunks[-1].append(layer)
        used += c
    return [c for c in chunks if c]


def localise(
    probes: Mapping[str, Probe],
    pairs: Sequence[tuple[str, str]],
    layers: Sequence[MappedLayer],
    x: np.ndarray,
    *,
    tol: float = LAYER_RTOL,
    budget_bytes: int = DEFAULT_BUDGET_BYTES,
    progress: Callable[[str], None] | None = None,
    min_sqnr_db: Mapping[tuple[str, str], float] | None = None,
) -> dict[tuple[str, str], Localisation]:
    """Compare every mapped layer of each pair ``(reference, other)`` of probes on ``x``.

    Layers are visited in topological order, in chunks whose outputs (over all probes that
    need them) fit in ``budget_bytes``; each probe runs once per chunk and the chunk is freed
    before the next. Layers a probe cannot see are left out of that probe's pairs.

    Pairs in ``min_sqnr_db`` are lossy (``other`` in fp16/int8): each layer gets its SQNR
    too, and the first divergent layer is the first one below that pair's floor, since
    reduced precision misses the float32 ``tol`` everywhere.
    """
    floors = min_sqnr_db or {}
    say = progress or (lambda _msg: None)
    users: dict[str, set[str]] = {}
    for a, b in pairs:
        for layer in layers:
            if layer.name in probes[a].names and layer.name in probes[b].names:
                users.setdefault(layer.name, set()).update((a, b))
    needed = [layer for layer in layers if layer.name in users]
    batch = int(x.shape[0])
    errors: dict[tuple[str, str], list[LayerError]] = {p: [] for p in pairs}
    chunks = _chunks(needed, lambda m: m.nbytes(batch) * len(users[m.name]), budget_bytes)
    for k, chunk in enumerate(chunks):
        outputs: dict[str, dict[str, np.ndarray]] = {}
        for rt in sorted({r for m in chunk for r in users[m.name]}):
            say(f"layers {k + 1}/{len(chunks)}: {rt}")
            outputs[rt] = probes[rt].run([m.name for m in chunk if rt in users[m.name]], x)
        for a, b in pairs:
            for m in chunk:
                ya, yb = outputs.get(a, {}).get(m.name), outputs.get(b, {}).get(m.name)
                if ya is not None and yb is not None:
                    snr = layer_sqnr(ya, yb) if (a, b) in floors else None
                    errors[(a, b)].append(LayerError(m.name, layer_error(ya, yb), snr))
        del outputs
    return {p: Localisation(e, first_below(e, floors[p]) if p in floors
                            else first_divergent(e, tol)) for p, e in errors.items()}


def localise_models(
    torch_model: Any,
    keras_model: Any,
    x: np.ndarray,
    *,
    tol: float = LAYER_RTOL,
    budget_bytes: int = DEFAULT_BUDGET_BYTES,
) -> Localisation:
    """Localise a Keras model against a torch model on the NCHW batch ``x``.

    The two may hold different weights or structure: this is how a fault planted in one
    twin is found.
    """
    layers = mapped_layers(keras_model, torch_model, x)
    probes = {"torch": TorchProbe(torch_model, layers), "keras": KerasProbe(keras_model, layers)}
    return localise(probes, [("torch", "keras")], layers, x, tol=tol,
                    budget_bytes=budget_bytes)[("torch", "keras")]


def first_nonfinite_layer(
    probe: Probe,
    layers: Sequence[MappedLayer],
    x: np.ndarray,
    *,
    budget_bytes: int = DEFAULT_BUDGET_BYTES,
) -> str | None:
    """The first mapped layer (topological order) whose output holds NaN or Inf.

    That layer, or the weights feeding it, is where a corrupted tensor enters; everything
    after it is non-finite only by propagation. None if no layer the probe sees is.
    """
    seen = [m for m in layers if m.name in probe.names]
    for chunk in _chunks(seen, lambda m: m.nbytes(int(x.shape[0])), budget_bytes):
        outputs = probe.run([m.name for m in chunk], x)
        for m in chunk:
            y = outputs.get(m.name)
            if y is not None and not np.isfinite(y).all():
                return m.name
    return None
