"""Probes: every runtime's view of its layers. Given layer names, a probe returns those
layers' outputs for an NCHW batch in torch layout (NCHW, or torch's C,H,W flatten order).

* torch: forward hooks on the named modules; the pass stops once the last one has fired.
* keras: a sub-model whose outputs are the named layers.
* ONNX: the layers' tensors (:mod:`codenn_convert.verification.onnx_scopes`) exposed as
  extra graph outputs.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from codenn_convert.interface import Layout
from codenn_convert.verification.matching import MappedLayer, to_torch_layout
from codenn_convert.verification.onnx_scopes import find_layer_tensors
from codenn_convert.verification.ort import onnx_input_layout, onnx_session, run_onnx


class Probe(Protocol):
    """A runtime that returns the outputs of named layers (``names``: those it can see) for
    an NCHW batch, in torch layout."""

    names: frozenset[str]

    def run(self, names: Sequence[str], x: np.ndarray) -> dict[str, np.ndarray]: ...


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
