"""LiteRT files as runners and probes, run by ``ai_edge_litert``'s interpreter (no
TensorFlow, no torch: ``codenn check X.tflite`` stays light).

* :class:`TfliteRunner`: our Keras twin's LiteRT export (runtime ``tflite``) or a user's
  file (``tflite:<file name>``, precision detected from its tensor types). Logits come from
  the interpreter with its default CPU delegate (XNNPACK), as deployed; the batch is resized
  to each input's.
* :class:`TfliteProbe`: every intermediate tensor kept (``experimental_preserve_all_tensors``,
  reference kernels), each mapped back to the Keras layer that made it. The converter names a
  tensor after the TF ops fused into it (``model/layer1.0.bn1_1/batchnorm/add_1;model/
  layer1.0.conv1_1/convolution``), and our Keras layer names are torch module paths; a
  tensor several mapped layers were fused into stands for the last of them (a conv folded
  with its BatchNorm is compared as the BatchNorm, as in torch's ONNX graphs).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from codenn_convert.errors import UsageError
from codenn_convert.export.litert_format import (
    detect_precision,
    input_layout,
    open_interpreter,
    run_interpreter,
)
from codenn_convert.verification.matching import MappedLayer, to_torch_layout
from codenn_convert.verification.runners import Runner, Twins, runtime

if TYPE_CHECKING:  # the diagnostic layer is imported only when a probe is asked for
    from codenn_convert.verification.probes import Probe

#: Runtime name prefix of a user-given LiteRT file: ``tflite:<file name>``.
TFLITE_FILE_PREFIX = "tflite:"
#: TF makes op scopes unique with a ``_<n>`` suffix (``layer1.0.conv1_1``).
_TF_SUFFIX = re.compile(r"(.+)_\d+")


class TfliteRunner:
    """A LiteRT file in the interpreter; ``export`` (our own runtime) writes it first."""

    def __init__(self, path: str | os.PathLike[str], *, name: str, input_size: tuple[int, int],
                 export: Callable[[Path], Any] | None = None, precision: str | None = None,
                 reference: str | None = None) -> None:
        self.path, self.name, self.input_size = Path(path), name, input_size
        self.export = export
        self.prepare_label = f"export {name}" if export is not None else None
        #: Empty until :meth:`check` reads it from the file's tensor types.
        self.precision: str = precision or ""
        self.reference = reference
        self.layout = "NHWC"

    def check(self) -> None:
        """Open the file: one float32 image batch of ``input_size`` to float32 logits."""
        interpreter = open_interpreter(self.path, threads=1)
        self.layout = input_layout(interpreter, self.path, self.input_size)
        self.precision = self.precision or detect_precision(interpreter)

    def prepare(self) -> None:
        if self.export is not None:
            self.export(self.path)
            self.check()

    def run(self, batches: Sequence[np.ndarray]) -> list[np.ndarray]:
        if not self.precision:
            self.check()
        interpreter = open_interpreter(self.path)
        return [run_interpreter(interpreter, x, self.layout)[0] for x in batches]

    def probe(self, layers: Sequence[MappedLayer]) -> Probe | None:
        return TfliteProbe(self.path, layers, self.layout)


def _layer_of(part: str, wanted: dict[str, int]) -> str | None:
    """The mapped layer a TF op location (``model/layer1.0.conv1_1/convolution``) is in."""
    for comp in part.split("/")[:-1]:
        if comp in wanted:
            return comp
        m = _TF_SUFFIX.fullmatch(comp)
        if m and m.group(1) in wanted:
            return m.group(1)
    return None


def layer_tensors(ops: Sequence[dict[str, Any]], tensors: dict[int, dict[str, Any]],
                  layers: Sequence[MappedLayer]) -> dict[str, int]:
    """Map layer names to the indices of the tensors holding their outputs.

    A fused tensor's name lists the locations of the ops fused into it, the last op first
    (``relu;bn1 add;conv1``): the tensor is the output of that op's layer, and of no layer
    when that layer is not mapped (a ResNet block's shared ReLU fused onto ``bn1``: the
    BatchNorm's own output is gone, as a conv's is once its BatchNorm is folded in). A
    layer's output is the last tensor its ops produce that another layer's op reads, or the
    model output. Quantize/Dequantize ops (int8 edges) belong to no layer. The model output
    is renamed after the signature; it is the last mapped layer's when no layer claims it.
    """
    wanted = {m.name: k for k, m in enumerate(layers)}
    owner: list[str | None] = [
        None if op["op_name"] in ("QUANTIZE", "DEQUANTIZE") or not op["outputs"].size
        else _layer_of(tensors[int(op["outputs"][0])]["name"].split(";")[0], wanted)
        for op in ops]
    readers: dict[int, set[str | None]] = {}
    for op, who in zip(ops, owner, strict=True):
        for t in op["inputs"]:
            readers.setdefault(int(t), set()).add(who)
    outputs = {int(t) for op in ops[-1:] for t in op["outputs"]}
    found: dict[str, int] = {}
    for op, who in zip(ops, owner, strict=True):
        if who is None:
            continue
        for t in map(int, op["outputs"]):
            if t in outputs or readers.get(t, set()) - {who}:
                found[who] = t  # ops are in execution order: the last one wins
    # The logits: the model output, or in an int8 model the tensor its Dequantize reads.
    last = len(ops) - 1 - (bool(ops) and ops[-1]["op_name"] == "DEQUANTIZE")
    if layers and layers[-1].name not in found and last >= 0 and owner[last] is None and \
            len(ops[last]["outputs"]) == 1:
        found[layers[-1].name] = int(ops[last]["outputs"][0])
    return found


class TfliteProbe:
    """Layer outputs of a LiteRT file, every tensor kept by the interpreter, in torch
    layout (LiteRT's maps are NHWC whatever the input layout)."""

    def __init__(self, path: str | os.PathLike[str], layers: Sequence[MappedLayer],
                 layout: str) -> None:
        self.path, self.layout = Path(path), layout
        interp = open_interpreter(self.path, preserve=True, threads=1)
        details = {int(t["index"]): t for t in interp.get_tensor_details()}
        self.tensors = layer_tensors(interp._get_ops_details(), details, layers)  # noqa: SLF001
        #: (scale, zero point) of int8 tensors, dequantised to compare with float ones.
        self.quant = {n: details[t]["quantization"] for n, t in self.tensors.items()
                      if details[t]["quantization"][0] != 0.0}
        self.layers = {m.name: m for m in layers if m.name in self.tensors}
        self.names = frozenset(self.layers)

    def run(self, names: Sequence[str], x: np.ndarray) -> dict[str, np.ndarray]:
        names = [n for n in names if n in self.tensors]
        interp = open_interpreter(self.path, preserve=True)
        values = run_interpreter(interp, x, self.layout, [self.tensors[n] for n in names])[1:]
        del interp
        out = {}
        for n, y in zip(names, values, strict=True):
            if n in self.quant:  # an int8 activation: compared as the value it stands for
                scale, zero = self.quant[n]
                y = ((y.astype(np.float32) - np.float32(zero)) * np.float32(scale))
            out[n] = to_torch_layout(y.astype(np.float32, copy=False), self.layers[n], "NHWC")
        return out


@runtime("tflite", default=False)
def _tflite_runtime(t: Twins) -> Runner:
    """The Keras twin's float32 NHWC LiteRT export, written when it runs
    (:func:`codenn_convert.export.litert_export.write_keras_tflite`). Opt-in: its export
    made ``make parity`` 1.55x slower (docs/litert.md), above the 1.5x budget."""

    def export(p: Path) -> Any:
        from codenn_convert.export.litert_export import TfliteSpec, write_keras_tflite

        return write_keras_tflite(t.keras_model, p,
                                  TfliteSpec(t.model, source="the verified Keras twin"))

    return TfliteRunner(t.out_dir / f"{t.model}.tflite", name="tflite",
                        input_size=t.input_size, export=export, precision="fp32")


def user_tflite_runners(files: Sequence[str | os.PathLike[str]], input_size: tuple[int, int]
                        ) -> list[TfliteRunner]:
    """Runners ``tflite:<file name>`` for given LiteRT files, each opened and checked now."""
    runners: dict[str, TfliteRunner] = {}
    for f in files:
        name = TFLITE_FILE_PREFIX + Path(f).name
        if name in runners:
            raise UsageError(f"two LiteRT files are named {Path(f).name}; their runtimes "
                             f"would share the name {name}")
        runners[name] = TfliteRunner(f, name=name, input_size=input_size)
    for runner in runners.values():
        runner.check()
    return list(runners.values())
