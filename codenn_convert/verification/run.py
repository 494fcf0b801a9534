"""Parity verification: runners (:mod:`codenn_convert.verification.runners`) on inputs
(:mod:`codenn_convert.verification.inputs`), every pair compared
(:mod:`codenn_convert.verification.metrics`).

The verifier returns data (:class:`ModelResult`); :mod:`codenn_convert.report.render` formats it.
Every runtime sees the same NCHW batches (Keras gets them transposed to NHWC, never
reshaped): the seeded N(0,1) batch, photos, and the user's ``.npy`` batches.

Artifacts users bring join the comparison: ``torch_weights`` feeds the torch side (torch and
onnx-torch), ``keras_weights`` the Keras side (keras and onnx-keras); a missing side is filled
from the other by our mapping. Each given ONNX file is one more runtime, ``onnx:<file name>``.

The torch twin run in float64 with the torch side's weights is the exact reference: every
runtime's distance to it (``error_vs_float64``) tells rounding (all near it) from a fault
(one side far), and a failing pair names its farther side.

Reduced precision (``precisions``, or a given fp16/int8 file, detected from its graph) adds
runners compared with their float32 source (or, a given file, with every float32 runner) and
judged by lossy criteria (:func:`codenn_convert.verification.lossy.compare_lossy`): SQNR,
cosine, top-1 and top-5 overlap against per-precision floors, and per-layer SQNR of every
mapped layer.

When a pair fails, and for the pairs asked for with ``layers``, every mapped layer is compared
(:mod:`codenn_convert.verification.localise`) and the first divergent one is named by its torch
module path; a runtime with NaN/Inf logits gets the first layer whose output is non-finite.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from codenn_convert.checkpoints.atomic import ensure_writable
from codenn_convert.checkpoints.files import nonfinite_tensors
from codenn_convert.checkpoints.sources import read_source
from codenn_convert.errors import CodennError, UsageError
from codenn_convert.export.calibration import load_calibration, synthetic_images
from codenn_convert.export.precision import PRECISION_MODES
from codenn_convert.registry import get_spec
from codenn_convert.twins import build as twins
from codenn_convert.twins.init import realistic_model, torch_state_of
from codenn_convert.verification.engine import (
    Comparison,
    _timer,
    compare_runners,
    fill_results,
    pair_order,
)
from codenn_convert.verification.golden import Golden, save_golden
from codenn_convert.verification.inputs import NORMAL_INPUTS, Batch, collect_inputs, npy_input_size
from codenn_convert.verification.layers import sqnr_drop
from codenn_convert.verification.localise import first_nonfinite_layer, localise
from codenn_convert.verification.lossy import judge_pair
from codenn_convert.verification.matching import mapped_layers
from codenn_convert.verification.options import (
    LOSSY_PRECISIONS,
    PathLike,
    VerifyOptions,
)
from codenn_convert.verification.results import ModelResult, PairResult
from codenn_convert.verification.runners import RUNTIMES as RUNTIME_TABLE
from codenn_convert.verification.runners import (
    OnnxRunner,
    Runner,
    TorchRunner,
    Twins,
    lossy_runner,
    user_onnx_runners,
)

#: ``inputs`` label prefix of the synthetic photo-like batch used when lossy runtimes run.
SYNTHETIC_INPUTS = "synthetic:"
#: The name of the float64 torch run, the exact reference.
ORACLE = "float64"





def _config(config: VerifyOptions | None, fields: Mapping[str, Any]) -> VerifyOptions:
    return replace(config or VerifyOptions(), **fields)


def verify(model: str, config: VerifyOptions | None = None, *,
           progress: Callable[[str], None] | None = None,
           image: PathLike | None = None, **fields: Any) -> ModelResult:
    """Verify ``model`` on one input: the seeded batch, or the photo ``image``.

    ``config`` and/or keyword ``fields`` of :class:`VerifyOptions` say what to verify.
    """
    if image is not None:
        fields = {**fields, "normal": False, "images": (image,)}
    return verify_inputs(model, config, progress=progress, **fields)[0]


def verify_inputs(model: str, config: VerifyOptions | None = None, *,
                  progress: Callable[[str], None] | None = None, **fields: Any
                  ) -> list[ModelResult]:
    """Verify ``model`` on every input source; one :class:`ModelResult` per input, the
    models built and exported once for all of them. Raises :class:`UsageError` for bad
    arguments; runtime failures propagate."""
    return VerifyRun(model, _config(config, fields), progress).run()


def verify_many(models: Sequence[str], config: VerifyOptions | None = None, *,
                progress: Callable[[str], None] | None = None,
                on_result: Callable[[ModelResult], None] | None = None) -> list[ModelResult]:
    """Verify several models; a model that crashes becomes an entry with ``error`` set,
    so one broken model cannot hide the others' results. Usage errors still raise."""
    config = config or VerifyOptions()
    for name in models:
        get_spec(name)  # unknown names fail before any work
    results: list[ModelResult] = []
    for name in models:
        try:
            found = verify_inputs(name, config, progress=progress)
        except CodennError:
            raise
        except Exception as exc:  # noqa: BLE001 - reported in the entry, not swallowed
            spec = get_spec(name)
            size = list(config.input_size or spec.input_size)
            found = [ModelResult(model=name, input_shape=[config.batch, 3, *size],
                                 seed=config.seed, rtol=config.rtol or spec.rtol,
                                 options=dict(config.options),
                                 error=f"{type(exc).__name__}: {exc}"[:300])]
        for r in found:
            if on_result is not None:
                on_result(r)
        results += found
    return results


def _wanted_pairs(layers: bool | Collection[tuple[str, str]], pairs: Sequence[tuple[str, str]]
                  ) -> set[tuple[str, str]]:
    if layers is True:
        return set(pairs)
    if layers is False:
        return set()
    asked = {tuple(p) for p in layers}  # type: ignore[misc]
    # Either order names the pair; results keep the canonical (reference, other) order.
    return {p for p in pairs if p in asked or (p[1], p[0]) in asked}


def _lossy_inputs(inputs: list[Batch], seed: int) -> list[Batch]:
    """The seeded N(0,1) batch replaced by held-out synthetic photo-like images
    (:func:`codenn_convert.export.calibration.synthetic_images`, seed ``seed + 1``; int8 is
    calibrated on seed ``seed``): int8 ranges are calibrated for image-like data, and N(0,1) noise
    overflows them. Photos and ``.npy`` batches stay as given."""
    return [(f"{SYNTHETIC_INPUTS}seed {seed + 1}",
             synthetic_images(len(x), (x.shape[2], x.shape[3]), seed=seed + 1))
            if label == NORMAL_INPUTS else (label, x) for label, x in inputs]


def _sources(c: VerifyOptions) -> tuple[PathLike | None, PathLike | None]:
    """The checkpoints feeding the torch side and the Keras side (None: seeded weights)."""
    if c.weights is not None:
        return c.weights, c.weights
    # A missing side is filled from the other one through the mapping.
    return (c.torch_weights if c.torch_weights is not None else c.keras_weights,
            c.keras_weights if c.keras_weights is not None else c.torch_weights)


def _read_sources(model: str, torch_src: Any, keras_src: Any, options: dict[str, Any]
                  ) -> dict[Any, Any]:
    """Each given checkpoint resolved (filters, precision, inferred options); both sides
    must come out with the same options, since both twins are built with them."""
    sources = {src: read_source(model, src, options)
               for src in dict.fromkeys((torch_src, keras_src)) if src is not None}
    if len({repr(sorted(s.options.items())) for s in sources.values()}) > 1:
        raise UsageError("the torch and Keras checkpoints are of different model options: "
                         + "; ".join(f"{Path(s.path).name}: {s.options}"
                                     for s in sources.values()))
    return sources


def _nonfinite_weights(*states: Mapping[str, np.ndarray]) -> list[dict[str, Any]]:
    found: dict[str, int] = {}
    for state in states:
        found.update(nonfinite_tensors(dict(state)))
    return [{"tensor": k, "count": n} for k, n in found.items()]


class _Localiser:
    """Probes of the runners, built on first use, for layer-wise localisation."""

    def __init__(self, tmodel: Any, kmodel: Any, runners: Sequence[Runner],
                 inputs: Sequence[Batch], say: Callable[[str], None]) -> None:
        self.tmodel, self.kmodel, self.inputs, self.say = tmodel, kmodel, inputs, say
        self.runners = {r.name: r for r in runners}
        self._layers: list[Any] | None = None
        self._probes: dict[str, Any] = {}

    @property
    def layers(self) -> list[Any]:
        if self._layers is None:
            self._layers = mapped_layers(self.kmodel, self.tmodel, self.inputs[0][1])
        return self._layers

    def probe(self, name: str) -> Any:
        if name not in self._probes:
            self.say(f"layers: reading {name}")
            self._probes[name] = self.runners[name].probe(self.layers)
        return self._probes[name]

    def pairs(self, found: Comparison, todo: list[set[tuple[str, str]]]) -> None:
        """Fill ``layers`` and ``first_divergent_layer`` of the pairs in ``todo``."""
        for k, ((_, x), pairs) in enumerate(zip(self.inputs, todo, strict=True)):
            if not pairs:
                continue
            probes = {n: self.probe(n) for p in pairs for n in p}
            floors = {p: lossy.layer_min_sqnr_db for p in pairs
                      for lossy in [found.pairs[k][p].lossy] if lossy is not None}
            for pair, where in localise(probes, sorted(pairs), self.layers, x,
                                        progress=self.say, min_sqnr_db=floors).items():
                result = found.pairs[k][pair]
                result.layers = where.layers
                result.first_divergent_layer = where.first_divergent_layer
                if result.lossy is not None:
                    result.lossy.precision_lost_at, result.lossy.sqnr_drop_db = sqnr_drop(
                        where.layers)
                    # A layer below its floor is a fault, even where the logits hide it
                    # (a residual branch's sign-flipped conv can leave them near the floor).
                    if where.first_divergent_layer is not None:
                        result.lossy.passed = result.passed = False

    def nonfinite(self, results: Sequence[ModelResult]) -> None:
        """Name, per runtime with NaN/Inf logits, the first layer whose output has them."""
        for result, (_, x) in zip(results, self.inputs, strict=True):
            for name in result.nonfinite_outputs:
                probe = self.probe(name)
                result.nonfinite_outputs[name] = (
                    None if probe is None else first_nonfinite_layer(probe, self.layers, x))


class VerifyRun:
    """One model verified on every input: twins, runners, comparison, golden file."""

    def __init__(self, model: str, config: VerifyOptions,
                 progress: Callable[[str], None] | None) -> None:
        config.check()
        spec = get_spec(model)
        self.model, self.config, self.say = model, config, progress or (lambda _m: None)
        self.size = twins.default_input_size(
            model, npy_input_size(config.inputs, config.input_size))
        # Given files are opened before any model work: a bad one costs nothing.
        self.user = user_onnx_runners(config.onnx, self.size)
        if config.save_golden is not None:
            ensure_writable(config.save_golden)
        self.inputs = collect_inputs(normal=config.normal, batch=config.batch,
                                     seed=config.seed, size=self.size, images=config.images,
                                     npy=config.inputs)
        if config.precisions or any(r.precision != "fp32" for r in self.user):
            self.inputs = _lossy_inputs(self.inputs, config.seed)
        self.tol = spec.rtol if config.rtol is None else config.rtol
        self.results = [ModelResult(model=model, input_shape=list(x.shape), seed=config.seed,
                                    rtol=self.tol, inputs=label, options=dict(config.options))
                        for label, x in self.inputs]
        self.timed = _timer(model, self.results, self.say)
        self.options: dict[str, Any] = dict(config.options)  # resolved by twins()
        self.precision_of: dict[str, str] = {}  # runtime -> fp32/fp16/int8, set by run()

    def twins(self) -> tuple[Any, Any]:
        """Both twins built, with their sides' weights (non-finite ones recorded)."""
        torch_src, keras_src = _sources(self.config)
        # Checkpoints may determine options (num_classes, aux_logits): read them first.
        sources = _read_sources(self.model, torch_src, keras_src, dict(self.config.options))
        opts = next(iter(sources.values())).options if sources else dict(self.config.options)
        self.options = dict(opts)
        for r in self.results:
            r.options, r.notes = dict(opts), [n for src in sources.values() for n in src.notes]
        kmodel = self.timed("build keras", lambda: twins.get_model(
            self.model, "keras", input_size=self.size, **opts))
        if torch_src is None:
            # The realistic init already builds and calibrates the torch twin: use it.
            tmodel = self.timed("weights", lambda: realistic_model(
                self.model, self.config.seed, **opts))
            torch_state = torch_state_of(tmodel)
        else:
            torch_state = self.timed("weights", lambda: twins.state_from_source(
                self.model, sources[torch_src], kmodel))
            tmodel = twins.torch_twin(self.model, torch_state, **opts)
        keras_state = torch_state if keras_src == torch_src else self.timed(
            "keras weights", lambda: twins.state_from_source(
                self.model, sources[keras_src], kmodel))
        bad = _nonfinite_weights(torch_state, keras_state)
        for r in self.results:
            r.nonfinite_weights = bad
        twins.set_torch_state(kmodel, keras_state, self.model)
        return tmodel, kmodel

    def runners(self, tmodel: Any, kmodel: Any, out_dir: Path) -> list[Runner]:
        """Our runtimes that were asked for, in order, then the given ONNX files."""
        built = Twins(self.model, tmodel, kmodel, self.size, out_dir)
        ours = [RUNTIME_TABLE[name](built) for name in RUNTIME_TABLE
                if name in self.config.runtimes]
        return ours + self.lossy_runners(ours) + list(self.user)

    def lossy_runners(self, ours: Sequence[Runner]) -> list[Runner]:
        """Each of our ONNX runtimes converted to each asked-for reduced precision."""
        calibration = (load_calibration(None, self.size, seed=self.config.seed)
                       if any(PRECISION_MODES[p].needs_calibration for p in self.config.precisions)
                       else None)
        return [lossy_runner(r, p, calibration) for r in ours if isinstance(r, OnnxRunner)
                for p in LOSSY_PRECISIONS if p in self.config.precisions]

    def judge(self, a: str, b: str, ya: np.ndarray, yb: np.ndarray) -> PairResult:
        """The float32 rule, or for a reduced-precision ``b`` the lossy criteria."""
        return judge_pair(a, b, ya, yb, precision=self.precision_of.get(b, "fp32"),
                          rtol=self.tol, overrides=self.config.thresholds)

    def run(self) -> list[ModelResult]:
        with tempfile.TemporaryDirectory(prefix="codenn-") as tmp:
            out_dir = Path(self.config.work_dir or tmp)
            out_dir.mkdir(parents=True, exist_ok=True)
            tmodel, kmodel = self.twins()
            runners = self.runners(tmodel, kmodel, out_dir)
            self.precision_of = {r.name: r.precision for r in runners}
            loc = _Localiser(tmodel, kmodel, runners, self.inputs, self.say)
            order = pair_order(runners)
            # Lossy pairs always get their per-layer SQNR: where the precision is lost.
            lossy = {p for p in order if self.precision_of[p[1]] != "fp32"}
            found = compare_runners(
                runners, self.inputs, rtol=self.tol,
                oracle=TorchRunner(tmodel, name=ORACLE, float64=True),
                wanted=_wanted_pairs(self.config.layers, order) | lossy,
                localise=loc.pairs, localise_failures=self.config.localise_failures,
                timed=self.timed, judge=self.judge)
            fill_results(self.results, found)
            if any(r.nonfinite_outputs for r in self.results):
                self.timed("layers (non-finite)", lambda: loc.nonfinite(self.results))
            # A failed run is no reference: its golden file would bless the fault.
            if self.config.save_golden is not None and all(r.passed for r in self.results):
                self.save_golden(found)
        return self.results

    def save_golden(self, found: Comparison) -> None:
        assert found.exact is not None  # the oracle always runs in verify
        save_golden(self.config.save_golden, Golden(  # type: ignore[arg-type]
            model=self.model, labels=[label for label, _ in self.inputs],
            inputs=[x for _, x in self.inputs], reference=found.outputs["torch"],
            exact=found.exact, rtol=self.tol, options=dict(self.options),
            seed=self.config.seed))
