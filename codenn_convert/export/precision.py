"""Deployment precision of ONNX files: fp16 and int8 conversion, detection, lossy metrics.

* fp16: ``onnxruntime.transformers.float16.convert_float_to_float16(keep_io_types=True)``:
  weights and activations in float16, the graph's input and output stay float32.
* int8: ``onnxruntime.quantization.quantize_static``, QDQ format, per-channel int8 weights
  and uint8 activations (ORT's recommendation for x86 CPUs), MinMax calibration.

Every file keeps the one interface of our exports: input ``input`` float32 NCHW with a
dynamic batch, output ``logits`` float32. The precision and, for int8, how it was calibrated
are written into the file's ``metadata_props``.

Lossy files are judged by :class:`LossyMetrics` against :data:`DEFAULT_THRESHOLDS`, not by
the 1e-5 float32 rule.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np

from codenn_convert.errors import UsageError

Precision = Literal["fp32", "fp16", "int8"]
PRECISIONS: tuple[Precision, ...] = ("fp32", "fp16", "int8")

#: metadata_props keys written into every file we export.
META_PRECISION = "codenn.precision"
META_CALIBRATION_METHOD = "codenn.calibration.method"
META_CALIBRATION_SAMPLES = "codenn.calibration.samples"
META_CALIBRATION_DATA = "codenn.calibration.data"

#: Samples in the default (synthetic) calibration batch.
DEFAULT_CALIBRATION_SAMPLES = 16
#: Samples per calibration run: bounds the memory of ORT's augmented (all-outputs) session.
CALIBRATION_BATCH = 4
#: The calibration method recorded in the metadata (ORT's MinMax, per tensor).
CALIBRATION_METHOD = "minmax"
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
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


# --- calibration data -----------------------------------------------------------------------


@dataclass(frozen=True)
class Calibration:
    """A calibration batch (float32 NCHW) and where it came from, for the metadata."""

    data: np.ndarray
    source: str
    method: str = CALIBRATION_METHOD

    @property
    def samples(self) -> int:
        return int(self.data.shape[0])

    def metadata(self) -> dict[str, str]:
        return {META_CALIBRATION_METHOD: self.method,
                META_CALIBRATION_SAMPLES: str(self.samples), META_CALIBRATION_DATA: self.source}


def load_calibration(
    source: str | os.PathLike[str] | None, input_size: tuple[int, int], *, seed: int = 0
) -> Calibration:
    """Calibration data from an ``.npy`` file, a directory of images, or (``None``) the
    seeded synthetic stand-in of :func:`synthetic_images`."""
    if source is None:
        n = DEFAULT_CALIBRATION_SAMPLES
        return Calibration(synthetic_images(n, input_size, seed=seed),
                           f"synthetic natural-image stand-in (seed {seed}), not real data")
    path = Path(source)
    if path.is_dir():
        return _calibration_images(path, input_size)
    if not path.exists():
        raise UsageError(f"calibration data not found: {path}")
    if path.suffix.lower() != ".npy":
        raise UsageError(f"calibration data must be a .npy file or a directory of images, got "
                         f"{path}")
    return Calibration(_read_npy(path, input_size), f"npy:{path.name}")


def _read_npy(path: Path, input_size: tuple[int, int]) -> np.ndarray:
    """A float32 NCHW ``[N, 3, H, W]`` batch of the export's size, read as ``--inputs``
    reads one (header checked against the file before any data is read)."""
    from codenn_convert.verification.inputs import load_npy, npy_header

    shape, _ = npy_header(path, "calibration data")
    if tuple(shape[2:]) != tuple(input_size):
        raise UsageError(f"calibration data {path.name} has shape {tuple(shape)}; expected "
                         f"float32 NCHW [N, 3, {input_size[0]}, {input_size[1]}]")
    return load_npy(path, "calibration data")


def _calibration_images(path: Path, input_size: tuple[int, int]) -> Calibration:
    from codenn_convert.verification.images import load_image

    files = sorted(p for p in path.iterdir()
                   if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise UsageError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in calibration "
                         f"directory {path}")
    data = np.concatenate([load_image(p, input_size) for p in files])
    return Calibration(data, f"images:{path.name}/ ({len(files)} files, ImageNet "
                             f"pre-processing)")


def synthetic_images(n: int, input_size: tuple[int, int], *, seed: int = 0) -> np.ndarray:
    """``n`` seeded photo-like images, ImageNet-normalised, float32 NCHW.

    A stand-in for real data: smooth colour fields whose amplitude falls as 1/frequency (the
    spectrum of natural images), with random contrast and a little pixel noise, in [0, 1]
    before the ImageNet normalisation. Their activation ranges resemble a photo's far more
    than N(0, 1) noise does, but they are no substitute for samples of the real input data.
    """
    from codenn_convert.verification.images import IMAGENET_MEAN, IMAGENET_STD

    rng = np.random.default_rng(seed)
    h, w = input_size
    out = np.empty((n, 3, h, w), np.float32)
    for i in range(n):
        img = sum(_upsample(rng.random((c + 1, c + 1, 3)), h, w) / c for c in (1, 2, 4, 8, 16, 32))
        img = (img - img.min()) / max(float(np.ptp(img)), 1e-6)
        img = img * rng.uniform(0.5, 1.0) + rng.uniform(0.0, 0.3)  # contrast and brightness
        img = np.clip(img + rng.normal(0.0, 0.02, img.shape), 0.0, 1.0)
        norm = (img - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
        out[i] = norm.transpose(2, 0, 1)
    return out


def _upsample(grid: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bilinear interpolation of a ``[gh, gw, C]`` grid to ``[h, w, C]``."""
    ys, xs = np.linspace(0, grid.shape[0] - 1, h), np.linspace(0, grid.shape[1] - 1, w)
    y0 = np.minimum(ys.astype(int), grid.shape[0] - 2)
    x0 = np.minimum(xs.astype(int), grid.shape[1] - 2)
    fy, fx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    g = grid
    top = g[y0][:, x0] * (1 - fx) + g[y0][:, x0 + 1] * fx
    bottom = g[y0 + 1][:, x0] * (1 - fx) + g[y0 + 1][:, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


# --- conversion -----------------------------------------------------------------------------


def convert_precision(
    src: str | os.PathLike[str], dst: str | os.PathLike[str], precision: Precision,
    calibration: Calibration | None = None,
) -> None:
    """Write the fp32 ONNX file ``src`` at ``precision`` to ``dst`` (``src`` is untouched)."""
    if precision == "fp16":
        to_fp16(src, dst)
    elif precision == "int8":
        if calibration is None:
            raise UsageError("int8 needs calibration data")
        to_int8(src, dst, calibration)
    else:
        raise UsageError(f"cannot convert to precision {precision!r}")


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

    from codenn_convert.export.keras_onnx import INPUT_NAME, OUTPUT_NAME, write_onnx

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
    """Static QDQ quantisation: per-channel int8 weights, uint8 activations, MinMax ranges."""
    import tempfile

    import onnx
    import onnxruntime
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    from codenn_convert.thirdparty import quiet_onnxruntime

    quiet_onnxruntime(onnxruntime)
    with tempfile.TemporaryDirectory(prefix="codenn-int8.") as tmp, _quiet_quantizer():
        out = Path(tmp) / "int8.onnx"
        quantize_static(
            str(src), str(out), _Reader(calibration.data, "input"),
            nodes_to_exclude=nonfinite_constant_nodes(src),
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


def nonfinite_constant_nodes(path: str | os.PathLike[str]) -> list[str]:
    """Names of the nodes fed a non-finite constant, which int8 cannot represent.

    The Keras twins pad max-pools with -inf (torch's semantics); a quantised ``Pad`` would
    get an infinite range (NaN scale) and poison everything after it, so such nodes stay
    float32. Only small initializers are read: constants like these are scalars.
    """
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path), load_external_data=False)
    small = {t.name for t in model.graph.initializer if math.prod(t.dims) <= 16}
    bad = {t.name for t in model.graph.initializer
           if t.name in small and not np.isfinite(numpy_helper.to_array(t)).all()}
    return [n.name for n in model.graph.node if bad.intersection(n.input)]


def set_metadata(model: Any, entries: Mapping[str, str]) -> None:
    """Set ``entries`` in a ModelProto's ``metadata_props``, replacing same-named ones."""
    kept = [p for p in model.metadata_props if p.key not in entries]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in entries.items():
        prop = model.metadata_props.add()
        prop.key, prop.value = key, value


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """An ONNX file's ``metadata_props`` as a dict."""
    import onnx

    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False)
            .metadata_props}


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


# --- lossy metrics --------------------------------------------------------------------------


@dataclass(frozen=True)
class LossyMetrics:
    """How far a reduced-precision output ``b`` is from its float32 reference ``a``.

    ``sqnr_db`` = 10·log10(Σa² / Σ(a − b)²) (inf when equal); ``cosine`` of the flattened
    outputs; ``top1`` the fraction of samples with the same arg-max; ``top5`` the mean
    fraction of the reference's top-5 classes found in ``b``'s top 5. All over positions
    finite in both; ``finite`` is False if either side has a NaN or Inf anywhere, which
    fails every threshold.
    """

    sqnr_db: float
    cosine: float
    top1: float
    top5: float
    finite: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def sqnr_db(a: np.ndarray, b: np.ndarray) -> float:
    """10·log10(Σa² / Σ(a − b)²) in float64; inf when ``b == a``."""
    a = np.asarray(a, np.float64)
    noise = float(np.sum((a - np.asarray(b, np.float64)) ** 2))
    signal = float(np.sum(a**2))
    if noise == 0.0:
        return math.inf
    return 10.0 * math.log10(signal / noise) if signal > 0 else -math.inf


def _top5_overlap(a: np.ndarray, b: np.ndarray) -> float:
    k = min(5, a.shape[-1])
    ta = np.argsort(-a, axis=-1, kind="stable")[:, :k]
    tb = np.argsort(-b, axis=-1, kind="stable")[:, :k]
    return float(np.mean([len(set(x) & set(y)) / k for x, y in zip(ta, tb, strict=True)]))


def lossy_metrics(a: np.ndarray, b: np.ndarray) -> LossyMetrics:
    """Compare output ``b`` with reference ``a`` (both ``[N, ...]``; logits ``[N, classes]``)."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"output shapes differ: {a.shape} vs {b.shape}")
    finite_mask = np.isfinite(a) & np.isfinite(b)
    finite = bool(finite_mask.all())
    fa, fb = a[finite_mask], b[finite_mask]
    denom = float(np.linalg.norm(fa) * np.linalg.norm(fb))
    cosine = float(np.dot(fa, fb) / denom) if denom > 0 else float(np.array_equal(fa, fb))
    # Non-finite positions would poison the sums and arg-sorts: zero them on both sides.
    a2 = np.where(finite_mask, a, 0.0).reshape(a.shape[0], -1)
    b2 = np.where(finite_mask, b, 0.0).reshape(b.shape[0], -1)
    return LossyMetrics(
        sqnr_db=sqnr_db(fa, fb) if fa.size else -math.inf, cosine=cosine,
        top1=float(np.mean(a2.argmax(-1) == b2.argmax(-1))), top5=_top5_overlap(a2, b2),
        finite=finite,
    )


@dataclass(frozen=True)
class LossyThresholds:
    """Lowest acceptable values of each :class:`LossyMetrics` field."""

    min_sqnr_db: float
    min_cosine: float
    min_top1: float
    min_top5: float

    def passes(self, m: LossyMetrics) -> bool:
        return (m.finite and m.sqnr_db >= self.min_sqnr_db and m.cosine >= self.min_cosine
                and m.top1 >= self.min_top1 and m.top5 >= self.min_top5)


#: Defaults per precision, measured with ``benchmarks/bench_precision.py`` on the default
#: models (alexnet, vgg19, resnet50, inception_v3; both frameworks; batch 8; README, section
#: "Deployment precision"). Worst measured fp16 (synthetic and N(0,1) inputs): 41.0 dB,
#: cosine 0.99996, top-1 0.875, top-5 1.0. Worst int8 on inputs like its calibration data
#: (held-out synthetic images): 25.6 dB, cosine 0.9987, top-1 0.875, top-5 0.925. SQNR sits
#: ~6 dB (4x the noise energy) below the worst; cosine follows it (1 - cos ~ 10^(-SQNR/10)/2).
#: top-1 alone may fail only half the batch: random-weight nets have near-ties, and one
#: flipped sample of the verifier's batch of 2 is 0.5 (InceptionV3 flips 1 in 8 at 57 dB).
#: int8 is only judged on calibration-like inputs: on N(0, 1) noise it measured 4.8-23.9 dB.
DEFAULT_THRESHOLDS: dict[Precision, LossyThresholds] = {
    "fp16": LossyThresholds(min_sqnr_db=35.0, min_cosine=0.9998, min_top1=0.5, min_top5=0.8),
    "int8": LossyThresholds(min_sqnr_db=20.0, min_cosine=0.99, min_top1=0.5, min_top5=0.8),
}


def check_thresholds(overrides: Mapping[str, float]) -> None:
    """Overrides of :data:`DEFAULT_THRESHOLDS` must name a field and be finite."""
    known = set(LossyThresholds.__dataclass_fields__)
    for key, value in overrides.items():
        if key not in known or not math.isfinite(value):
            raise UsageError(f"bad lossy threshold {key}={value}")


def floors(precision: str, overrides: Mapping[str, float] | None = None) -> LossyThresholds:
    """The floors a ``precision`` output is judged by: the defaults, with ``overrides``."""
    return replace(DEFAULT_THRESHOLDS[precision], **(overrides or {}))  # type: ignore[index]
