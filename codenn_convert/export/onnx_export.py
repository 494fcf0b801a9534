"""ONNX export of both twins with one interface.

Both files take ``input`` (float32, NCHW ``[N, 3, H, W]``, dynamic ``N``) and give ``logits``
(``[N, classes]``), so they are drop-in replacements for each other.

* torch: ``torch.onnx.export(..., dynamo=True)`` (needs onnxscript).
* Keras: tf2onnx through :mod:`codenn_convert.export.keras_onnx`, which converts a weight-free graph
  and binds the weights afterwards, so memory follows the graph rather than the weights.

``precision="fp16"|"int8"`` exports float32 into a temporary directory first (in a child
process, weights as external data) and converts that file (:mod:`codenn_convert.export.precision`);
the interface stays the same. Every file records
its precision in ``metadata_props`` (``codenn.precision``).
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from codenn_convert import errors
from codenn_convert.checkpoints.atomic import atomic_output, disk_full, ensure_writable
from codenn_convert.checkpoints.files import refuse_nonfinite
from codenn_convert.checkpoints.sources import read_source
from codenn_convert.errors import CodennError, UsageError
from codenn_convert.export.calibration import load_calibration
from codenn_convert.export.keras_onnx import export_keras_onnx
from codenn_convert.export.metadata import META_PRECISION
from codenn_convert.export.precision import PRECISION_MODES, check_precision, convert_precision
from codenn_convert.interface import DEFAULT_OPSET, INPUT_NAME, OUTPUT_NAME
from codenn_convert.registry import Framework
from codenn_convert.twins import build as twins
from codenn_convert.twins.init import realistic_state

__all__ = ["DEFAULT_OPSET", "INPUT_NAME", "OUTPUT_NAME", "export_keras_model", "export_onnx",
           "export_torch_onnx"]


def export_torch_onnx(
    model: Any, path: str | os.PathLike[str], *, input_size: tuple[int, int],
    opset: int = DEFAULT_OPSET, external_data: bool = False,
) -> Path:
    """Export a torch twin (eval mode) with the dynamo exporter and a dynamic batch.

    ``external_data=True`` is for intermediates in a private directory: the weights go to a
    data file beside ``path`` and the file is written in place (a rename would break the
    reference to the data file).
    """
    import logging

    import onnx
    import torch

    # The exporter logs a warning per missing torchvision op; we never use torchvision.
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    model = model.eval()
    # Batch 2 in the example: torch.export specialises a dimension traced with size 1.
    example = torch.zeros(2, 3, *input_size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model, (example,), dynamo=True, input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME], dynamic_shapes=({0: torch.export.Dim("batch")},),
            opset_version=opset, verbose=False,
        )
    path = Path(path)
    # Recorded like the reduced-precision files' (the dynamo exporter's model is onnx_ir).
    program.model.metadata_props[META_PRECISION] = "fp32"
    if external_data:
        program.save(str(path), external_data=True)
        onnx.checker.check_model(str(path))
        return path
    with atomic_output(path) as tmp:
        program.save(str(tmp))
        onnx.checker.check_model(str(tmp))
    return path


def export_keras_model(
    model: Any, path: str | os.PathLike[str], *, opset: int = DEFAULT_OPSET,
    external_data: bool = False,
) -> Path:
    """Export a Keras twin through tf2onnx (low-memory path)."""
    return export_keras_onnx(model, path, opset=opset, external_data=external_data)


def export_onnx(
    model: str,
    framework: Framework,
    output: str | os.PathLike[str],
    *,
    weights: str | os.PathLike[str] | None = None,
    input_size: tuple[int, int] | None = None,
    opset: int = DEFAULT_OPSET,
    seed: int = 0,
    options: Mapping[str, Any] | None = None,
    allow_nonfinite: bool = False,
    precision: str = "fp32",
    calibration: str | os.PathLike[str] | None = None,
) -> Path:
    """Export the ``framework`` twin of ``model`` to ``output`` at ``precision``.

    ``weights`` may be a torch- or Keras-layout checkpoint; without it the seeded realistic
    random weights are used. ``options`` go to the twin builders (e.g. InceptionV3's
    ``transform_input``). ``precision`` is fp32, fp16 or int8; int8 is calibrated on
    ``calibration`` (an ``.npy`` NCHW batch or a directory of images), by default on seeded
    synthetic images (a stand-in for real data, see :func:`precision.synthetic_images`).
    Weights with NaN/Inf values are refused unless ``allow_nonfinite``.
    """
    size = twins.default_input_size(model, input_size)
    if framework not in ("torch", "keras"):
        raise UsageError(f"unknown framework {framework!r}; use torch or keras")
    if not str(output).endswith(".onnx"):
        raise UsageError(f"output must be an .onnx file, got {output}")
    prec = check_precision(precision)
    mode = PRECISION_MODES[prec]
    if calibration is not None and not mode.needs_calibration:
        needs = [n for n, m in PRECISION_MODES.items() if m.needs_calibration]
        raise UsageError(f"--calibration is for --precision {' or '.join(needs)}, not {prec}")
    ensure_writable(output)
    # Read before any export work, so bad calibration data fails fast.
    calib = load_calibration(calibration, size, seed=seed) if mode.needs_calibration else None
    job = _Fp32Job(model, framework, size, weights, opset, seed, dict(options or {}),
                   allow_nonfinite)
    if mode.convert is None:  # float32: the export itself
        return _export_fp32(job, output)
    # The float32 file is an intermediate: it lives in a directory that is always removed,
    # beside the output, so one disk (the one the user chose) must hold both.
    with tempfile.TemporaryDirectory(prefix=".codenn-partial.export.",
                                     dir=Path(output).parent) as tmp:
        # In a child process, with external data: the export's memory (TensorFlow keeps
        # ~1.3 GB after a VGG-19 export) is the OS's again before the conversion allocates, and
        # the conversion reads the graph without the weights, then one tensor at a time.
        fp32 = _export_fp32_in_child(job, Path(tmp) / "fp32.onnx")
        with atomic_output(output) as out:
            convert_precision(fp32, out, prec, calib)
    return Path(output)


def _export_fp32_in_child(job: _Fp32Job, output: Path) -> Path:
    """:func:`_export_fp32` (external data) in a fresh interpreter; its errors re-raised here."""
    import json
    import subprocess
    import sys


    request = json.dumps({**asdict(job), "weights": None if job.weights is None else
                          str(job.weights), "output": str(output)})
    proc = subprocess.run(
        [sys.executable, "-c",
         "from codenn_convert.export.onnx_export import _child_main; _child_main()"],
        input=request, capture_output=True, text=True, check=False,
    )
    if proc.returncode == 0:
        return output
    try:
        reply = json.loads(proc.stdout.strip().splitlines()[-1])
        kind = getattr(errors, reply["error"])
        if not (isinstance(kind, type) and issubclass(kind, errors.CodennError)):
            raise AttributeError(reply["error"])
    except (IndexError, ValueError, KeyError, AttributeError):
        tail = proc.stderr.strip().splitlines()[-1:] or [f"exit status {proc.returncode}"]
        full = disk_full(tail[0], output.parent)
        if full is not None:
            raise full from None
        raise RuntimeError(f"float32 export failed: {tail[0]}") from None
    raise kind(reply["message"])


def _child_main() -> None:
    """Entry point of :func:`_export_fp32_in_child`: a job as JSON on stdin."""
    import json
    import sys


    request = json.loads(sys.stdin.read())
    output = request.pop("output")
    job = _Fp32Job(**{**request, "input_size": tuple(request["input_size"])})
    try:
        _export_fp32(job, output, external_data=True)
    except CodennError as exc:  # reported as data: the parent raises the same error
        print(json.dumps({"error": type(exc).__name__, "message": str(exc)}))
        sys.exit(2)


@dataclass(frozen=True)
class _Fp32Job:
    """What a float32 export needs (one twin, one set of weights)."""

    model: str
    framework: Framework
    input_size: tuple[int, int]
    weights: str | os.PathLike[str] | None
    opset: int
    seed: int
    options: dict[str, Any]
    allow_nonfinite: bool = False


def _export_fp32(
    job: _Fp32Job, output: str | os.PathLike[str], *, external_data: bool = False
) -> Path:
    """Build the twin with its weights and export it at float32; the twin dies on return."""
    size = job.input_size
    # A checkpoint may determine options (num_classes, aux_logits): read it before building.
    source = read_source(job.model, job.weights, job.options) if job.weights else None
    opts = source.options if source is not None else job.options
    keras_model = twins.get_model(job.model, "keras", input_size=size, **opts) if (
        job.framework == "keras" or source is not None) else None
    state = (twins.state_from_source(job.model, source, keras_model) if source is not None
             else realistic_state(job.model, job.seed, **opts))
    if source is not None and not job.allow_nonfinite:
        refuse_nonfinite(state, job.weights)  # type: ignore[arg-type]
    if job.framework == "torch":
        return export_torch_onnx(
            twins.torch_twin(job.model, state, **opts), output, input_size=size,
            opset=job.opset, external_data=external_data,
        )
    twins.set_torch_state(keras_model, state, job.model)
    del state
    return export_keras_model(keras_model, output, opset=job.opset,
                              external_data=external_data)
