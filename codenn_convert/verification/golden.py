"""Golden files: a verified run recorded once, replayed later without the training stack.

``codenn verify ... --save-golden G.npz`` stores the inputs, the torch logits (the
reference), the float64 logits (the exact result), and the model name, builder options,
rtol, input layout and environment. ``codenn check MODEL.onnx --golden G.npz`` runs an ONNX
file in onnxruntime on the stored inputs and compares it with the verifier's metrics.

A golden file is data, never code: a plain ``.npz`` read with ``allow_pickle=False``, every
array's dtype and shape checked. This module imports neither torch nor TensorFlow.
"""

from __future__ import annotations

import json
import logging
import math
import os
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from codenn_convert.checkpoints.atomic import atomic_output
from codenn_convert.errors import CheckpointError, UsageError
from codenn_convert.export.precision import PRECISION_MODES
from codenn_convert.verification.engine import compare_runners, fill_results
from codenn_convert.verification.environment import environment
from codenn_convert.verification.inputs import NORMAL_INPUTS
from codenn_convert.verification.lossy import check_thresholds, judge_pair
from codenn_convert.verification.results import ModelResult
from codenn_convert.verification.runners import ONNX_FILE_PREFIX, OnnxRunner, StoredRunner

FORMAT = "codenn-golden"
VERSION = 1
#: The stored inputs' layout (ONNX files taking NHWC get them transposed).
INPUT_LAYOUT = "NCHW"
#: Largest uncompressed golden file read: inputs and logits, not weights, are stored.
MAX_BYTES = 4 << 30


@dataclass
class Golden:
    """The content of a golden file; ``inputs[k]`` gave ``reference[k]`` and ``exact[k]``."""

    model: str
    labels: list[str]
    inputs: list[np.ndarray]
    reference: list[np.ndarray]
    exact: list[np.ndarray]
    rtol: float
    options: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    environment: dict[str, Any] = field(default_factory=dict)

    @property
    def input_size(self) -> tuple[int, int]:
        return int(self.inputs[0].shape[2]), int(self.inputs[0].shape[3])


def save_golden(path: str | os.PathLike[str], golden: Golden) -> Path:
    """Write ``golden`` to ``path`` atomically (an ``.npz`` of plain arrays)."""
    meta = {"format": FORMAT, "version": VERSION, "model": golden.model,
            "labels": golden.labels, "rtol": golden.rtol, "options": golden.options,
            "seed": golden.seed, "input_layout": INPUT_LAYOUT,
            "environment": golden.environment or environment()}
    arrays: dict[str, np.ndarray] = {"meta": np.array(json.dumps(meta))}
    for k in range(len(golden.labels)):
        arrays[f"input_{k}"] = np.asarray(golden.inputs[k], np.float32)
        arrays[f"reference_{k}"] = np.asarray(golden.reference[k], np.float32)
        arrays[f"exact_{k}"] = np.asarray(golden.exact[k], np.float64)
    with atomic_output(path) as tmp, tmp.open("wb") as f:
        np.savez(f, **arrays)
    return Path(path)


def _meta(npz: Any, path: Path) -> dict[str, Any]:
    raw = npz["meta"] if "meta" in npz.files else None
    if raw is None or raw.dtype.kind != "U" or raw.ndim != 0:
        raise CheckpointError(f"{path} is not a codenn golden file (no metadata)")
    meta = json.loads(str(raw))
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a codenn golden file (format "
                              f"{meta.get('format') if isinstance(meta, dict) else None!r})")
    if meta.get("version") != VERSION:
        raise CheckpointError(f"{path}: golden file version {meta.get('version')!r}; this "
                              f"codenn reads version {VERSION}")
    labels, rtol = meta.get("labels"), meta.get("rtol")
    if (not isinstance(labels, list) or not labels or not all(isinstance(s, str) for s in labels)
            or not isinstance(rtol, int | float) or not (math.isfinite(rtol) and rtol > 0)):
        raise CheckpointError(f"{path}: malformed golden metadata")
    return meta


def _array(npz: Any, key: str, dtype: Any, ndim: int, path: Path) -> np.ndarray:
    if key not in npz.files:
        raise CheckpointError(f"{path}: golden file lacks {key}")
    arr = npz[key]
    if arr.dtype != dtype or arr.ndim != ndim:
        raise CheckpointError(f"{path}: {key} is {arr.dtype} {list(arr.shape)}, expected "
                              f"{np.dtype(dtype)} with {ndim} dimensions")
    return arr


def load_golden(path: str | os.PathLike[str]) -> Golden:
    """Read and check a golden file; a damaged or foreign file is one CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"golden file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            # Members are sized from the zip directory before any is decompressed.
            claimed = sum(i.file_size for i in npz.zip.infolist())
            if claimed > MAX_BYTES:
                raise CheckpointError(f"{path}: golden file claims {claimed} bytes "
                                      f"(limit {MAX_BYTES})")
            meta = _meta(npz, path)
            n = len(meta["labels"])
            inputs = [_array(npz, f"input_{k}", np.float32, 4, path) for k in range(n)]
            ref = [_array(npz, f"reference_{k}", np.float32, 2, path) for k in range(n)]
            exact = [_array(npz, f"exact_{k}", np.float64, 2, path) for k in range(n)]
    except CheckpointError:
        raise
    except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile,
            json.JSONDecodeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
        raise CheckpointError(f"{path} is not a readable golden file: {first}") from None
    sizes = {x.shape[1:] for x in inputs}
    if len(sizes) != 1 or next(iter(sizes))[0] != 3 or any(
            len(x) != len(r) or r.shape != e.shape
            for x, r, e in zip(inputs, ref, exact, strict=True)):
        raise CheckpointError(f"{path}: inputs and logits in the golden file do not match")
    return Golden(model=str(meta.get("model")), labels=list(meta["labels"]), inputs=inputs,
                  reference=ref, exact=exact, rtol=float(meta["rtol"]),
                  options=dict(meta.get("options") or {}), seed=int(meta.get("seed", 0)),
                  environment=dict(meta.get("environment") or {}))


def check_onnx(onnx_path: str | os.PathLike[str], golden_path: str | os.PathLike[str], *,
               rtol: float | None = None, thresholds: Mapping[str, float] | None = None,
               ) -> list[Any]:
    """Run ``onnx_path`` on a golden file's inputs; one ModelResult per stored input.

    The pair is ``golden`` (the stored torch logits) vs ``onnx:<file name>``, with the
    verifier's metrics and the distance of both to the stored float64 result. A float32 file
    is held to ``rtol``; an fp16/int8 one (detected from its graph) to that precision's
    floors, with ``thresholds`` overriding them, as ``codenn verify`` judges it.
    """
    if rtol is not None and not (math.isfinite(rtol) and rtol > 0):
        raise UsageError(f"rtol must be a positive finite number, got {rtol}")
    check_thresholds(thresholds or {})
    golden = load_golden(golden_path)
    tol = golden.rtol if rtol is None else rtol
    onnx: Any = OnnxRunner(onnx_path, name=ONNX_FILE_PREFIX + Path(onnx_path).name,
                           input_size=golden.input_size, precision=None)
    if Path(onnx_path).suffix.lower() == ".tflite":  # a LiteRT file, in ai_edge_litert
        from codenn_convert.verification.litert_runner import TFLITE_FILE_PREFIX, TfliteRunner

        onnx = TfliteRunner(onnx_path, name=TFLITE_FILE_PREFIX + Path(onnx_path).name,
                            input_size=golden.input_size)
    onnx.check()
    inputs, notes = _judged_inputs(golden, onnx.precision, Path(golden_path))
    for note in notes:
        logging.getLogger("codenn_convert.notes").info(note)
    results = [ModelResult(model=golden.model, input_shape=list(x.shape), seed=golden.seed,
                           rtol=tol, inputs=label, options=golden.options, notes=list(notes))
               for label, x, _, _ in inputs]

    def judge(a: str, b: str, ya: np.ndarray, yb: np.ndarray) -> Any:
        return judge_pair(a, b, ya, yb, precision=onnx.precision, rtol=tol,
                          overrides=thresholds)

    xs = [x for _, x, _, _ in inputs]
    found = compare_runners(
        [StoredRunner("golden", xs, [r for _, _, r, _ in inputs]), onnx],
        [(label, x) for label, x, _, _ in inputs], rtol=tol,
        oracle=StoredRunner("float64", xs, [e for _, _, _, e in inputs]), judge=judge)
    fill_results(results, found)
    return results


def _judged_inputs(golden: Golden, precision: str, path: Path
                   ) -> tuple[list[tuple[str, np.ndarray, np.ndarray, np.ndarray]], list[str]]:
    """The stored inputs a ``precision`` file is judged on, and a note on any left out.

    A precision that may not be judged on N(0,1) noise (int8: its ranges are calibrated on
    image-like data, and noise overflows them) never is
    (:func:`codenn_convert.verification.run._lossy_inputs`).
    """
    stored = list(zip(golden.labels, golden.inputs, golden.reference, golden.exact,
                      strict=True))
    if PRECISION_MODES[precision].judged_on_noise:
        return stored, []
    kept = [s for s in stored if s[0] != NORMAL_INPUTS]
    if not kept:
        raise UsageError(
            f"{path} holds only N(0,1) noise, on which {precision} is not judged (it overflows "
            f"the calibrated ranges); record one on image-like inputs: codenn verify "
            f"{golden.model} --precision {precision} --save-golden {path.name}")
    skipped = len(stored) - len(kept)
    return kept, [f"{precision}: {skipped} N(0,1) input batch left out"] if skipped else []
