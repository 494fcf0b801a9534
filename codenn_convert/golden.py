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
import math
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from codenn_convert.errors import CheckpointError, UsageError

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
    from codenn_convert.checkpoint import atomic_output
    from codenn_convert.report import environment

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
               rtol: float | None = None) -> list[Any]:
    """Run ``onnx_path`` on a golden file's inputs; one ModelResult per stored input.

    The pair is ``golden`` (the stored torch logits) vs ``onnx:<file name>``, with the
    verifier's metrics and the distance of both to the stored float64 result.
    """
    from codenn_convert.runners import ONNX_FILE_PREFIX, OnnxRunner, StoredRunner
    from codenn_convert.verification import ModelResult, compare_runners, fill_results

    if rtol is not None and not (math.isfinite(rtol) and rtol > 0):
        raise UsageError(f"rtol must be a positive finite number, got {rtol}")
    golden = load_golden(golden_path)
    tol = golden.rtol if rtol is None else rtol
    onnx = OnnxRunner(onnx_path, name=ONNX_FILE_PREFIX + Path(onnx_path).name,
                      input_size=golden.input_size)
    onnx.check()
    inputs = list(zip(golden.labels, golden.inputs, strict=True))
    results = [ModelResult(model=golden.model, input_shape=list(x.shape), seed=golden.seed,
                           rtol=tol, inputs=label, options=golden.options)
               for label, x in inputs]
    found = compare_runners(
        [StoredRunner("golden", golden.inputs, golden.reference), onnx], inputs, rtol=tol,
        oracle=StoredRunner("float64", golden.inputs, golden.exact))
    fill_results(results, found)
    return results
