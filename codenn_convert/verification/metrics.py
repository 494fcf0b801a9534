"""Comparison of two runtimes' logits: the numbers every report form shows.

Pure numpy, so ``codenn check`` can use it without torch or TensorFlow.

NaN and Inf are never agreement: a non-finite value in either output fails the pair, even
when both sides are NaN at the same positions. Differences are taken over the positions
where both are finite; cosine and top-k agreement are ``None`` when a non-finite value
makes them meaningless (masking it out could show a perfect 1.0 for a broken output).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from codenn_convert.errors import UsageError
from codenn_convert.verification.floor import degenerate, effective_rtol, farther
from codenn_convert.verification.measures import cosine, error_vs_exact, topk_agreement
from codenn_convert.verification.results import PairResult, histogram


class OutputShapeError(UsageError, ValueError):
    """Two runtimes gave logits of different shapes (e.g. a file for another model)."""


def _same_nonfinite(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.array_equal(np.isnan(a), np.isnan(b))
                and np.array_equal(np.isposinf(a), np.isposinf(b))
                and np.array_equal(np.isneginf(a), np.isneginf(b)))


def compare(a: np.ndarray, b: np.ndarray, *, rtol: float, names: tuple[str, str] = ("a", "b")
            ) -> PairResult:
    """Compare ``b`` against reference ``a``.

    ``max_rel`` is ``max|a-b| / max|a|`` over finite positions: relative to the largest
    reference magnitude, so a tiny logit near zero cannot inflate it. NaN/Inf at different
    positions make it infinite; any NaN/Inf at all fails the pair.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise OutputShapeError(f"output shapes differ: {names[0]} {a.shape} vs {names[1]} "
                               f"{b.shape}")
    fin_a, fin_b = np.isfinite(a), np.isfinite(b)
    nonfinite = [n for n, fin in zip(names, (fin_a, fin_b), strict=True) if not fin.all()]
    both = fin_a & fin_b
    diff = np.abs(a[both] - b[both])
    scale = float(np.max(np.abs(a[both]))) if diff.size else 0.0
    rel = diff / scale if scale > 0 else diff
    max_abs = float(diff.max()) if diff.size else None
    max_rel = float(rel.max()) if rel.size else None
    match = _same_nonfinite(a, b)
    if not match:
        max_abs = max_rel = float("inf")
    a2, b2 = a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)
    honest = not nonfinite  # a masked cosine or top-k would flatter a broken output
    flat = [n for n, y in zip(names, (a, b), strict=True) if degenerate(y)]
    return PairResult(
        a=names[0], b=names[1], max_abs=max_abs, max_rel=max_rel,
        cosine=cosine(a, b) if honest else None,
        top1=topk_agreement(a2, b2, 1) if honest else None,
        top5=topk_agreement(a2, b2, 5) if honest else None,
        passed=honest and not flat and max_rel is not None and max_rel <= rtol,
        nonfinite_match=match, nonfinite=nonfinite, histogram=histogram(rel), degenerate=flat,
        tolerance=rtol,
        p99_rel=float(np.quantile(rel, 0.99)) if rel.size else None,
    )


def errors_vs_exact(outputs: dict[str, Sequence[np.ndarray]], exact: Sequence[np.ndarray],
                    k: int) -> dict[str, float | None]:
    """Every runtime's distance to the float64 result on input ``k``."""
    return {name: error_vs_exact(ys[k], exact[k]) for name, ys in outputs.items()}


def farther_side(pair: PairResult, distance: dict[str, float | None]) -> str | None:
    """The runtime of a pair clearly farther from the exact result (None if either is
    unknown or the two are within :data:`.floor.FARTHER_RATIO`)."""
    return farther(pair.a, pair.b, distance)


def apply_floor(pair: PairResult, rtol: float, floor: float | None) -> PairResult:
    """Judge a float32 pair at max(rtol, k x floor) (:func:`.floor.effective_rtol`); lossy
    pairs keep their own criteria."""
    if pair.lossy is not None:
        return pair
    pair.tolerance = effective_rtol(rtol, floor)
    pair.passed = (not pair.nonfinite and not pair.degenerate and pair.max_rel is not None
                   and pair.max_rel <= pair.tolerance)
    return pair
