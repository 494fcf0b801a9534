"""The comparison engine: every runner on every input, each pair compared as soon as both
outputs are in, failing pairs handed to localisation (Polygraphy's ``Comparator.run`` is the
model). It knows runners and results, not models or files."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from codenn_convert.verification.floor import FLOOR_REFERENCES, floors_of
from codenn_convert.verification.inputs import Batch
from codenn_convert.verification.metrics import (
    apply_floor,
    compare,
    errors_vs_exact,
    farther_side,
)
from codenn_convert.verification.results import ModelResult, PairResult
from codenn_convert.verification.runners import Runner


@dataclass
class Comparison:
    """What :func:`compare_runners` returns: logits and pair results per input."""

    names: list[str]
    outputs: dict[str, list[np.ndarray]]
    exact: list[np.ndarray] | None
    pairs: list[dict[tuple[str, str], PairResult]]
    #: The pairs compared, ``(reference, other)``, in report order.
    order: list[tuple[str, str]] = field(default_factory=list)
    #: Per input, the floor reference's float32 distance to float64 (:mod:`.floor`).
    floors: list[float | None] = field(default_factory=list)


Localise = Callable[[Comparison, list[set[tuple[str, str]]]], None]


#: How a pair's outputs are compared: ``judge(a, b, ya, yb)``.
Judge = Callable[[str, str, np.ndarray, np.ndarray], PairResult]


def pair_order(runners: Sequence[Runner]) -> list[tuple[str, str]]:
    """The pairs to compare, ``(earlier, later)``: all float32 ones; a reduced-precision
    runner against its ``reference`` only, or (a user's file) every float32 runner, always
    with the float32 side first as the reference. Two lossy runners are never compared:
    neither is a reference for the other."""
    pairs = []
    for a, b in itertools.combinations(runners, 2):
        if a.precision == "fp32" and b.precision == "fp32":
            pairs.append((a.name, b.name))
            continue
        if a.precision != "fp32" and b.precision != "fp32":
            continue
        ref, lossy = (a, b) if a.precision == "fp32" else (b, a)
        if lossy.reference in (None, ref.name):
            pairs.append((ref.name, lossy.name))
    return pairs


def compare_runners(
    runners: Sequence[Runner], inputs: Sequence[Batch], *, rtol: float,
    oracle: Runner | None = None, wanted: Collection[tuple[str, str]] = (),
    localise: Localise | None = None, localise_failures: bool = True,
    timed: Callable[[str, Callable[[], Any]], Any] | None = None,
    judge: Judge | None = None, use_floor: bool = True,
) -> Comparison:
    """Run every runner on every input and compare the pairs of :func:`pair_order`.

    Pairs are compared (by ``judge``, default: the float32 rule at ``rtol``) as soon as both
    outputs are in, and the failing ones (with ``localise_failures``) and ``wanted`` are
    handed to ``localise`` then: torch vs keras is localised while nothing but the twins is
    in memory, before any export. The ``oracle`` runs first; it is a reference, not a pair
    member.

    Float32 pairs are held to max(rtol, k x the floor reference's own distance to the
    oracle) (:mod:`.floor`); with ``use_floor=False`` (an explicit ``--rtol``) to ``rtol``.
    """
    clock = timed or (lambda _label, fn: fn())
    judge = judge or (lambda a, b, ya, yb: compare(ya, yb, rtol=rtol, names=(a, b)))
    xs = [x for _, x in inputs]
    result = Comparison([r.name for r in runners], {}, None, [{} for _ in xs],
                        pair_order(runners))
    if oracle is not None:
        result.exact = clock(f"run {oracle.name}", lambda: oracle.run(xs))
    for runner in runners:
        if runner.prepare_label:
            clock(runner.prepare_label, runner.prepare)
        result.outputs[runner.name] = clock(f"run {runner.name}", lambda r=runner: r.run(xs))
        if result.exact is not None and runner.name in FLOOR_REFERENCES and not result.floors:
            result.floors = floors_of(result.outputs[runner.name], result.exact)
        ready = [p for p in result.order if p[0] in result.outputs and p[1] in result.outputs
                 and p not in result.pairs[0]]
        for k, found in enumerate(result.pairs):
            for a, b in ready:
                found[(a, b)] = apply_floor(
                    judge(a, b, result.outputs[a][k], result.outputs[b][k]), rtol,
                    result.floors[k] if result.floors and use_floor else None)
        todo = [{p for p in ready if p in wanted or (localise_failures and not found[p].passed)}
                for found in result.pairs]
        if localise is not None and any(todo):
            clock(f"layers ({runner.name})", lambda t=todo: localise(result, t))
    return result


def _timer(model: str, results: Sequence[ModelResult], say: Callable[[str], None]
           ) -> Callable[[str, Callable[[], Any]], Any]:
    """A clock that reports progress and records each stage's seconds in every result."""
    def timed(label: str, fn: Callable[[], Any]) -> Any:
        say(f"{model}: {label}")
        start = time.perf_counter()
        value = fn()
        for r in results:
            r.seconds[label] = round(time.perf_counter() - start, 3)
        return value
    return timed


def fill_results(results: Sequence[ModelResult], found: Comparison) -> None:
    """Pairs, distances to the exact result and the farther side of failing pairs."""
    for k, result in enumerate(results):
        result.pairs = [found.pairs[k][p] for p in found.order]
        if found.floors:
            result.float32_floor = found.floors[k]
        if found.exact is not None:
            result.error_vs_float64 = errors_vs_exact(found.outputs, found.exact, k)
            for p in result.pairs:
                if not p.passed:
                    p.farther = farther_side(p, result.error_vs_float64)
        result.nonfinite_outputs = {name: None for name, ys in found.outputs.items()
                                    if not np.isfinite(ys[k]).all()}
