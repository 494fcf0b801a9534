"""The checkpoint's own float32 floor, and what the verdict makes of it.

float32 rounding is amplified by a badly conditioned network: an untrained
keras.applications ResNet50 (Keras' own initialisers, BatchNorm statistics from one batch)
puts *every* runtime 3.8e-05 to 4.5e-05 from the float64 result at 64x64, and the runtimes
3.3e-05 to 6.0e-05 from each other, though none is wrong. A fixed ``rtol`` of 1e-5 fails
all six pairs, and a user learns to loosen it blindly.

The float64 oracle measures the right yardstick: the reference twin's own float32 distance
to the float64 result (``torch``, or the stored ``golden`` logits in ``codenn check``) is
this checkpoint's **floor**, what float32 itself costs on it. A float32 pair passes at
``max(rtol, FLOOR_FACTOR x floor)``. A semantic fault moves one side far from float64 while
the reference stays at its floor, so it still fails (a sign-flipped channel in one conv of
the same ResNet50 gives 1e-1 and more). See docs/semantics.md for the measurements behind
:data:`FLOOR_FACTOR`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from codenn_convert.verification.measures import error_vs_exact

#: Effective tolerance of a float32 pair = max(rtol, FLOOR_FACTOR x floor). Two runtimes each
#: within c x floor of float64 are within 2c x floor of each other (triangle inequality).
#: Measured c <= 1.30 and pair / floor <= 1.60 on untrained keras.applications nets (ResNet50
#: at 64, InceptionV3 at 75 and 139), 1.23 on seeded ResNet-50 at 224; 4 covers 2c = 2.6
#: with room, while a sign-flipped channel is 1000x the floor and more.
FLOOR_FACTOR = 4.0
#: A pair names a side "farther" from float64 only when it is this many times farther than
#: the other side: 1.80e-5 against 1.81e-5 is rounding, not a culprit.
FARTHER_RATIO = 2.0
#: The runtimes whose distance to float64 is the floor: the torch twin the oracle is the
#: float64 run of, or the torch logits stored in a golden file.
FLOOR_REFERENCES = ("torch", "golden")


def effective_rtol(rtol: float, floor: float | None) -> float:
    """The tolerance a float32 pair is judged at: ``rtol``, or the floor's multiple when the
    checkpoint's own float32 rounding is larger (an unknown or non-finite floor: ``rtol``)."""
    if floor is None or not np.isfinite(floor):
        return rtol
    return max(rtol, FLOOR_FACTOR * floor)


def farther(a: str, b: str, distance: dict[str, float | None]) -> str | None:
    """The side of a pair clearly farther from float64 (by :data:`FARTHER_RATIO`), else None."""
    da, db = distance.get(a), distance.get(b)
    if da is None or db is None:
        return None
    if da > FARTHER_RATIO * db:
        return a
    if db > FARTHER_RATIO * da:
        return b
    return None


def degenerate(y: np.ndarray) -> bool:
    """Logits that say nothing: every sample's scores equal (all zero, or one constant).

    Two runtimes agreeing on a constant agree on no class ranking at all, and a model whose
    head was zeroed or whose activations died gives exactly that; such a pair fails.
    Finite values only (NaN/Inf have their own rule); a one-class output is never degenerate.
    """
    y = np.asarray(y)
    if y.ndim < 2 or y.shape[-1] < 2 or not np.isfinite(y).all():
        return False
    flat = y.reshape(y.shape[0], -1)
    return bool(np.any(flat.max(axis=1) == flat.min(axis=1)))


def floors_of(outputs: Sequence[np.ndarray], exact: Sequence[np.ndarray]) -> list[float | None]:
    """The reference's distance to float64 on each input: the floor."""
    return [error_vs_exact(y, e) for y, e in zip(outputs, exact, strict=True)]
