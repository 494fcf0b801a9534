"""Per-layer numbers: how far one mapped layer's output is from its reference, and which
layer is the first beyond tolerance (float32) or below its SQNR floor (fp16/int8)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from codenn_convert.verification.measures import sqnr_db

#: Per-layer tolerance on ``max|a-b| / max|a|``, each layer relative to its own largest
#: reference magnitude (the logits' measure, applied per layer).
#:
#: Why 1e-4 and not the logits' 1e-5: float32 rounding differs between runtimes at every op
#: (different summation orders in conv/GEMM kernels), and relative to a layer's *largest*
#: value it grows through depth and is amplified by BatchNorm with small running variances
#: (scale gamma / sqrt(var + eps) up to ~10x here), so clean twins show up to a few 1e-6 on
#: some intermediate layers at 224x224 (measured: AlexNet 1.1e-6, VGG-19 2.5e-6, ResNet-50
#: 4.5e-6, InceptionV3 3.6e-6). The logits' 1e-5 would leave no margin there. Semantic faults
#: are orders of magnitude above 1e-4 at the layer that has them (a 1% weight change, a
#: changed running variance or a one-pixel padding shift gives 1e-3 .. 1), so 1e-4 separates
#: noise from faults by >= 20x on both sides. A pair that fails on its logits but whose
#: layers all stay within 1e-4 reports no first divergent layer (the per-layer list shows
#: where the error grows).
LAYER_RTOL = 1e-4


#: A lossy pair's layers fail below its logits' SQNR floor less this margin (dB).
#:
#: Why: rounding noise is larger inside the network than at the logits, whose pooling and
#: classifier average it out: with seeded realistic weights at full size, the lowest layer
#: SQNR sat 7.6-9.9 dB below the logits' (int8: ResNet-50 29.6 dB logits, 19.7 dB at
#: layer4.2.bn3; InceptionV3 26.0 dB logits, 18.4 dB inside Mixed_7c). A fault is far below
#: any of them: a sign-flipped conv gives about -6 dB at its layer (the error is twice the
#: signal). 12 dB keeps every measured layer of a clean file above its floor.
LAYER_SQNR_MARGIN_DB = 12.0


@dataclass
class LayerError:
    """Relative error of one mapped layer's output (named by its torch module path)."""

    name: str
    max_rel: float
    #: For a lossy pair: 10*log10(sum a^2 / sum (a - b)^2) of this layer's output.
    sqnr_db: float | None = None


def layer_error(ref: np.ndarray, other: np.ndarray) -> float:
    """``max|ref - other| / max|ref|``; inf if shapes differ or either holds NaN/Inf.

    NaN/Inf never agree, not even at the same places (issue 9): a layer past the point
    where a corrupted weight enters is infinitely wrong, never "0.0 over the rest".
    """
    if ref.shape != other.shape:
        return float("inf")
    if not (np.isfinite(ref).all() and np.isfinite(other).all()):
        return float("inf")
    if ref.size == 0:
        return 0.0
    # float32 differences: the rounding of a - b is relative 6e-8 of the difference itself.
    diff = float(np.max(np.abs(ref - other)))
    scale = float(np.max(np.abs(ref)))
    return diff / scale if scale > 0 else diff


def first_divergent(errors: Sequence[LayerError], tol: float) -> str | None:
    """The first layer (in topological order) whose error exceeds ``tol``."""
    return next((e.name for e in errors if not e.max_rel <= tol), None)


def layer_sqnr(ref: np.ndarray, other: np.ndarray) -> float:
    """SQNR of ``other`` against ``ref`` in dB; -inf if shapes differ or either holds NaN/Inf
    (a broken layer is infinitely noisy, never "clean over the rest")."""
    if ref.shape != other.shape or not (np.isfinite(ref).all() and np.isfinite(other).all()):
        return float("-inf")
    return sqnr_db(ref, other)


def first_below(errors: Sequence[LayerError], min_sqnr_db: float) -> str | None:
    """The first layer (in topological order) whose SQNR is below ``min_sqnr_db``."""
    return next((e.name for e in errors
                 if e.sqnr_db is not None and not e.sqnr_db >= min_sqnr_db), None)


def sqnr_drop(errors: Sequence[LayerError]) -> tuple[str | None, float | None]:
    """The layer where SQNR falls most from the layer before it (topological order), and
    the fall in dB: where the precision is lost. The first layer has no layer before it and
    is only named when it is the only one."""
    values = [(e.name, e.sqnr_db) for e in errors if e.sqnr_db is not None]
    if len(values) == 1:
        return values[0][0], None
    best: tuple[str | None, float | None] = (None, None)
    for (_, before), (name, after) in itertools.pairwise(values):
        if not (math.isfinite(before) or math.isfinite(after)):
            continue  # inf -> inf or -inf -> -inf: no measurable fall
        fall = before - after
        if best[1] is None or fall > best[1]:
            best = (name, fall)
    return best
