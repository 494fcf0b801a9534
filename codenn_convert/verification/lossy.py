"""Reduced-precision (fp16, int8) outputs judged against their float32 reference: SQNR,
cosine, top-1 agreement and top-5 overlap, against floors per precision.

fp16 and int8 are lossy by design, so the 1e-5 float32 rule does not apply to them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from codenn_convert.errors import UsageError
from codenn_convert.export.precision import PRECISION_MODES, LossyThresholds
from codenn_convert.verification.layers import LAYER_SQNR_MARGIN_DB
from codenn_convert.verification.measures import cosine, sqnr_db, topk_overlap
from codenn_convert.verification.metrics import compare
from codenn_convert.verification.results import LossyResult, PairResult


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




def lossy_metrics(a: np.ndarray, b: np.ndarray) -> LossyMetrics:
    """Compare output ``b`` with reference ``a`` (both ``[N, ...]``; logits ``[N, classes]``)."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"output shapes differ: {a.shape} vs {b.shape}")
    finite_mask = np.isfinite(a) & np.isfinite(b)
    finite = bool(finite_mask.all())
    fa, fb = a[finite_mask], b[finite_mask]
    cos = cosine(fa, fb)
    # Non-finite positions would poison the sums and arg-sorts: zero them on both sides.
    a2 = np.where(finite_mask, a, 0.0).reshape(a.shape[0], -1)
    b2 = np.where(finite_mask, b, 0.0).reshape(b.shape[0], -1)
    return LossyMetrics(
        sqnr_db=sqnr_db(fa, fb) if fa.size else -math.inf,
        cosine=cos if cos is not None else float(np.array_equal(fa, fb)),
        top1=float(np.mean(topk_overlap(a2, b2, 1))), top5=float(np.mean(topk_overlap(a2, b2, 5))),
        finite=finite,
    )


#: Each reduced precision's floors (the thresholds of its row in
#: :data:`codenn_convert.export.precision.PRECISION_MODES`, where they are measured).
DEFAULT_THRESHOLDS: dict[str, LossyThresholds] = {
    name: mode.thresholds for name, mode in PRECISION_MODES.items() if mode.thresholds}


def check_thresholds(overrides: Mapping[str, float]) -> None:
    """Overrides of :data:`DEFAULT_THRESHOLDS` must name a field and be finite."""
    known = set(LossyThresholds.__dataclass_fields__)
    for key, value in overrides.items():
        if key not in known or not math.isfinite(value):
            raise UsageError(f"bad lossy threshold {key}={value}")


def floors(precision: str, overrides: Mapping[str, float] | None = None) -> LossyThresholds:
    """The floors a ``precision`` output is judged by: the defaults, with ``overrides``."""
    return replace(DEFAULT_THRESHOLDS[precision], **(overrides or {}))

def compare_lossy(a: np.ndarray, b: np.ndarray, *, precision: str, thresholds: Any,
                  rtol: float, names: tuple[str, str]) -> PairResult:
    """Compare the fp16/int8 output ``b`` against the float32 reference ``a``: the float32
    numbers for information, judged by :class:`LossyResult` against ``thresholds`` (a
    :class:`LossyThresholds`)."""
    result = compare(a, b, rtol=rtol, names=names)
    m = lossy_metrics(a, b)
    result.lossy = LossyResult(precision=precision, sqnr_db=m.sqnr_db, cosine=m.cosine,
                               top1=m.top1, top5=m.top5, finite=m.finite,
                               thresholds=asdict(thresholds), passed=thresholds.passes(m),
                               layer_min_sqnr_db=thresholds.min_sqnr_db - LAYER_SQNR_MARGIN_DB)
    result.passed = result.lossy.passed and not result.degenerate
    result.tolerance = None  # judged by its precision's floors, not a float32 tolerance
    return result


def judge_pair(a: str, b: str, ya: np.ndarray, yb: np.ndarray, *, precision: str, rtol: float,
               overrides: Mapping[str, float] | None = None) -> PairResult:
    """``b`` against the reference ``a``: the float32 rule at ``rtol``, or, for a ``precision``
    of fp16/int8, that precision's floors (with ``overrides``)."""
    if PRECISION_MODES[precision].thresholds is None:  # float32: the rtol rule
        return compare(ya, yb, rtol=rtol, names=(a, b))
    return compare_lossy(ya, yb, precision=precision, thresholds=floors(precision, overrides),
                         rtol=rtol, names=(a, b))
