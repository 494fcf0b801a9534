"""Four-runtime parity verification: torch, keras, onnx-torch, onnx-keras (+ user ONNX files).

The verifier returns data (:class:`ModelResult`); :mod:`codenn_convert.report` formats it.
Every runtime sees the same NCHW batch (Keras gets it transposed to NHWC, never reshaped):
a seeded N(0,1) batch, and optionally real photos (:mod:`codenn_convert.images`).

Artifacts users bring join the comparison: ``torch_weights`` feeds the torch side (torch and
onnx-torch), ``keras_weights`` the Keras side (keras and onnx-keras); a missing side is filled
from the other by our mapping. Each given ONNX file is one more runtime, ``onnx:<file name>``
(it is not taken to replace onnx-torch or onnx-keras: who produced a file is a guess, and our
own exports stay checked).

When a pair fails, and for the pairs asked for with ``layers``, every mapped layer is compared
(:mod:`codenn_convert.localise`) and the first divergent one is named by its torch module path.
"""

from __future__ import annotations

import gc
import itertools
import os
import tempfile
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from codenn_convert.errors import CheckpointError, UsageError
from codenn_convert.localise import LAYER_RTOL, LayerError, onnx_input_layout

__all__ = ["RUNTIMES", "LayerError", "ModelResult", "PairResult", "compare", "seeded_batch",
           "verify", "verify_inputs"]

RUNTIMES: tuple[str, ...] = ("torch", "keras", "onnx-torch", "onnx-keras")
#: Runtime name prefix of a user-given ONNX file: ``onnx:<file name>``.
ONNX_FILE_PREFIX = "onnx:"
#: The ``inputs`` label of the seeded batch; photos are ``image:<file name>``.
NORMAL_INPUTS = "normal(0,1)"


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
    inputs: str = NORMAL_INPUTS
    pairs: list[PairResult] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    layer_rtol: float = LAYER_RTOL
    options: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # steps taken reading the checkpoints

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



def _onnx_runtime_names(files: Sequence[str | os.PathLike[str]]) -> dict[str, Path]:
    """``{"onnx:<file name>": path}`` for user-given ONNX files (names must be unique)."""
    named: dict[str, Path] = {}
    for f in files:
        path = Path(f)
        if not path.is_file():
            raise UsageError(f"ONNX file not found: {path}")
        name = ONNX_FILE_PREFIX + path.name
        if name in named:
            raise UsageError(f"two ONNX files are named {path.name}; their runtimes would "
                             f"share the name {name}")
        named[name] = path
    return named


def _run_onnx(path: Path, batches: Sequence[np.ndarray], input_size: tuple[int, int]
              ) -> list[np.ndarray]:
    """The first output of ``path`` on each NCHW batch (fed as NHWC if the graph takes it)."""
    from codenn_convert.localise import onnx_session, run_onnx

    try:
        sess = onnx_session(path)
    except Exception as exc:  # noqa: BLE001 - ORT raises its own types for a bad file
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CheckpointError(f"{path} is not a loadable ONNX model: {first_line[:200]}"
                              ) from None
    layout = onnx_input_layout(sess.get_inputs()[0].shape, input_size)
    first = [sess.get_outputs()[0].name]
    return [run_onnx(sess, first, x, layout)[0] for x in batches]


def _sources(
    weights: str | os.PathLike[str] | None,
    torch_weights: str | os.PathLike[str] | None,
    keras_weights: str | os.PathLike[str] | None,
) -> tuple[str | os.PathLike[str] | None, str | os.PathLike[str] | None]:
    """The checkpoints feeding the torch side and the Keras side (None: seeded weights)."""
    if weights is not None and (torch_weights is not None or keras_weights is not None):
        raise UsageError("give --weights (both sides) or --torch-weights/--keras-weights, "
                         "not both")
    if weights is not None:
        return weights, weights
    # A missing side is filled from the other one through the mapping.
    return (torch_weights if torch_weights is not None else keras_weights,
            keras_weights if keras_weights is not None else torch_weights)


def _wanted_pairs(layers: bool | Collection[tuple[str, str]], pairs: Sequence[tuple[str, str]]
                  ) -> set[tuple[str, str]]:
    if layers is True:
        return set(pairs)
    if layers is False:
        return set()
    asked = {tuple(p) for p in layers}  # type: ignore[misc]
    # Either order names the pair; results keep the canonical (reference, other) order.
    return {p for p in pairs if p in asked or (p[1], p[0]) in asked}


def verify(
    model: str,
    *,
    weights: str | os.PathLike[str] | None = None,
    torch_weights: str | os.PathLike[str] | None = None,
    keras_weights: str | os.PathLike[str] | None = None,
    onnx: Sequence[str | os.PathLike[str]] = (),
    batch: int = 2,
    seed: int = 0,
    input_size: tuple[int, int] | None = None,
    runtimes: Sequence[str] = RUNTIMES,
    work_dir: str | os.PathLike[str] | None = None,
    rtol: float | None = None,
    progress: Callable[[str], None] | None = None,
    layers: bool | Collection[tuple[str, str]] = False,
    localise_failures: bool = True,
    image: str | os.PathLike[str] | None = None,
    options: Mapping[str, Any] | None = None,
) -> ModelResult:
    """Run one batch through every runtime and compare all pairs.

    The batch is the seeded N(0,1) one, or the photo ``image`` (one sample, ImageNet
    pre-processing). See :func:`verify_inputs` for the other arguments.
    """
    return verify_inputs(
        model, weights=weights, torch_weights=torch_weights, keras_weights=keras_weights,
        onnx=onnx, batch=batch, seed=seed, input_size=input_size, runtimes=runtimes,
        work_dir=work_dir, rtol=rtol, progress=progress, layers=layers,
        localise_failures=localise_failures, normal=image is None,
        images=() if image is None else (image,), options=options,
    )[0]


def _read_sources(model: str, torch_src: Any, keras_src: Any, options: dict[str, Any]
                  ) -> dict[Any, Any]:
    """Each given checkpoint resolved (filters, precision, inferred options); both sides
    must come out with the same options, since both twins are built with them."""
    from codenn_convert.sources import read_source

    sources = {src: read_source(model, src, options)
               for src in dict.fromkeys((torch_src, keras_src)) if src is not None}
    if len({repr(sorted(s.options.items())) for s in sources.values()}) > 1:
        raise UsageError("the torch and Keras checkpoints are of different model options: "
                         + "; ".join(f"{Path(s.path).name}: {s.options}"
                                     for s in sources.values()))
    return sources


def verify_inputs(
    model: str,
    *,
    weights: str | os.PathLike[str] | None = None,
    torch_weights: str | os.PathLike[str] | None = None,
    keras_weights: str | os.PathLike[str] | None = None,
    onnx: Sequence[str | os.PathLike[str]] = (),
    batch: int = 2,
    seed: int = 0,
    input_size: tuple[int, int] | None = None,
    runtimes: Sequence[str] = RUNTIMES,
    work_dir: str | os.PathLike[str] | None = None,
    rtol: float | None = None,
    progress: Callable[[str], None] | None = None,
    layers: bool | Collection[tuple[str, str]] = False,
    localise_failures: bool = True,
    normal: bool = True,
    images: Sequence[str | os.PathLike[str]] = (),
    options: Mapping[str, Any] | None = None,
) -> list[ModelResult]:
    """Verify ``model`` on the seeded batch (if ``normal``) and on each photo in ``images``.

    Returns one :class:`ModelResult` per input (``inputs`` is ``"normal(0,1)"`` or
    ``"image:<file name>"``); the models are built and exported once for all of them.

    * ``weights``: a checkpoint of either layout for both sides; ``torch_weights`` /
      ``keras_weights``: one per side (the other side is filled from it by the mapping);
      none: seeded realistic random weights.
    * ``onnx``: ONNX files (NCHW or NHWC input) compared as runtimes ``onnx:<file name>``.
    * ``runtimes``: which of our four runtimes to run.
    * ``options``: builder options for both twins (e.g. ``{"transform_input": True}``).
    * ``layers``: compare every mapped layer of all pairs (True) or of the given pairs; with
      ``localise_failures`` every failing pair is localised as well.

    ONNX exports go to ``work_dir`` (a temporary directory if None). Raises
    :class:`UsageError` for bad arguments; runtime failures propagate.
    """
    from codenn_convert import mapper, twins
    from codenn_convert.export import export_keras_model, export_torch_onnx
    from codenn_convert.images import load_image
    from codenn_convert.init import realistic_model, realistic_state, torch_state_of
    from codenn_convert.registry import get_spec

    spec = get_spec(model)
    size = twins.default_input_size(model, input_size)
    unknown = [r for r in runtimes if r not in RUNTIMES]
    user_onnx = _onnx_runtime_names(onnx)
    if unknown or len(runtimes) + len(user_onnx) < 2:
        raise UsageError(f"runtimes must be two or more of {', '.join(RUNTIMES)} and ONNX "
                         f"files")
    if batch < 1:
        raise UsageError("batch must be at least 1")
    if not normal and not images:
        raise UsageError("nothing to verify: no seeded batch and no image")
    torch_src, keras_src = _sources(weights, torch_weights, keras_weights)
    tol = spec.rtol if rtol is None else rtol
    say = progress or (lambda _msg: None)
    inputs: list[tuple[str, np.ndarray]] = []
    if normal:
        inputs.append((NORMAL_INPUTS, seeded_batch(batch, size, seed)))
    inputs += [(f"image:{Path(p).name}", load_image(p, size)) for p in images]
    # Checkpoints may determine options (num_classes, aux_logits): read them before building.
    sources = _read_sources(model, torch_src, keras_src, dict(options or {}))
    opts = next(iter(sources.values())).options if sources else dict(options or {})
    results = [ModelResult(model=model, input_shape=list(x.shape), seed=seed, rtol=tol,
                           inputs=label, options=opts,
                           notes=[n for src in sources.values() for n in src.notes])
               for label, x in inputs]
    outputs: dict[str, list[np.ndarray]] = {}
    order = [r for r in RUNTIMES if r in runtimes] + list(user_onnx)

    def timed(label: str, fn: Callable[[], Any]) -> Any:
        say(f"{model}: {label}")
        start = time.perf_counter()
        value = fn()
        for r in results:
            r.seconds[label] = round(time.perf_counter() - start, 3)
        return value

    with tempfile.TemporaryDirectory(prefix="codenn-") as tmp:
        out_dir = Path(work_dir) if work_dir else Path(tmp)
        out_dir.mkdir(parents=True, exist_ok=True)
        files = {"onnx-torch": out_dir / f"{model}.torch.onnx",
                 "onnx-keras": out_dir / f"{model}.keras.onnx", **user_onnx}

        keras_model = timed("build keras", lambda: twins.get_model(
            model, "keras", input_size=size, **opts))

        def state_of(src: str | os.PathLike[str] | None) -> twins.TorchState:
            if src is None:
                return realistic_state(model, seed, **opts)
            return twins.state_from_source(model, sources[src], keras_model)

        # Both twins stay built to the end: localisation runs them again, layer by layer.
        if torch_src is None:
            # The realistic init already builds and calibrates the torch twin: use it.
            tmodel = timed("weights", lambda: realistic_model(model, seed, **opts))
            torch_state = torch_state_of(tmodel)
        else:
            torch_state = timed("weights", lambda: state_of(torch_src))
            tmodel = twins.torch_twin(model, torch_state, **opts)
        keras_state = torch_state if keras_src == torch_src else timed(
            "keras weights", lambda: state_of(keras_src))
        del torch_state
        kw, _ = mapper.torch_to_keras(keras_state, mapper.plan_keras_model(keras_model), model)
        del keras_state
        mapper.set_keras_weights(keras_model, kw)
        del kw
        gc.collect()

        if "torch" in runtimes:
            import torch

            with torch.no_grad():
                outputs["torch"] = timed("run torch", lambda: [
                    tmodel(torch.from_numpy(x)).numpy() for _, x in inputs])
        if "keras" in runtimes:
            view = twins.inference_view(keras_model)
            outputs["keras"] = timed("run keras", lambda: [
                np.asarray(view(x.transpose(0, 2, 3, 1), training=False)) for _, x in inputs])
        pairs = list(itertools.combinations(order, 2))
        wanted = _wanted_pairs(layers, pairs)
        compared: list[dict[tuple[str, str], PairResult]] = [{} for _ in results]

        def compare_ready(label: str) -> None:
            """Compare the pairs whose outputs are all in; localise those that need it."""
            ready = [p for p in pairs if p[0] in outputs and p[1] in outputs
                     and p not in compared[0]]
            for k, found in enumerate(compared):
                for a, b in ready:
                    found[(a, b)] = compare(outputs[a][k], outputs[b][k], rtol=tol,
                                            names=(a, b))
            todo = [{p for p in ready if p in wanted or (localise_failures and not
                                                         found[p].passed)}
                    for found in compared]
            if any(todo):
                timed(label, lambda: _localise_results(
                    compared, inputs, todo, tmodel, keras_model, files, size, say))

        # torch vs keras first, while nothing but the twins is in memory.
        compare_ready("layers")
        if "onnx-torch" in runtimes:
            timed("export torch", lambda: export_torch_onnx(tmodel, files["onnx-torch"],
                                                            input_size=size))
        if "onnx-keras" in runtimes:
            timed("export keras", lambda: export_keras_model(keras_model, files["onnx-keras"]))
        gc.collect()
        for name in order:
            if name in files:
                outputs[name] = timed(f"run {name}", lambda p=files[name]: _run_onnx(
                    p, [x for _, x in inputs], size))
        compare_ready("layers onnx")
    for result, found in zip(results, compared, strict=True):
        result.pairs = [found[p] for p in pairs]
    return results


def _localise_results(
    compared: list[dict[tuple[str, str], PairResult]],
    inputs: list[tuple[str, np.ndarray]],
    todo: list[set[tuple[str, str]]],
    tmodel: Any,
    keras_model: Any,
    files: dict[str, Path],
    size: tuple[int, int],
    say: Callable[[str], None],
) -> None:
    """Fill ``layers`` and ``first_divergent_layer`` of the pairs in ``todo`` (per input)."""
    from codenn_convert import localise as loc

    layers = loc.mapped_layers(keras_model, tmodel, inputs[0][1])
    involved = {r for pairs in todo for p in pairs for r in p}
    probes: dict[str, loc.Probe] = {}
    if "torch" in involved:
        probes["torch"] = loc.TorchProbe(tmodel, layers)
    if "keras" in involved:
        probes["keras"] = loc.KerasProbe(keras_model, layers)
    for name in sorted(involved - probes.keys()):
        say(f"layers: reading {name}")
        probes[name] = loc.OnnxProbe(files[name], layers, input_size=size)
    for found, (_, x), pairs in zip(compared, inputs, todo, strict=True):
        if not pairs:
            continue
        located = loc.localise(probes, sorted(pairs), layers, x, progress=say)
        for pair, where in located.items():
            found[pair].layers = where.layers
            found[pair].first_divergent_layer = where.first_divergent_layer
