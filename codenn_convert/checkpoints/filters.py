"""Torch checkpoints as people save them: unwrapping, key filters, source precision.

The torch-side twin of ``ModelSpec.keras_filter`` (timm's ``clean_state_dict`` and
``checkpoint_filter_fn`` are the model): a training checkpoint is unwrapped to its
state_dict, then an ordered pipeline of filter functions ``(state, context) -> state``
removes wrapper prefixes (DataParallel/DDP ``module.``, torch.compile ``_orig_mod.``, one
common prefix such as Lightning's ``model.``). Families append their own filters through
``ModelSpec.torch_filters``. Every step taken is one note (``stripped prefix 'module.' from
320 keys``), returned to the caller, who logs it on the ``codenn_convert.notes`` logger; the
CLI prints those as ``note: ...`` lines.

Precision: float16, bfloat16 and float64 tensors are widened to float32 (the twins' and
Keras's dtype). The first two widen exactly; float64 rounds, and a note says by how much.
The source dtypes are kept (:func:`narrow` restores them), so torch(fp16/bf16) -> Keras ->
torch is bit-identical, dtype included; a float64 round trip is exact only to float32.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from codenn_convert.interface import NUM_BATCHES_TRACKED

TorchState = dict[str, np.ndarray]
log = logging.getLogger("codenn_convert.notes")

#: Entries of a training checkpoint that hold the model's state_dict, in order of preference
#: (the live weights before an EMA copy, as a user who names no EMA expects).
STATE_ENTRIES = ("state_dict", "model_state_dict", "model", "module", "net", "network",
                 "state_dict_ema", "model_ema", "ema_state_dict", "ema")
#: Wrapper prefixes that are always safe to strip: they never begin a real module path.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
#: Source dtypes that widen to float32 exactly, and all the ones accepted besides float32.
EXACT_DTYPES = ("float16", "bfloat16")
SOURCE_DTYPES = (*EXACT_DTYPES, "float64")


def note(notes: list[str], message: str) -> None:
    """Record one step taken. The caller that settles on a result logs its notes (identify
    tries every model and logs none of the failed attempts)."""
    notes.append(message)


def note_all(notes: Collection[str]) -> None:
    """Log the notes of a settled result (the CLI prints them as ``note: ...`` lines)."""
    for message in notes:
        log.info(message)


@dataclass
class FilterContext:
    """What filters may look at: the key sets the model accepts (one per inferable variant,
    e.g. with and without InceptionV3's aux head; empty when unknown) and the notes."""

    candidates: tuple[frozenset[str], ...] = ()
    notes: list[str] = field(default_factory=list)

    def matches(self, keys: Collection[str]) -> bool:
        """True if ``keys`` are exactly one candidate's (``num_batches_tracked`` optional)."""
        own = frozenset(k for k in keys if not k.endswith("." + NUM_BATCHES_TRACKED))
        return any(own == {k for k in c if not k.endswith("." + NUM_BATCHES_TRACKED)}
                   for c in self.candidates)


TorchFilter = Callable[[TorchState, FilterContext], TorchState]


def _is_tensor(value: Any) -> bool:
    return hasattr(value, "shape") and hasattr(value, "dtype")


def unwrap_checkpoint(obj: Any, notes: list[str]) -> dict[str, Any] | None:
    """The state_dict inside ``obj`` (bare, or under a training checkpoint's ``state_dict``,
    ``model``, ``ema``... entry), non-tensor entries dropped; None if there is none."""
    if not isinstance(obj, Mapping):
        return None
    tensors = {k: v for k, v in obj.items() if isinstance(k, str) and _is_tensor(v)}
    if not tensors:
        for entry in STATE_ENTRIES:
            inner = obj.get(entry)
            if isinstance(inner, Mapping):
                found = unwrap_checkpoint(inner, [])
                if found:
                    others = sorted(str(k) for k in obj if k != entry)
                    shown = ", ".join(others[:4]) + (", ..." if len(others) > 4 else "")
                    note(notes, f"took the weights from the checkpoint's {entry!r} entry"
                         + (f" (ignored {shown})" if others else ""))
                    return found
        return None
    dropped = len(obj) - len(tensors)
    if dropped:
        note(notes, f"ignored {dropped} non-tensor entries of the state_dict")
    return tensors


def _strip(state: TorchState, prefix: str, ctx: FilterContext) -> TorchState:
    count = sum(k.startswith(prefix) for k in state)
    if not count:
        return state
    note(ctx.notes, f"stripped prefix {prefix!r} from {count} keys")
    return {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in state.items()}


def strip_wrappers(state: TorchState, ctx: FilterContext) -> TorchState:
    """Strip DataParallel/DDP's ``module.`` and torch.compile's ``_orig_mod.``, in any
    nesting (``module._orig_mod.``), as timm's ``clean_state_dict`` does."""
    changed = True
    while changed:
        before = state
        for prefix in WRAPPER_PREFIXES:
            state = _strip(state, prefix, ctx)
        changed = state is not before
    return state


def strip_common_prefix(state: TorchState, ctx: FilterContext) -> TorchState:
    """Strip one prefix all keys share (Lightning's ``model.``, ``net.``...), but only when
    the keys do not match the model as they are and removing it makes them match exactly."""
    if not ctx.candidates or ctx.matches(state):
        return state
    heads = {k.split(".", 1)[0] for k in state}
    if len(heads) != 1 or any("." not in k for k in state):
        return state
    prefix = f"{heads.pop()}."
    stripped = {k[len(prefix):] for k in state}
    return _strip(state, prefix, ctx) if ctx.matches(stripped) else state


#: The pipeline every torch-layout checkpoint goes through, before a family's own filters.
DEFAULT_FILTERS: tuple[TorchFilter, ...] = (strip_wrappers, strip_common_prefix)


def apply_filters(state: TorchState, filters: Collection[TorchFilter], ctx: FilterContext
                  ) -> TorchState:
    """Run ``filters`` in order."""
    for fn in filters:
        state = fn(state, ctx)
    return state


def dtype_name(array: np.ndarray) -> str:
    """numpy's name of the dtype (``bfloat16`` for ml_dtypes' bfloat16)."""
    return str(np.asarray(array).dtype)


def widen(state: Mapping[str, np.ndarray], notes: list[str]) -> tuple[TorchState, dict[str, str]]:
    """Floating tensors as float32, plus ``{key: source dtype}`` of those that were not."""
    out: TorchState = {}
    dtypes: dict[str, str] = {}
    worst = 0.0
    for key, value in state.items():
        arr = np.asarray(value)
        name = dtype_name(arr)
        if name not in SOURCE_DTYPES:
            out[key] = arr
            continue
        dtypes[key] = name
        wide = arr.astype(np.float32)
        if name == "float64":
            nonzero = (arr != 0) & np.isfinite(arr)  # NaN/Inf are refused elsewhere
            if nonzero.any():
                exact = arr[nonzero]
                err = np.abs(wide[nonzero].astype(np.float64) - exact) / np.abs(exact)
                worst = max(worst, float(err.max()))
        out[key] = wide
    _note_widening(dtypes, worst, notes)
    return out, dtypes


def _note_widening(dtypes: Mapping[str, str], worst: float, notes: list[str]) -> None:
    for name in sorted(set(dtypes.values())):
        count = sum(v == name for v in dtypes.values())
        if name in EXACT_DTYPES:
            note(notes, f"widened {count} {name} tensors exactly to float32 (the source dtype "
                        f"is kept for the way back)")
        else:
            note(notes, f"rounded {count} float64 tensors to float32 (largest relative "
                        f"rounding {worst:.1e}); a round trip is exact only to float32")


def narrow(state: Mapping[str, np.ndarray], dtypes: Mapping[str, str]) -> TorchState:
    """``state`` with the source dtypes restored (exact for float16/bfloat16 sources)."""
    if not dtypes:
        return dict(state)
    import ml_dtypes

    kinds = {"float16": np.float16, "float64": np.float64, "bfloat16": ml_dtypes.bfloat16}
    return {k: (np.asarray(v).astype(kinds[dtypes[k]]) if k in dtypes else v)
            for k, v in state.items()}
