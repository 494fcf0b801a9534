"""LiteRT (``.tflite``) export of the Keras twin, through Keras 3's own LiteRT exporter.

``model.export(path, format="litert")`` (Keras archive -> SavedModel -> TFLite converter)
writes the weights into the file. A converter fed a traced concrete function of the same
model wrote a 70 KB ResNet-18 with no weights whose interpreter returned NaN, so every
export here is run once in LiteRT and compared with Keras before it is kept
(:func:`_check_export`).

A torch checkpoint reaches the Keras twin through our exact mapping, so ``--framework
torch`` and ``--framework keras`` write the same file. Interface: one float32 image batch,
NHWC by default (``layout="nchw"`` adds a transpose in front), resizable batch, float32
logits. Precisions, as for ONNX:

* fp16: float16 weights, dequantised to float32 at load; float32 IO.
* int8: full-integer (``TFLITE_BUILTINS_INT8``) with float32 IO (quantise/dequantise at the
  edges), calibrated on the same data as ONNX int8 (:func:`precision.load_calibration`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from codenn_convert.checkpoints.atomic import atomic_output
from codenn_convert.errors import UsageError
from codenn_convert.export.calibration import Calibration
from codenn_convert.export.litert_format import (
    DEFAULT_LAYOUT,
    META_LAYOUT,
    META_MODEL,
    META_SOURCE,
    TFLITE_SUFFIX,
    check_layout,
)
from codenn_convert.export.metadata import META_PRECISION
from codenn_convert.export.precision import check_precision

#: Bytes per weight a file must at least hold per precision (the weight-less-file trap).
_WEIGHT_BYTES = {"fp32": 4, "fp16": 2, "int8": 1}
#: A float32 file must match Keras this closely on the export check (verify is stricter).
_CHECK_RTOL = 1e-4


@dataclass(frozen=True)
class TfliteSpec:
    """What a LiteRT file holds besides the weights: interface, precision, provenance."""

    model: str
    layout: str = DEFAULT_LAYOUT
    precision: str = "fp32"
    calibration: Calibration | None = None
    source: str = "seeded random weights"
    extra: Mapping[str, str] = field(default_factory=dict)

    def metadata(self) -> dict[str, str]:
        calib = self.calibration.metadata() if self.calibration is not None else {}
        return {META_MODEL: self.model, META_LAYOUT: self.layout.upper(),
                META_PRECISION: self.precision, META_SOURCE: self.source, **calib,
                **self.extra}


def export_tflite(
    model: str, output: str | os.PathLike[str], *, framework: str = "keras",
    weights: str | os.PathLike[str] | None = None, input_size: tuple[int, int] | None = None,
    seed: int = 0, options: Mapping[str, Any] | None = None, allow_nonfinite: bool = False,
    precision: str = "fp32", calibration: str | os.PathLike[str] | None = None,
    layout: str = DEFAULT_LAYOUT,
) -> Path:
    """Export ``model`` (its Keras twin, weights from ``weights`` of either layout or the
    seeded realistic ones) to the LiteRT file ``output``. ``framework`` only says which twin
    the user thinks of: both give the same file."""
    from codenn_convert.checkpoints.atomic import ensure_writable
    from codenn_convert.export.calibration import load_calibration
    from codenn_convert.twins import build as twins

    if framework not in ("torch", "keras"):
        raise UsageError(f"unknown framework {framework!r}; use torch or keras")
    if not str(output).endswith(TFLITE_SUFFIX):
        raise UsageError(f"output must be a {TFLITE_SUFFIX} file, got {output}")
    prec, lay = check_precision(precision), check_layout(layout)
    if calibration is not None and prec != "int8":
        raise UsageError(f"--calibration is for --precision int8, not {prec}")
    size = twins.default_input_size(model, input_size)
    ensure_writable(output)
    calib = load_calibration(calibration, size, seed=seed) if prec == "int8" else None
    kmodel = _keras_twin(model, size, weights, seed, dict(options or {}), allow_nonfinite)
    source = Path(weights).name if weights is not None else f"seeded random weights (seed " \
                                                           f"{seed})"
    spec = TfliteSpec(model, lay, prec, calib, source)
    return write_keras_tflite(kmodel, output, spec)


def _keras_twin(model: str, size: tuple[int, int], weights: Any, seed: int,
                options: dict[str, Any], allow_nonfinite: bool) -> Any:
    """The Keras twin with the checkpoint's (or the seeded) weights, mapped exactly."""
    from codenn_convert.checkpoints.files import refuse_nonfinite
    from codenn_convert.checkpoints.sources import read_source
    from codenn_convert.twins import build as twins
    from codenn_convert.twins.init import realistic_state

    # A checkpoint may determine options (num_classes, aux_logits): read it before building.
    source = read_source(model, weights, options) if weights is not None else None
    opts = source.options if source is not None else options
    kmodel = twins.get_model(model, "keras", input_size=size, **opts)
    state = (twins.state_from_source(model, source, kmodel) if source is not None
             else realistic_state(model, seed, **opts))
    if source is not None and not allow_nonfinite:
        refuse_nonfinite(state, weights)
    twins.set_torch_state(kmodel, state, model)
    return kmodel


def write_keras_tflite(kmodel: Any, output: str | os.PathLike[str], spec: TfliteSpec) -> Path:
    """Write a built Keras twin to ``output`` atomically, checked in LiteRT before the
    rename: a failed conversion or check leaves nothing."""
    from codenn_convert.twins.build import inference_view

    view = _with_layout(inference_view(kmodel), spec.layout)
    with atomic_output(output) as tmp:
        with _quiet(), _finite_max_pool_pads(view, spec.precision == "int8"):
            view.export(str(tmp), format="litert", verbose=False,
                        **_converter_settings(spec, view))
        _add_metadata(tmp, spec.metadata())
        _check_export(tmp, view, spec)
    return Path(output)


def _with_layout(view: Any, layout: str) -> Any:
    """The twin taking NCHW input through a transpose in front (``nchw``), or as is."""
    if layout == "nhwc":
        return view
    import keras

    h, w, c = view.inputs[0].shape[1:]
    inp = keras.Input((c, h, w), name="input")
    return keras.Model(inp, view(keras.layers.Permute((2, 3, 1), name="to_nhwc")(inp)),
                       name=view.name)


def _converter_settings(spec: TfliteSpec, view: Any) -> dict[str, Any]:
    """TFLite converter attributes per precision (Keras passes them to the converter).

    Only LiteRT's builtin ops: a file needing TensorFlow's select ops would not run in
    ``ai_edge_litert``'s interpreter.
    """
    import tensorflow as tf

    builtins = {"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS]}
    table: dict[str, Callable[[], dict[str, Any]]] = {
        "fp32": lambda: {"target_spec": builtins},
        "fp16": lambda: {"optimizations": [tf.lite.Optimize.DEFAULT],
                         "target_spec": {**builtins, "supported_types": [tf.float16]}},
        "int8": lambda: {
            "optimizations": [tf.lite.Optimize.DEFAULT],
            "representative_dataset": _representative(spec, view),
            "target_spec": {"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]},
            "inference_input_type": tf.float32, "inference_output_type": tf.float32},
    }
    return table[spec.precision]()


def _representative(spec: TfliteSpec, view: Any) -> Callable[[], Iterator[list[np.ndarray]]]:
    """The calibration batch, one sample at a time, in the file's input layout."""
    assert spec.calibration is not None
    data = spec.calibration.data
    want = tuple(view.inputs[0].shape[1:])
    if spec.layout == "nhwc":
        data = data.transpose(0, 2, 3, 1)
    if tuple(data.shape[1:]) != want:
        raise UsageError(f"calibration data of shape {list(data.shape[1:])} does not fit the "
                         f"input {list(want)}")

    def samples() -> Iterator[list[np.ndarray]]:
        for i in range(len(data)):
            yield [np.ascontiguousarray(data[i:i + 1], np.float32)]

    return samples


@contextlib.contextmanager
def _finite_max_pool_pads(view: Any, active: bool) -> Iterator[None]:
    """For int8, the twins' ``-inf`` max-pool padding becomes mirror (symmetric) padding.

    int8 cannot hold ``-inf``: the converter gives the pad the input's scale and stretches
    that range to infinity (scale 1e36), which zeroes everything after the stem. Mirror
    padding gives the same max-pool output exactly: with padding ``p <= k / 2`` (torch's
    rule), every padded value in a window is a copy of an input value in the same window,
    so it can never be the window's unique maximum. Only the layers' ``call`` is swapped,
    for the export, and restored after it.
    """
    from codenn_convert.models.common.keras_layers import ConstantPadding2D

    pads = [layer for layer in _all_layers(view) if isinstance(layer, ConstantPadding2D)
            and layer.value == float("-inf")] if active else []
    for layer in pads:
        layer.call = _mirror_call(layer)
    try:
        yield
    finally:
        for layer in pads:
            del layer.call


def _mirror_call(layer: Any) -> Callable[[Any], Any]:
    from keras import ops

    def call(x: Any) -> Any:
        ph, pw = layer.padding
        return ops.pad(x, [[0, 0], [ph, ph], [pw, pw], [0, 0]], mode="symmetric")

    return call


def _all_layers(model: Any) -> Iterator[Any]:
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from _all_layers(layer)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The converter prints its quantiser settings on stdout; a CLI's stdout is its result."""
    import sys

    with contextlib.redirect_stdout(sys.stderr):
        yield


def _add_metadata(path: Path, entries: Mapping[str, str]) -> None:
    """Rewrite the LiteRT file ``path`` with ``entries`` as flatbuffer metadata (one buffer
    each), replacing ours.

    Memory: the file is mapped, the object API reads its weight buffers as views of the
    mapping, and packing copies them once into the new flatbuffer, which is written from
    the builder's own buffer (no further copy).
    """
    import flatbuffers
    from ai_edge_litert import schema_py_generated as fb

    from codenn_convert.export.litert_format import mapped

    with mapped(path) as data:
        model = fb.ModelT.InitFromObj(fb.Model.GetRootAs(data, 0))
        model.metadata = [m for m in (model.metadata or []) if not m.name or not
                          m.name.decode("utf-8", "replace").startswith("codenn.")]
        for key, value in entries.items():
            buf = fb.BufferT()
            buf.data = np.frombuffer(value.encode("utf-8"), np.uint8)
            model.buffers.append(buf)
            meta = fb.MetadataT()
            meta.name, meta.buffer = key.encode("utf-8"), len(model.buffers) - 1
            model.metadata.append(meta)
        builder = flatbuffers.Builder(len(data) + (1 << 16))
        builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
        del model  # its views of the mapping must go before the mapping closes
    with open(path, "wb") as f:
        f.write(memoryview(builder.Bytes)[builder.Head():])


def _check_export(path: Path, view: Any, spec: TfliteSpec) -> None:
    """Run the written file once in LiteRT against Keras: weights present, output finite,
    float32 within :data:`_CHECK_RTOL`. A file that fails is a bug of the export path."""
    from codenn_convert.export.calibration import synthetic_images
    from codenn_convert.export.litert_format import (
        input_layout,
        open_interpreter,
        run_interpreter,
    )

    n_weights = sum(int(np.prod(w.shape)) for w in view.weights)
    size = path.stat().st_size
    if size < 0.5 * n_weights * _WEIGHT_BYTES[spec.precision]:
        raise RuntimeError(f"LiteRT export holds {size} bytes for {n_weights} weights: the "
                           f"weights were lost")
    h, w = (view.inputs[0].shape[1:3] if spec.layout == "nhwc"
            else view.inputs[0].shape[2:4])
    x = synthetic_images(1, (int(h), int(w)), seed=12345)
    interpreter = open_interpreter(path)
    (got,) = run_interpreter(interpreter, x, input_layout(interpreter, path, (int(h), int(w))))
    feed = x.transpose(0, 2, 3, 1) if spec.layout == "nhwc" else x
    ref = np.asarray(view(feed, training=False))
    if not np.isfinite(got).all():
        raise RuntimeError("LiteRT export gives non-finite logits")
    rel = float(np.abs(got - ref).max() / max(float(np.abs(ref).max()), 1e-30))
    if spec.precision == "fp32" and rel > _CHECK_RTOL:
        raise RuntimeError(f"LiteRT export differs from Keras by {rel:.1e} (max rel)")
