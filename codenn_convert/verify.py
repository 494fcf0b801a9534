"""Four-runtime parity verification: torch, keras, onnx-torch, onnx-keras.

The verifier returns data (:class:`ModelResult`); :mod:`codenn_convert.report` formats it.
Every runtime sees the same seeded NCHW batch (Keras gets it transposed to NHWC, never
reshaped). Each runtime's model is freed before the next one is built, so peak memory stays
near one model's footprint rather than four.
"""

from __future__ import annotations

import gc
import itertools
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from codenn_convert.errors import UsageError

RUNTIMES: tuple[str, ...] = ("torch", "keras", "onnx-torch", "onnx-keras")


@dataclass
class LayerError:
    """Relative error of one mapped layer's output (torch module path)."""

    name: str
    max_rel: float


@dataclass
class PairResult:
    """Comparison of runtime ``b`` against reference runtime ``a``."""

    a: str
    b: str
    max_abs: float
    max_rel: float
    cosine: float
    top1: float
    top5: float
    passed: bool
    nonfinite_match: bool = True
    first_divergent_layer: str | None = None
    layers: list[LayerError] = field(default_factory=list)


@dataclass
class ModelResult:
    """All pairs for one model and one input batch."""

    model: str
    input_shape: list[int]
    seed: int
    rtol: float
    inputs: str = "normal(0,1)"
    pairs: list[PairResult] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    error: str | None = None

    @property
    def passed(self) -> bool:
        return self.error is None and bool(self.pairs) and all(p.passed for p in self.pairs)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


def _topk_agreement(a: np.ndarray, b: np.ndarray, k: int) -> float:
    """Fraction of samples whose top-k class *sets* agree (order within the set ignored)."""
    k = min(k, a.shape[-1])
    ta = np.argsort(-a, axis=-1, kind="stable")[:, :k]
    tb = np.argsort(-b, axis=-1, kind="stable")[:, :k]
    same = [set(x) == set(y) for x, y in zip(ta.tolist(), tb.tolist(), strict=True)]
    return float(np.mean(same))


def compare(a: np.ndarray, b: np.ndarray, *, rtol: float, names: tuple[str, str] = ("a", "b")
            ) -> PairResult:
    """Compare ``b`` against reference ``a``.

    NaN/Inf positions must match first; the differences are then taken over finite values.
    ``max_rel`` is ``max|a-b| / max|a|``: relative to the largest reference magnitude, so a
    tiny logit near zero cannot inflate it.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"output shapes differ: {names[0]} {a.shape} vs {names[1]} {b.shape}")
    same_nonfinite = bool(
        np.array_equal(np.isnan(a), np.isnan(b))
        and np.array_equal(np.isposinf(a), np.isposinf(b))
        and np.array_equal(np.isneginf(a), np.isneginf(b))
    )
    finite = np.isfinite(a) & np.isfinite(b)
    fa, fb = a[finite], b[finite]
    max_abs = float(np.max(np.abs(fa - fb))) if fa.size else 0.0
    scale = float(np.max(np.abs(fa))) if fa.size else 0.0
    max_rel = max_abs / scale if scale > 0 else max_abs
    denom = float(np.linalg.norm(fa) * np.linalg.norm(fb))
    cosine = float(np.dot(fa, fb) / denom) if denom > 0 else float(np.array_equal(fa, fb))
    a2, b2 = a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)
    if not same_nonfinite:
        max_abs = max_rel = float("inf")
    return PairResult(
        a=names[0], b=names[1], max_abs=max_abs, max_rel=max_rel, cosine=cosine,
        top1=_topk_agreement(a2, b2, 1), top5=_topk_agreement(a2, b2, 5),
        passed=same_nonfinite and max_rel <= rtol, nonfinite_match=same_nonfinite,
    )


def seeded_batch(batch: int, input_size: tuple[int, int], seed: int) -> np.ndarray:
    """The verifier's NCHW float32 N(0,1) batch."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((batch, 3, *input_size), dtype=np.float32)


def _run_onnx(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    # Full graph optimisation can fuse ops into different float orderings; ours compares
    # the exported graphs as written, with only exact-preserving basic rewrites.
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    layout_nhwc = sess.get_inputs()[0].shape[-1] == 3
    feed = x.transpose(0, 2, 3, 1) if layout_nhwc else x
    out = sess.run(None, {sess.get_inputs()[0].name: np.ascontiguousarray(feed)})[0]
    return np.asarray(out)


def verify(
    model: str,
    *,
    weights: str | os.PathLike[str] | None = None,
    batch: int = 2,
    seed: int = 0,
    input_size: tuple[int, int] | None = None,
    runtimes: Sequence[str] = RUNTIMES,
    work_dir: str | os.PathLike[str] | None = None,
    rtol: float | None = None,
    progress: Callable[[str], None] | None = None,
) -> ModelResult:
    """Run one seeded batch through every runtime in ``runtimes`` and compare all pairs.

    ``weights`` is a torch- or Keras-layout checkpoint; without it, seeded realistic random
    weights are used. ONNX files are written to ``work_dir`` (a temporary directory if
    ``None``). Raises :class:`UsageError` for bad arguments; runtime failures propagate.
    """
    from codenn_convert import mapper, twins
    from codenn_convert.export import export_keras_model, export_torch_onnx
    from codenn_convert.init import realistic_state
    from codenn_convert.registry import get_spec

    spec = get_spec(model)
    size = twins.default_input_size(model, input_size)
    unknown = [r for r in runtimes if r not in RUNTIMES]
    if unknown or len(runtimes) < 2:
        raise UsageError(f"runtimes must be two or more of {', '.join(RUNTIMES)}")
    if batch < 1:
        raise UsageError("batch must be at least 1")
    tol = spec.rtol if rtol is None else rtol
    say = progress or (lambda _msg: None)
    x = seeded_batch(batch, size, seed)
    result = ModelResult(model=model, input_shape=list(x.shape), seed=seed, rtol=tol)
    outputs: dict[str, np.ndarray] = {}

    def timed(label: str, fn: Callable[[], Any]) -> Any:
        say(f"{model}: {label}")
        start = time.perf_counter()
        value = fn()
        result.seconds[label] = round(time.perf_counter() - start, 3)
        return value

    with tempfile.TemporaryDirectory(prefix="codenn-") as tmp:
        out_dir = Path(work_dir) if work_dir else Path(tmp)
        out_dir.mkdir(parents=True, exist_ok=True)
        torch_onnx, keras_onnx = out_dir / f"{model}.torch.onnx", out_dir / f"{model}.keras.onnx"

        keras_model = timed("build keras", lambda: twins.get_model(model, "keras", input_size=size))
        state = timed("weights", lambda: (
            twins.load_state(model, weights, keras_model=keras_model)
            if weights is not None else realistic_state(model, seed)))

        if {"torch", "onnx-torch"} & set(runtimes):
            import torch

            tmodel = twins.torch_twin(model, state)
            if "torch" in runtimes:
                with torch.no_grad():
                    outputs["torch"] = timed(
                        "run torch", lambda: tmodel(torch.from_numpy(x)).numpy())
            if "onnx-torch" in runtimes:
                timed("export torch", lambda: export_torch_onnx(tmodel, torch_onnx,
                                                                input_size=size))
            del tmodel
            gc.collect()

        if {"keras", "onnx-keras"} & set(runtimes):
            kw, _ = mapper.torch_to_keras(state, mapper.plan_keras_model(keras_model), model)
            mapper.set_keras_weights(keras_model, kw)
            del kw
            view = twins.inference_view(keras_model)
            if "keras" in runtimes:
                outputs["keras"] = timed("run keras", lambda: np.asarray(
                    view(x.transpose(0, 2, 3, 1), training=False)))
            if "onnx-keras" in runtimes:
                timed("export keras", lambda: export_keras_model(keras_model, keras_onnx))
        del keras_model, state
        gc.collect()

        for name, path in (("onnx-torch", torch_onnx), ("onnx-keras", keras_onnx)):
            if name in runtimes:
                outputs[name] = timed(f"run {name}", lambda p=path: _run_onnx(p, x))

    for a, b in itertools.combinations([r for r in RUNTIMES if r in runtimes], 2):
        result.pairs.append(compare(outputs[a], outputs[b], rtol=tol, names=(a, b)))
    return result
