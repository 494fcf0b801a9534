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
DEFAULT_THRESHOLDS: dict[str, LossyThresholds] = {
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
