"""Deployment precision of ONNX files: fp16 and int8 conversion, and detection.

* fp16: ``onnxruntime.transformers.float16.convert_float_to_float16(keep_io_types=True)``:
  weights and activations in float16, the graph's input and output stay float32.
* int8: ``onnxruntime.quantization.quantize_static``, QDQ format, per-channel int8 weights
  and uint8 activations (ORT's recommendation for x86 CPUs), MinMax calibration.

Every file keeps the one interface of our exports: input ``input`` float32 NCHW with a
dynamic batch, output ``logits`` float32. The precision and, for int8, how it was calibrated
are written into the file's ``metadata_props`` (:mod:`codenn_convert.export.metadata`);
calibration data comes from :mod:`codenn_convert.export.calibration`. Lossy files are judged
by :mod:`codenn_convert.verification.lossy`, not by the 1e-5 float32 rule.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np

from codenn_convert.errors import UsageError
from codenn_convert.export.calibration import Calibration
from codenn_convert.export.metadata import META_PRECISION, set_metadata
from codenn_convert.export.onnx_writer import write_onnx
from codenn_convert.interface import INPUT_NAME, OUTPUT_NAME

Precision = Literal["fp32", "fp16", "int8"]


#: Samples per calibration run: bounds the memory of ORT's augmented (all-outputs) session.
CALIBRATION_BATCH = 4
#: Ops that only appear in quantised graphs.
QUANTIZED_OPS = frozenset({
    "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QLinearConv",
    "QLinearMatMul", "ConvInteger", "MatMulInteger",
})


def check_precision(precision: str) -> Precision:
    """``precision`` if it is one we export, else a one-line :class:`UsageError`."""
    if precision not in PRECISIONS:
        raise UsageError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    return cast(Precision, precision)


def convert_precision(
    src: str | os.PathLike[str], dst: str | os.PathLike[str], precision: Precision,
    calibration: Calibration | None = None,
) -> None:
    """Write the fp32 ONNX file ``src`` at ``precision`` to ``dst`` (``src`` is untouched)."""
    mode = PRECISION_MODES[check_precision(precision)]
    if mode.convert is None:
        raise UsageError(f"cannot convert to precision {precision!r}")
    if mode.needs_calibration and calibration is None:
        raise UsageError(f"{precision} needs calibration data")
    mode.convert(src, dst, calibration)


def to_fp16(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """float16 weights and activations; float32 input and output (Cast nodes at the edges).

    ``convert_float_to_float16`` runs on the graph alone: initializers stored as external
    data become typed graph inputs for it (it retypes them like any value), then their data
    is read, rounded as it rounds initializers, and streamed into ``dst`` one tensor at a
    time. So the conversion never holds the float32 weights, and the graph is the same as
    if it had converted them itself.
    """
    import onnx
    from onnx import TensorProto, helper
    from onnxruntime.transformers.float16 import convert_float_to_float16


    base = Path(src).parent
    model = onnx.load(str(src), load_external_data=False)
    external = [t for t in model.graph.initializer if t.data_location == TensorProto.EXTERNAL]
    kept = [t for t in model.graph.initializer if t.data_location != TensorProto.EXTERNAL]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    model.graph.input.extend(helper.make_tensor_value_info(t.name, t.data_type, t.dims)
                             for t in external)
    model = convert_float_to_float16(model, keep_io_types=[INPUT_NAME, OUTPUT_NAME])
    types = {i.name: i.type.tensor_type.elem_type for i in model.graph.input}
    inputs = [i for i in model.graph.input if i.name not in {t.name for t in external}]
    del model.graph.input[:]
    model.graph.input.extend(inputs)
    set_metadata(model, {META_PRECISION: "fp16"})
    write_onnx(dst, model, ((t.name, _read_external(base, t, half=types[t.name] ==
                                                    TensorProto.FLOAT16)) for t in external))


#: Elements per chunk when rounding external float32 data to float16.
_CHUNK = 1 << 22


def _read_external(base: Path, tensor: Any, *, half: bool) -> np.ndarray:
    """An external-data initializer's array, rounded to float16 chunk by chunk if ``half``."""
    from onnx import helper
    from onnxruntime.transformers.float16 import convert_np_to_float16

    info = {e.key: e.value for e in tensor.external_data}
    path = (base / info["location"]).resolve()
    if path.parent != base.resolve():
        raise UsageError(f"external data {info['location']!r} of {tensor.name} lies outside "
                         f"{base}")
    dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type)).newbyteorder("<")
    count, offset = math.prod(tensor.dims), int(info.get("offset", 0))
    if not half:
        return np.fromfile(path, dtype=dtype, count=count, offset=offset).reshape(tensor.dims)
    out = np.empty(count, np.float16)
    with open(path, "rb") as f:
        f.seek(offset)
        for start in range(0, count, _CHUNK):
            chunk = np.fromfile(f, dtype=dtype, count=min(_CHUNK, count - start))
            out[start:start + len(chunk)] = convert_np_to_float16(chunk)
    return out.reshape(tensor.dims)


class _Reader:
    """ORT's CalibrationDataReader protocol over a numpy batch, in slices of
    :data:`CALIBRATION_BATCH`."""

    def __init__(self, data: np.ndarray, input_name: str) -> None:
        self._data, self._name = data, input_name
        self._it: Iterator[dict[str, np.ndarray]] = self._batches()

    def _batches(self) -> Iterator[dict[str, np.ndarray]]:
        for start in range(0, len(self._data), CALIBRATION_BATCH):
            yield {self._name: self._data[start:start + CALIBRATION_BATCH]}

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = self._batches()


def to_int8(
    src: str | os.PathLike[str], dst: str | os.PathLike[str], calibration: Calibration
) -> None:
    """Static QDQ quantisation: per-channel int8 weights, uint8 activations, MinMax ranges.

    The float32 file first goes through onnxruntime's basic graph optimisations (the core of
    its ``quant_pre_process``; quantize_static infers shapes itself), which fold a
    BatchNorm that tf2onnx wrote as ``Mul``/``Add`` into the conv before it, as torch's
    exporter does. Unfolded, the conv's output is quantised per tensor *before* BatchNorm
    rescales its channels, and after a depthwise conv those channels' ranges differ by orders
    of magnitude: MobileNetV3-Large's Keras export lost 4 dB at the logits that way.
    A BatchNorm that no conv precedes (DenseNet's BN-ReLU-conv) cannot fold; the rules of
    :mod:`codenn_convert.export.int8_exclusions` keep it and the ``Concat`` feeding it in
    float32, as they keep nodes fed a non-finite constant.
    """
    import tempfile

    import onnx
    import onnxruntime
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    from codenn_convert.export.int8_exclusions import excluded_nodes
    from codenn_convert.thirdparty import quiet_onnxruntime

    quiet_onnxruntime(onnxruntime)
    with tempfile.TemporaryDirectory(prefix="codenn-int8.") as tmp, _quiet_quantizer():
        out, pre = Path(tmp) / "int8.onnx", Path(tmp) / "pre.onnx"
        _basic_optimised(src, pre)
        quantize_static(
            str(pre), str(out), _Reader(calibration.data, "input"),
            nodes_to_exclude=sorted({n for found in excluded_nodes(pre).values() for n in found}),
            quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            # MinMax's augmented graph outputs one ReduceMin/ReduceMax per tensor, so what it
            # keeps per run is scalars. (Not CalibMaxIntermediateOutputs: ORT 1.32 drops the
            # collected data instead of merging it.)
            calibrate_method=CalibrationMethod.MinMax,
        )
        model = onnx.load(str(out))
    set_metadata(model, {META_PRECISION: "int8", **calibration.metadata()})
    onnx.save(model, str(dst))


def _basic_optimised(src: str | os.PathLike[str], dst: Path) -> None:
    """``src`` after onnxruntime's provider-independent (basic) optimisations, saved to
    ``dst`` (initializers in ``dst.data``). The session reads ``src`` from its path, so an
    external-data file beside it is found."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(dst)
    # Initializers go to one file beside ``dst``; otherwise ORT keeps references to the
    # external-data file of ``src``, under its own name but in ``dst``'s folder.
    options.add_session_config_entry(
        "session.optimized_model_external_initializers_file_name", f"{dst.name}.data")
    ort.InferenceSession(str(src), options, providers=["CPUExecutionProvider"])
    _keep_node_metadata(src, dst)


def _keep_node_metadata(src: str | os.PathLike[str], dst: Path) -> None:
    """Copy each node's ``metadata_props`` (the torch exporter's module paths, which
    localisation reads) from ``src`` onto the node of ``dst`` with the same name or first
    output: onnxruntime's optimiser drops them."""
    import onnx

    before = onnx.load(str(src), load_external_data=False)
    props = {key: list(n.metadata_props) for n in before.graph.node if n.metadata_props
             for key in (f"node:{n.name}", *(f"out:{o}" for o in n.output[:1]))}
    if not props:
        return
    model = onnx.load(str(dst))
    for node in model.graph.node:
        found = props.get(f"node:{node.name}") or props.get(f"out:{node.output[0]}")
        if found and not node.metadata_props:
            node.metadata_props.extend(found)
    onnx.save(model, str(dst))


@dataclass(frozen=True)
class LossyThresholds:
    """Lowest acceptable values of each :class:`LossyMetrics` field."""

    min_sqnr_db: float
    min_cosine: float
    min_top1: float
    min_top5: float

    def passes(self, m: Any) -> bool:
        """Whether a :class:`codenn_convert.verification.lossy.LossyMetrics` meets them."""
        return (m.finite and m.sqnr_db >= self.min_sqnr_db and m.cosine >= self.min_cosine
                and m.top1 >= self.min_top1 and m.top5 >= self.min_top5)


@dataclass(frozen=True)
class PrecisionMode:
    """One precision, in one row: how to convert a float32 file to it (None: the export
    itself), whether that needs calibration data, whether its outputs may be judged on
    N(0, 1) noise, and its floors (None: the float32 rule, max rel <= rtol)."""

    name: Precision
    convert: Callable[[Any, Any, Calibration | None], None] | None
    needs_calibration: bool
    judged_on_noise: bool
    thresholds: LossyThresholds | None


#: Defaults per precision, measured with ``benchmarks/bench_precision.py`` on the default
#: models (alexnet, vgg19, resnet50, inception_v3; both frameworks; batch 8; docs/precision.md,
#: section "Deployment precision"). Worst measured fp16 (synthetic and N(0,1) inputs): 41.0 dB,
#: cosine 0.99996, top-1 0.875, top-5 1.0. Worst int8 on inputs like its calibration data
#: (held-out synthetic images): 25.6 dB, cosine 0.9987, top-1 0.875, top-5 0.925. SQNR sits
#: ~6 dB (4x the noise energy) below the worst; cosine follows it (1 - cos ~ 10^(-SQNR/10)/2).
#: top-1 alone may fail only half the batch: random-weight nets have near-ties, and one
#: flipped sample of the verifier's batch of 2 is 0.5 (InceptionV3 flips 1 in 8 at 57 dB).
#: int8 is only judged on calibration-like inputs: on N(0, 1) noise it measured 4.8-23.9 dB.
PRECISION_MODES: dict[str, PrecisionMode] = {
    "fp32": PrecisionMode("fp32", None, needs_calibration=False, judged_on_noise=True,
                          thresholds=None),
    "fp16": PrecisionMode("fp16", lambda src, dst, _calibration: to_fp16(src, dst),
                          needs_calibration=False, judged_on_noise=True,
                          thresholds=LossyThresholds(min_sqnr_db=35.0, min_cosine=0.9998,
                                                     min_top1=0.5, min_top5=0.8)),
    "int8": PrecisionMode("int8", lambda src, dst, calibration: to_int8(src, dst, calibration),
                          needs_calibration=True, judged_on_noise=False,
                          thresholds=LossyThresholds(min_sqnr_db=20.0, min_cosine=0.99,
                                                     min_top1=0.5, min_top5=0.8)),
}
#: Every precision we export, and those a float32 file converts to (the lossy ones).
PRECISIONS: tuple[str, ...] = tuple(PRECISION_MODES)
LOSSY_PRECISIONS: tuple[str, ...] = tuple(n for n, m in PRECISION_MODES.items() if m.convert)


@contextlib.contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """Silence ORT's advice to pre-process (logged on the root logger at every call) and
    numpy's warnings about the ranges of excluded -inf pads, which are never used."""
    import logging

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with np.errstate(invalid="ignore", divide="ignore"):
            yield
    finally:
        root.setLevel(level)


def detect_precision(path: str | os.PathLike[str]) -> Precision:
    """The precision of any ONNX file, from its graph (the metadata is not trusted).

    Quantize/Dequantize (or other integer) nodes make it int8; otherwise float16 holding
    most of the floating-point initializer elements makes it fp16; else fp32.
    """
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    graphs = [model.graph]
    if any(n.op_type in QUANTIZED_OPS for g in graphs for n in g.node):
        return "int8"
    counts: dict[int, int] = {}
    for t in model.graph.initializer:
        counts[t.data_type] = counts.get(t.data_type, 0) + math.prod(t.dims)
    f16 = counts.get(onnx.TensorProto.FLOAT16, 0)
    f32 = counts.get(onnx.TensorProto.FLOAT, 0) + counts.get(onnx.TensorProto.DOUBLE, 0)
    return "fp16" if f16 > f32 else "fp32"
