"""Layer-wise localisation: name the first mapped layer where two runtimes diverge.

The parts, each in the module of its job:

* :mod:`~codenn_convert.verification.matching`: the *mapped layers* both twins have;
* :mod:`~codenn_convert.verification.probes`: every runtime's *probe*, which returns named
  layers' outputs in torch layout;
* :mod:`~codenn_convert.verification.layers`: the per-layer numbers and tolerances.

Memory: layers are compared in chunks whose activations (all probes together) fit in a byte
budget; each chunk is compared and freed before the next one runs, so the activations of two
frameworks are never all held at once. The price is re-running the network's prefix once per
chunk (the torch pass stops early, the Keras sub-model only computes what it needs).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from codenn_convert.verification.layers import (
    LAYER_RTOL,
    LayerError,
    first_below,
    first_divergent,
    layer_error,
    layer_sqnr,
)
from codenn_convert.verification.matching import MappedLayer, mapped_layers
from codenn_convert.verification.probes import KerasProbe, Probe, TorchProbe

#: Bytes of layer outputs held at once, all probes of a chunk together.
DEFAULT_BUDGET_BYTES = 512 << 20



@dataclass
class Localisation:
    """Per-layer errors of one runtime pair and the first layer beyond tolerance."""

    layers: list[LayerError]
    first_divergent_layer: str | None










def _chunks(layers: Sequence[MappedLayer], cost: Callable[[MappedLayer], int],
            budget: int) -> list[list[MappedLayer]]:
    chunks: list[list[MappedLayer]] = [[]]
    used = 0
    for layer in layers:
        c = cost(layer)
        if chunks[-1] and used + c > budget:
            chunks.append([])
            used = 0
        chunks[-1].append(layer)
        used += c
    return [c for c in chunks if c]


def localise(
    probes: Mapping[str, Probe],
    pairs: Sequence[tuple[str, str]],
    layers: Sequence[MappedLayer],
    x: np.ndarray,
    *,
    tol: float = LAYER_RTOL,
    budget_bytes: int = DEFAULT_BUDGET_BYTES,
    progress: Callable[[str], None] | None = None,
    min_sqnr_db: Mapping[tuple[str, str], float] | None = None,
) -> dict[tuple[str, str], Localisation]:
    """Compare every mapped layer of each pair ``(reference, other)`` of probes on ``x``.

    Layers are visited in topological order, in chunks whose outputs (over all probes that
    need them) fit in ``budget_bytes``; each probe runs once per chunk and the chunk is freed
    before the next. Layers a probe cannot see are left out of that probe's pairs.

    Pairs in ``min_sqnr_db`` are lossy (``other`` in fp16/int8): each layer gets its SQNR
    too, and the first divergent layer is the first one below that pair's floor, since
    reduced precision misses the float32 ``tol`` everywhere.
    """
    floors = min_sqnr_db or {}
    say = progress or (lambda _msg: None)
    users: dict[str, set[str]] = {}
    for a, b in pairs:
        for layer in layers:
            if layer.name in probes[a].names and layer.name in probes[b].names:
                users.setdefault(layer.name, set()).update((a, b))
    needed = [layer for layer in layers if layer.name in users]
    batch = int(x.shape[0])
    errors: dict[tuple[str, str], list[LayerError]] = {p: [] for p in pairs}
    chunks = _chunks(needed, lambda m: m.nbytes(batch) * len(users[m.name]), budget_bytes)
    for k, chunk in enumerate(chunks):
        outputs: dict[str, dict[str, np.ndarray]] = {}
        for rt in sorted({r for m in chunk for r in users[m.name]}):
            say(f"layers {k + 1}/{len(chunks)}: {rt}")
            outputs[rt] = probes[rt].run([m.name for m in chunk if rt in users[m.name]], x)
        for a, b in pairs:
            for m in chunk:
                ya, yb = outputs.get(a, {}).get(m.name), outputs.get(b, {}).get(m.name)
                if ya is not None and yb is not None:
                    snr = layer_sqnr(ya, yb) if (a, b) in floors else None
                    errors[(a, b)].append(LayerError(m.name, layer_error(ya, yb), snr))
        del outputs
    return {p: Localisation(e, first_below(e, floors[p]) if p in floors
                            else first_divergent(e, tol)) for p, e in errors.items()}


def localise_models(
    torch_model: Any,
    keras_model: Any,
    x: np.ndarray,
    *,
    tol: float = LAYER_RTOL,
    budget_bytes: int = DEFAULT_BUDGET_BYTES,
) -> Localisation:
    """Localise a Keras model against a torch model on the NCHW batch ``x``.

    The two may hold different weights or structure: this is how a fault planted in one
    twin is found.
    """
    layers = mapped_layers(keras_model, torch_model, x)
    probes = {"torch": TorchProbe(torch_model, layers), "keras": KerasProbe(keras_model, layers)}
    return localise(probes, [("torch", "keras")], layers, x, tol=tol,
                    budget_bytes=budget_bytes)[("torch", "keras")]


def first_nonfinite_layer(
    probe: Probe,
    layers: Sequence[MappedLayer],
    x: np.ndarray,
    *,
    budget_bytes: int = DEFAULT_BUDGET_BYTES,
) -> str | None:
    """The first mapped layer (topological order) whose output holds NaN or Inf.

    That layer, or the weights feeding it, is where a corrupted tensor enters; everything
    after it is non-finite only by propagation. None if no layer the probe sees is.
    """
    seen = [m for m in layers if m.name in probe.names]
    for chunk in _chunks(seen, lambda m: m.nbytes(int(x.shape[0])), budget_bytes):
        outputs = probe.run([m.name for m in chunk], x)
        for m in chunk:
            y = outputs.get(m.name)
            if y is not None and not np.isfinite(y).all():
                return m.name
    return None
