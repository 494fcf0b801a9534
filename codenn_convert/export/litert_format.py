"""The LiteRT (``.tflite``) interface of our exports, read without TensorFlow or torch.

A file we write takes one float32 image batch (NHWC ``[N, H, W, 3]`` by default, NCHW
``[N, 3, H, W]`` with ``--layout nchw``; the batch can be resized) and gives one float32
logits tensor ``[N, classes]``, whatever its precision. Its metadata (the flatbuffer's
``metadata`` entries, one per key) records the model, layout, precision and source
checkpoint. Only ``ai_edge_litert`` (its interpreter and its flatbuffer schema) is used here.
"""

from __future__ import annotations

import contextlib
import mmap
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from codenn_convert.errors import CheckpointError, UsageError
from codenn_convert.export.metadata import META_PRECISION
from codenn_convert.export.precision import Precision

TFLITE_SUFFIX = ".tflite"
#: Input layouts of an export: NHWC is LiteRT's native one (camera pipelines hand it over).
LAYOUTS = ("nhwc", "nchw")
DEFAULT_LAYOUT = "nhwc"
#: Metadata keys of our files (``codenn.precision`` as in our ONNX files).
META_MODEL = "codenn.model"
META_LAYOUT = "codenn.layout"
META_SOURCE = "codenn.source"
__all__ = ["DEFAULT_LAYOUT", "LAYOUTS", "META_LAYOUT", "META_MODEL", "META_PRECISION",
           "META_SOURCE", "TFLITE_SUFFIX", "check_layout", "detect_precision",
           "check_file", "input_layout", "mapped", "open_interpreter", "read_metadata",
           "run_interpreter"]

#: A flatbuffer's file identifier sits at bytes 4..8; LiteRT's is ``TFL3``.
_IDENTIFIER = b"TFL3"
#: Tensor types that only a quantised graph holds as activations or weights.
_INT_TYPES = (np.int8, np.uint8, np.int16)


def check_layout(layout: str) -> str:
    """``layout`` lower-cased if it is one we export, else a one-line :class:`UsageError`."""
    if layout.lower() not in LAYOUTS:
        raise UsageError(f"unknown layout {layout!r}; use {' or '.join(LAYOUTS)}")
    return layout.lower()


def check_file(path: str | os.PathLike[str]) -> Path:
    """``path`` if it is a file with LiteRT's identifier; refused at once otherwise."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"LiteRT file not found: {path}")
    with open(path, "rb") as f:
        head = f.read(8)
    if len(head) < 8 or head[4:8] != _IDENTIFIER:
        raise CheckpointError(f"{path} is not a LiteRT (.tflite) flatbuffer: no TFL3 "
                              f"identifier")
    return path


def open_interpreter(path: str | os.PathLike[str], *, preserve: bool = False,
                     threads: int | None = None) -> Any:
    """An interpreter for the file ``path``; a damaged file is one :class:`CheckpointError`.

    The interpreter maps the file (no copy of the weights) and verifies the flatbuffer
    before building anything from it. ``preserve`` keeps every intermediate tensor readable
    (layer-by-layer comparison) and runs the reference kernels: the XNNPACK delegate,
    LiteRT's default on CPU, fuses whole subgraphs into one node whose inner tensors are
    gone.
    """
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    path = check_file(path)
    kind = (OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES if preserve
            else OpResolverType.AUTO)
    try:
        return Interpreter(model_path=str(path), num_threads=threads or os.cpu_count() or 1,
                           experimental_op_resolver_type=kind,
                           experimental_preserve_all_tensors=preserve)
    except (ValueError, RuntimeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise CheckpointError(f"{path} is not a loadable LiteRT model: {first}") from None


def input_layout(interpreter: Any, path: str | os.PathLike[str], input_size: tuple[int, int]
                 ) -> str:
    """``NHWC`` or ``NCHW``: the layout of the one float32 image input of ``input_size``.

    The file must map one image batch to one float32 logits tensor ``[N, classes]``.
    """
    ins, outs = interpreter.get_input_details(), interpreter.get_output_details()
    shapes = ([[int(v) for v in d["shape_signature"]] for d in ins],
              [[int(v) for v in d["shape_signature"]] for d in outs])
    if len(ins) != 1 or len(outs) != 1:
        raise UsageError(f"{path}: expected one image input and one logits output, found "
                         f"{len(ins)} inputs {shapes[0]} and {len(outs)} outputs {shapes[1]}")
    (inp,), (out,) = ins, outs
    if inp["dtype"] != np.float32 or out["dtype"] != np.float32:
        raise UsageError(f"{path}: input and output must be float32, found "
                         f"{np.dtype(inp['dtype'])} -> {np.dtype(out['dtype'])}")
    if len(shapes[1][0]) != 2:
        raise UsageError(f"{path}: output shape {shapes[1][0]} is not logits [N, classes]")
    dims, (h, w) = shapes[0][0], input_size
    layouts = {"NCHW": [3, h, w], "NHWC": [h, w, 3]}
    found = [k for k, want in layouts.items()
             if len(dims) == 4 and all(d < 0 or d == e for d, e in zip(dims[1:], want,
                                                                        strict=True))]
    if not found:
        raise UsageError(f"{path}: input shape {dims} fits neither NHWC [N, {h}, {w}, 3] nor "
                         f"NCHW [N, 3, {h}, {w}] (the model's input size)")
    declared = read_metadata(path).get(META_LAYOUT)
    layout = found[0] if len(found) == 1 else (declared or "nhwc").upper()
    if declared and declared.upper() != layout:
        raise UsageError(f"{path}: metadata says {declared.upper()} input but the input "
                         f"shape {dims} is {layout}")
    return layout


@contextlib.contextmanager
def mapped(path: str | os.PathLike[str]) -> Iterator[mmap.mmap]:
    """The file's bytes, memory-mapped read-only (pages are read as they are touched)."""
    with open(check_file(path), "rb") as f, mmap.mmap(f.fileno(), 0,
                                                       access=mmap.ACCESS_READ) as data:
        yield data


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """Our ``codenn.*`` metadata entries of a LiteRT file (others are not text)."""
    import struct

    from ai_edge_litert.schema_py_generated import Model

    found = {}
    with mapped(path) as data:
        try:
            model = Model.GetRootAs(data, 0)
            for i in range(model.MetadataLength()):
                entry = model.Metadata(i)
                name = (entry.Name() or b"").decode("utf-8", "replace")
                if name.startswith("codenn."):
                    buf = model.Buffers(entry.Buffer())
                    raw = bytes(buf.DataAsNumpy()) if buf is not None and buf.DataLength() \
                        else b""
                    found[name] = raw.decode("utf-8", "replace")
        except (IndexError, struct.error, TypeError, ValueError) as exc:
            raise CheckpointError(f"{path}: damaged LiteRT metadata: {exc}") from None
        finally:
            model = None  # its views of the mapping must go before the mapping closes
    return found


def detect_precision(interpreter: Any) -> Precision:
    """The precision of any LiteRT model, from its tensor types (metadata is not trusted).

    Integer activations or weights with quantisation scales make it int8; float16 tensors
    (weights dequantised at load) make it fp16; else fp32.
    """
    types = [(np.dtype(t["dtype"]), t["quantization"]) for t in
             interpreter.get_tensor_details()]
    if any(dt in _INT_TYPES and q[0] != 0.0 for dt, q in types):
        return "int8"
    if any(dt == np.float16 for dt, _ in types):
        return "fp16"
    return "fp32"


def run_interpreter(interpreter: Any, x: np.ndarray, layout: str,
                    tensors: Sequence[int] = ()) -> list[np.ndarray]:
    """Run the NCHW batch ``x`` (transposed for an NHWC input) at its own batch size; the
    logits, then copies of the tensors ``tensors``."""
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    feed = np.ascontiguousarray(x.transpose(0, 2, 3, 1) if layout == "NHWC" else x,
                                np.float32)
    if list(inp["shape"]) != list(feed.shape):
        try:
            interpreter.resize_tensor_input(inp["index"], list(feed.shape), strict=True)
        except (ValueError, RuntimeError) as exc:
            raise UsageError(f"the LiteRT model cannot take a batch of {len(x)}: "
                             f"{str(exc).splitlines()[0][:120]}") from None
    with _native_stderr_silenced():  # LiteRT logs "INFO: Created ... XNNPACK delegate" here
        interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], feed)
    interpreter.invoke()
    return [np.array(interpreter.get_tensor(out["index"]))] + [
        np.array(interpreter.get_tensor(t)) for t in tensors]


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """File descriptor 2 pointed at /dev/null: LiteRT's C++ INFO lines would break the CLI's
    one-line errors. Its failures still arrive, as the Python exception's message."""
    import sys

    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
