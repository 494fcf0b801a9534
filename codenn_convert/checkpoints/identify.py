"""Which registered model a checkpoint holds, from its keys and shapes alone.

Every model is tried with its own filters (wrapper prefixes, keras.applications names) and
its inferable options (``num_classes``, ``aux_logits``); the models whose torch twin, built
on the meta device, has exactly the file's keys and shapes match. Files are read once.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from codenn_convert.checkpoints import filters, sources
from codenn_convert.errors import CheckpointError, UsageError
from codenn_convert.registry import check_options, list_models


@dataclass(frozen=True)
class Candidate:
    """One registered model tried against a file: its options and what does not fit."""

    model: str
    options: dict[str, Any]  # inferred from the file
    mismatches: tuple[str, ...]
    notes: tuple[str, ...]
    #: How many of the file's keys the model has: 0 means it is no model's file at all.
    shared_keys: int = 0
    #: A few of the file's own keys, to say what it holds when nothing matches.
    sample_keys: tuple[str, ...] = ()

    @property
    def matches(self) -> bool:
        return not self.mismatches

    def describe(self) -> str:
        """``resnet50 (num_classes=10)``."""
        opts = ", ".join(f"{k}={sources.show(v)}" for k, v in self.options.items())
        return f"{self.model} ({opts})" if opts else self.model


def _try(name: str, raw: sources.RawCheckpoint) -> Candidate:
    notes: list[str] = list(raw.notes)
    _, _, found = sources.filtered_for(name, raw, {}, notes)
    if not any(k in found for k in sources.default_keys(name)):
        # Not one shared key: inferring its options would build two more meta twins per
        # model for a candidate that cannot be the nearest (2/3 of identify's time).
        options, inferred = {}, {}
    else:
        options, inferred = sources.infer_options(name, found, {}, notes)
    expected = sources.expected_shapes(name, options)
    wrong = sources.mismatches(expected, found)
    return Candidate(model=name, options=inferred, mismatches=tuple(wrong), notes=tuple(notes),
                     shared_keys=sum(k in expected for k in found),
                     sample_keys=tuple(list(found)[:3]))


def candidates(raw: sources.RawCheckpoint, models: Sequence[str] | None = None
               ) -> list[Candidate]:
    """Every registered model (or only ``models``) tried against ``raw``, closest first
    (matches first, then by number of mismatches, registration order breaking ties)."""
    tried = [_try(name, raw) for name in (models or list_models())]
    return sorted(tried, key=lambda c: len(c.mismatches))


def identify(path: str | os.PathLike[str], models: Sequence[str] | None = None
             ) -> list[Candidate]:
    """The candidates for the file at ``path`` (see :func:`candidates`)."""
    return candidates(sources.read_raw(path), models)


def describe_none(path: Any, found: Sequence[Candidate], limit: int = 3) -> str:
    """``"... matches no registered model; nearest: resnet50 (2 mismatches: ...)"``; no
    "nearest" when not one of the file's keys belongs to any model."""
    near = found[0]
    if not any(c.shared_keys for c in found):
        keys = ", ".join(near.sample_keys) or "none"
        return (f"{path} matches no registered model: none of its keys (e.g. {keys}) belongs "
                f"to any model in `codenn list`")
    shown = "; ".join(near.mismatches[:limit])
    more = f" (+{len(near.mismatches) - limit} more)" if len(near.mismatches) > limit else ""
    return (f"{path} matches no registered model; nearest: {near.describe()} with "
            f"{len(near.mismatches)} mismatches: {shown}{more}")


def identify_source(path: str | os.PathLike[str], explicit: dict[str, Any] | None = None
                    ) -> sources.Source:
    """The file resolved for the one model it matches; a one-line error for none or several."""
    raw = sources.read_raw(path)
    found = candidates(raw)
    matches = [c for c in found if c.matches]
    if not matches:
        raise CheckpointError(describe_none(path, found))
    if len(matches) > 1:
        raise UsageError(f"{path} matches several models: "
                         f"{', '.join(c.describe() for c in matches)}; name one: "
                         f"codenn convert MODEL SRC DST")
    name = matches[0].model
    source = sources.resolve(name, raw, check_options(name, dict(explicit or {})))
    filters.note_all([f"identified {matches[0].describe()}", *source.notes])
    return source
