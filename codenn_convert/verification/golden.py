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

from codenn_convert.checkpoints import npyfile
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
#: Largest golden file read, by what its headers declare: inputs and logits, not weights,
#: are stored (a ResNet-18 golden of batch 2 holds 1.2 MB; 1 GiB is a batch of ~1700 at 224).
MAX_BYTES = 1 << 30
#: Sanity bounds on what one golden file holds, checked from the headers.
MAX_BATCH, MAX_SIDE, MAX_CLASSES, MAX_INPUTS = 4096, 4096, 1_000_000, 1000
MAX_META_BYTES = 4 << 20


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


def _meta(text: str, path: Path) -> dict[str, Any]:
    try:
        meta = json.loads(text)
    except RecursionError:  # a JSON nested thousands deep
        raise CheckpointError(f"{path}: golden metadata is nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: golden metadata is not JSON: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a codenn golden file (format "
                              f"{meta.get('format') if isinstance(meta, dict) else None!r})")
    if meta.get("version") != VERSION:
        raise CheckpointError(f"{path}: golden file version {meta.get('version')!r}; this "
                              f"codenn reads version {VERSION}")
    bad = [key for key, ok in _META_TYPES.items() if not ok(meta.get(key))]
    if bad:
        raise CheckpointError(f"{path}: malformed golden metadata: {', '.join(bad)} "
                              f"({', '.join(f'{k}={meta.get(k)!r:.40}' for k in bad)})")
    return meta


def _real(v: Any) -> bool:
    """A real number, never a bool (``true`` is not a tolerance)."""
    return isinstance(v, int | float) and not isinstance(v, bool)


#: Each metadata entry and what it must be; a missing optional entry is fine.
_META_TYPES: dict[str, Any] = {
    "model": lambda v: isinstance(v, str),
    "labels": lambda v: isinstance(v, list) and bool(v) and len(v) <= MAX_INPUTS
    and all(isinstance(s, str) for s in v),
    "rtol": lambda v: _real(v) and math.isfinite(v) and v > 0,
    "seed": lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool)),
    "options": lambda v: v is None or (isinstance(v, dict) and all(
        isinstance(x, bool | int | float | str) for x in v.values())),
    "environment": lambda v: v is None or isinstance(v, dict),
    "input_layout": lambda v: v in (None, INPUT_LAYOUT),
}


def _check_headers(found: dict[str, npyfile.NpyHeader], n: int, path: Path) -> None:
    """Every member's dtype and shape, against each other and a sane size, from the
    headers alone (before anything is inflated)."""
    expect = {"meta": ("U", 0), **{f"{kind}_{k}": (dt, nd) for k in range(n)
                                   for kind, dt, nd in _ARRAYS}}
    for key, (kind, ndim) in expect.items():
        h = found.get(key)
        if h is None:
            raise CheckpointError(f"{path}: golden file lacks {key}")
        dtype_ok = h.dtype.kind == "U" if kind == "U" else h.dtype == np.dtype(kind)
        if not dtype_ok or len(h.shape) != ndim:
            raise CheckpointError(f"{path}: {key} is {h.describe()}, expected "
                                  f"{'text' if kind == 'U' else np.dtype(kind)} with {ndim} "
                                  f"dimensions")
    sizes = {found[f"input_{k}"].shape[1:] for k in range(n)}
    for k in range(n):
        x, r, e = (found[f"{kind}_{k}"].shape for kind, _, _ in _ARRAYS)
        if not (1 <= x[0] <= MAX_BATCH and x[1] == 3 and max(x[2:]) <= MAX_SIDE
                and r == e and r[0] == x[0] and 1 <= r[1] <= MAX_CLASSES) or len(sizes) != 1:
            raise CheckpointError(
                f"{path}: inputs and logits in the golden file do not match or are not a "
                f"sane batch (input_{k} {list(x)}, reference_{k} {list(r)}, exact_{k} "
                f"{list(e)}; at most {MAX_BATCH} samples of [3, <={MAX_SIDE}, <={MAX_SIDE}])")
    total = sum(h.nbytes for h in found.values())
    if total > MAX_BYTES:
        raise CheckpointError(f"{path}: golden file claims {total} bytes (limit {MAX_BYTES})")


#: The arrays stored per input: name, dtype, dimensions.
_ARRAYS = (("input", np.float32, 4), ("reference", np.float32, 2), ("exact", np.float64, 2))


def _read_members(zf: zipfile.ZipFile, path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The metadata and the arrays, each member's header checked before it is inflated."""
    found = npyfile.zip_headers(zf)
    if "meta" not in found or found["meta"].dtype.kind != "U" or found["meta"].shape != ():
        raise CheckpointError(f"{path} is not a codenn golden file (no metadata)")
    if found["meta"].nbytes > MAX_META_BYTES:
        raise CheckpointError(f"{path}: golden metadata claims {found['meta'].nbytes} bytes")

    def member(key: str) -> np.ndarray:
        with zf.open(f"{key}.npy") as f:
            return npyfile.read_data(f, npyfile.read_header(f))

    meta = _meta(str(member("meta")), path)
    n = len(meta["labels"])
    _check_headers(found, n, path)
    return meta, {f"{kind}_{k}": member(f"{kind}_{k}") for k in range(n) for kind, _, _ in _ARRAYS}


def load_golden(path: str | os.PathLike[str]) -> Golden:
    """Read and check a golden file; a damaged or foreign file is one CheckpointError.

    Memory is bounded by what the file says it holds: every member's ``.npy`` header (dtype,
    shape) is read and checked first, against the zip directory and against the others.
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"golden file not found: {path}")
    try:
        with zipfile.ZipFile(path) as zf:
            meta, arrays = _read_members(zf, path)
    except zipfile.BadZipFile:
        raise CheckpointError(f"{path} is not a golden file (not an .npz archive)") from None
    except npyfile.NpyError as exc:
        raise CheckpointError(f"{path} is not a readable golden file: {exc}") from None
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
        raise CheckpointError(f"{path} is not a readable golden file: {first}") from None
    n = len(meta["labels"])
    return Golden(model=meta["model"], labels=list(meta["labels"]),
                  inputs=[arrays[f"input_{k}"] for k in range(n)],
                  reference=[arrays[f"reference_{k}"] for k in range(n)],
                  exact=[arrays[f"exact_{k}"] for k in range(n)], rtol=float(meta["rtol"]),
                  options=dict(meta.get("options") or {}), seed=int(meta.get("seed") or 0),
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
        oracle=StoredRunner("float64", xs, [e for _, _, _, e in inputs]), judge=judge,
        use_floor=rtol is None)
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
