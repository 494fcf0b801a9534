"""The numbers every comparison is made of, one home each: SQNR, cosine similarity and
top-k overlap. Pure numpy; no verifier types."""

from __future__ import annotations

import math

import numpy as np


def topk_overlap(a: np.ndarray, b: np.ndarray, k: int) -> list[float]:
    """Per sample of ``[N, classes]`` outputs: the fraction of ``a``'s top-k classes that are
    among ``b``'s top k (order within the set ignored; ``k`` capped at the class count).

    The one top-k: the float32 pairs report the share of samples whose sets agree (overlap
    1), the lossy pairs the mean overlap.
    """
    k = min(k, a.shape[-1])
    ta = np.argsort(-a, axis=-1, kind="stable")[:, :k]
    tb = np.argsort(-b, axis=-1, kind="stable")[:, :k]
    return [len(set(x) & set(y)) / k for x, y in zip(ta.tolist(), tb.tolist(), strict=True)]


def topk_agreement(a: np.ndarray, b: np.ndarray, k: int) -> float:
    """Fraction of samples whose top-k class *sets* agree."""
    return float(np.mean([o == 1.0 for o in topk_overlap(a, b, k)]))


def cosine(a: np.ndarray, b: np.ndarray) -> float | None:
    """Cosine similarity of the flattened arrays; None when either is all zeros."""
    denom = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(np.dot(a.ravel(), b.ravel()) / denom) if denom > 0 else None


def sqnr_db(a: np.ndarray, b: np.ndarray) -> float:
    """10·log10(Σa² / Σ(a − b)²) in float64; inf when ``b == a``."""
    a = np.asarray(a, np.float64)
    noise = float(np.sum((a - np.asarray(b, np.float64)) ** 2))
    signal = float(np.sum(a**2))
    if noise == 0.0:
        return math.inf
    return 10.0 * math.log10(signal / noise) if signal > 0 else -math.inf


def error_vs_exact(x: np.ndarray, exact: np.ndarray) -> float | None:
    """``max|x - exact| / max|exact|``; inf if ``x`` has NaN/Inf, None if ``exact`` has."""
    x, exact = np.asarray(x, np.float64), np.asarray(exact, np.float64)
    if not np.isfinite(exact).all():
        return None
    if not np.isfinite(x).all():
        return float("inf")
    scale = float(np.max(np.abs(exact))) if exact.size else 0.0
    diff = float(np.max(np.abs(x - exact))) if exact.size else 0.0
    return diff / scale if scale > 0 else diff
