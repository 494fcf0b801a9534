"""The verifier's result model: one :class:`ModelResult` per model and input, holding a
:class:`PairResult` per runtime pair (and a :class:`LossyResult` for a reduced-precision
pair). Reports are renderings of these (:mod:`codenn_convert.report`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from codenn_convert.verification.floor import FLOOR_FACTOR
from codenn_convert.verification.inputs import NORMAL_INPUTS
from codenn_convert.verification.layers import LAYER_RTOL, LayerError

#: Upper edges of the decade bins of ``|a - b| / max|a|``; a last, open bin holds >= 1.
HIST_EDGES: tuple[float, ...] = tuple(float(f"1e{k}") for k in range(-10, 1))


@dataclass
class PairResult:
    """Comparison of runtime ``b`` against reference runtime ``a``."""

    a: str
    b: str
    max_abs: float | None
    max_rel: float | None
    cosine: float | None
    top1: float | None
    top5: float | None
    passed: bool
    nonfinite_match: bool = True
    first_divergent_layer: str | None = None
    layers: list[LayerError] = field(default_factory=list)
    #: Runtimes of this pair whose outputs hold NaN or Inf.
    nonfinite: list[str] = field(default_factory=list)
    #: Counts of ``|a - b| / max|a|`` per bin; ``edges`` has one more entry than ``counts``.
    histogram: dict[str, list[float]] = field(default_factory=lambda: histogram(np.empty(0)))
    p99_rel: float | None = None
    #: For a failing pair: the side farther from the float64 result (None if unknown).
    farther: str | None = None
    #: For a pair with a reduced-precision side: the lossy criteria that judge it.
    lossy: LossyResult | None = None
    #: Runtimes of this pair whose logits are constant for a sample (all zero, say): no
    #: evidence of agreement, so the pair fails (:func:`.floor.degenerate`).
    degenerate: list[str] = field(default_factory=list)
    #: The tolerance this float32 pair was judged at: max(rtol, k x the checkpoint's float32
    #: floor) (:mod:`.floor`); None for lossy pairs (judged by their floors).
    tolerance: float | None = None


@dataclass
class LossyResult:
    """A lossy pair judged by lossy criteria (``passed``), ``b`` the fp16/int8 side; a
    mapped layer below ``layer_min_sqnr_db`` fails it too (set by the per-layer comparison).

    ``precision_lost_at`` is the mapped layer where the per-layer SQNR falls most from the
    layer before it (filled in by the per-layer comparison), ``sqnr_drop_db`` that fall.
    """

    precision: str
    sqnr_db: float
    cosine: float
    top1: float
    top5: float
    finite: bool
    thresholds: dict[str, float]
    passed: bool
    #: Per-layer SQNR floor: a layer below it is divergent (a fault, not rounding).
    layer_min_sqnr_db: float
    precision_lost_at: str | None = None
    sqnr_drop_db: float | None = None


def histogram(rel: np.ndarray) -> dict[str, list[float]]:
    """Decade-bin counts of relative errors: [0, 1e-10), [1e-10, 1e-9), ..., [1, inf]."""
    idx = np.searchsorted(np.asarray(HIST_EDGES), rel, side="right")
    counts = np.bincount(idx, minlength=len(HIST_EDGES) + 1)
    return {"edges": [0.0, *HIST_EDGES, float("inf")], "counts": [int(c) for c in counts]}


@dataclass
class ModelResult:
    """All pairs for one model and one input batch."""

    model: str
    input_shape: list[int]
    seed: int
    rtol: float
    inputs: str = NORMAL_INPUTS
    pairs: list[PairResult] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    layer_rtol: float = LAYER_RTOL
    options: dict[str, Any] = field(default_factory=dict)
    #: ``max|x - exact| / max|exact|`` per runtime, ``exact`` the float64 torch run.
    error_vs_float64: dict[str, float | None] = field(default_factory=dict)
    #: The checkpoint's float32 floor: the reference's (torch, golden) own distance to
    #: float64; float32 pairs pass at max(rtol, floor_factor x floor) (:mod:`.floor`).
    float32_floor: float | None = None
    floor_factor: float = FLOOR_FACTOR
    #: Runtimes whose logits hold NaN/Inf -> the first layer whose output does (if found).
    nonfinite_outputs: dict[str, str | None] = field(default_factory=dict)
    #: Checkpoint tensors holding NaN/Inf: ``{"tensor": key, "count": values}``.
    nonfinite_weights: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # steps taken reading the checkpoints

    @property
    def passed(self) -> bool:
        return (self.error is None and bool(self.pairs) and all(p.passed for p in self.pairs)
                and not self.nonfinite_outputs and not self.nonfinite_weights)

    @property
    def reason(self) -> str | None:
        """Why the entry failed, in one line (None when it passed)."""
        if self.passed:
            return None
        parts = [self.error] if self.error else []
        if self.nonfinite_weights:
            parts.append("non-finite weights: " + ", ".join(
                f"{w['tensor']} ({w['count']})" for w in self.nonfinite_weights[:3]))
        if self.nonfinite_outputs:
            parts.append("non-finite outputs in " + ", ".join(
                name + (f" (from {layer})" if layer else "")
                for name, layer in self.nonfinite_outputs.items()))
        flat = sorted({n for p in self.pairs for n in p.degenerate})
        if flat:
            parts.append("constant (degenerate) logits in " + ", ".join(flat)
                         + ": no evidence of agreement")
        failed = [f"{p.a} vs {p.b}" for p in self.pairs if not p.passed]
        if failed and not self.nonfinite_outputs:
            parts.append("failing pairs: " + ", ".join(failed))
        return "; ".join(parts) or "no pairs compared"

    def to_dict(self) -> dict[str, Any]:
        data = {**asdict(self), "passed": self.passed, "reason": self.reason}
        for pair in data["pairs"]:  # float32 layers keep their one number
            for layer in pair["layers"]:
                if layer.get("sqnr_db") is None:
                    layer.pop("sqnr_db", None)
        return data
