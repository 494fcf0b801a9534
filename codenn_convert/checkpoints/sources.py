"""A checkpoint read for a model: filters applied, precision widened, options inferred.

Everywhere a checkpoint enters (convert, export ``--weights``, verify ``--weights`` /
``--torch-weights`` / ``--keras-weights``), :func:`read_source` is the one way in:

1. the file is read once (:func:`read_raw`): torch layouts unwrapped to their state_dict with
   source dtypes kept, Keras files with their BatchNorm counters and recorded source dtypes;
2. foreign names are filtered: a Keras file through the spec's ``keras_filter``, a torch
   file through :data:`codenn_convert.checkpoints.filters.DEFAULT_FILTERS` and the spec's own
   ``torch_filters``;
3. builder options are inferred from the file (:data:`INFERABLE`): ``num_classes`` from the
   head's shape, InceptionV3's ``aux_logits`` from whether ``AuxLogits.*`` keys exist. Each
   option is found by rule, by building the torch twin twice on the meta device (no memory)
   and comparing: no per-model table. An explicit option that contradicts the file is an
   error; one that agrees is fine.

Every step taken is a note, returned in :class:`Source` and logged on the
``codenn_convert.notes`` logger (the CLI prints ``note: ...`` lines).
"""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from codenn_convert.checkpoints import files as checkpoint
from codenn_convert.checkpoints import filters
from codenn_convert.errors import UsageError
from codenn_convert.interface import NUM_BATCHES_TRACKED
from codenn_convert.registry import _resolve, get_model, get_spec
from codenn_convert.twins.rules import RULES, LayerPlan, torch_rule

TorchState = dict[str, np.ndarray]
KerasWeights = dict[str, list[np.ndarray]]
Shapes = dict[str, tuple[int, ...]]

#: h5 root attribute where we keep the torch source's dtypes (``{key: "float16"}``).
SOURCE_DTYPES_ATTR = "codenn_source_dtypes"
#: Builder options a checkpoint determines; key-set options (bool) before shape options.
INFERABLE = ("aux_logits", "num_classes")


@dataclass
class RawCheckpoint:
    """A checkpoint file as read, before any model-specific step."""

    path: Path
    layout: checkpoint.Layout
    torch_state: TorchState | None = None  # source dtypes kept
    keras_weights: KerasWeights | None = None
    tracked: dict[str, int] = field(default_factory=dict)
    dtypes: dict[str, str] = field(default_factory=dict)  # recorded in a Keras file
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Source:
    """A checkpoint resolved for one model: what the twins are built and loaded from."""

    model: str
    path: Path
    layout: checkpoint.Layout
    options: dict[str, Any]  # explicit and inferred builder options, for both twins
    inferred: dict[str, Any]  # the options the file determined (non-default ones)
    notes: tuple[str, ...]
    dtypes: dict[str, str]  # torch key -> source dtype, where not float32
    torch_state: TorchState | None  # float32 (torch layout)
    keras_weights: KerasWeights | None  # twin layer names (Keras layout)
    tracked: dict[str, int]


def read_raw(path: str | os.PathLike[str]) -> RawCheckpoint:
    """Read ``path`` once, in either layout."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"checkpoint not found: {path}")
    layout = checkpoint.layout_of(path)
    raw = RawCheckpoint(path=path, layout=layout)
    if layout == "keras":
        raw.keras_weights, raw.tracked = checkpoint.read_keras_weights(path)
        raw.dtypes = read_source_dtypes(path)
    else:
        raw.torch_state = checkpoint.load_torch_state(path, notes=raw.notes)
    return raw


def read_source_dtypes(path: str | os.PathLike[str]) -> dict[str, str]:
    """The torch source dtypes we recorded in a ``.weights.h5`` (empty for other files)."""
    dtypes = checkpoint.read_json_attr(path, SOURCE_DTYPES_ATTR)
    return {str(k): str(v) for k, v in dtypes.items() if v in filters.SOURCE_DTYPES}


@functools.lru_cache(maxsize=128)
def _meta_twin(name: str, options: tuple[tuple[str, Any], ...]) -> tuple[Shapes, dict[str, str]]:
    """The torch twin built on the meta device (structure only, no memory): its keys and
    shapes, and the layer rule of each weighted module by path."""
    import torch

    with torch.device("meta"):
        model = get_model(name, "torch", **dict(options))
    kinds = {path: rule.name for path, module in model.named_modules()
             if (rule := torch_rule(path, module, required=False)) is not None}
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}, kinds


def expected_shapes(name: str, options: Mapping[str, Any]) -> Shapes:
    """The torch twin's keys and shapes for ``options`` (built on the meta device)."""
    return _meta_twin(name, tuple(sorted(options.items())))[0]


def layer_kinds(name: str, options: Mapping[str, Any]) -> dict[str, str]:
    """The twin's weighted modules (paths) and their layer rules, for ``options`` and every
    value of its inferable flags (a layer only one variant has, e.g. an aux head, counts)."""
    kinds: dict[str, str] = {}
    for variant in _variants(name, options):
        kinds.update(_meta_twin(name, tuple(sorted(variant.items())))[1])
    return kinds


def default_options(name: str) -> dict[str, Any]:
    """The inferable options' values when none is given (builder defaults, spec's kwargs)."""
    spec = get_spec(name)
    params = inspect.signature(spec.builder("torch")).parameters
    defaults = {k: params[k].default for k in INFERABLE if k in params}
    return {**defaults, **{k: v for k, v in spec.builder_kwargs.items() if k in defaults}}


def _free_options(name: str) -> list[str]:
    # An option the variant fixes (keras_inception_v3 has no aux head) is not inferred.
    fixed = get_spec(name).builder_kwargs
    return [k for k in default_options(name) if k not in fixed]


def keras_shapes_as_torch(name: str, weights: Mapping[str, list[np.ndarray]],
                          explicit: Mapping[str, Any]) -> Shapes:
    """Torch keys and shapes of Keras weights (named after the twin's layers). Each layer's
    rule is the one of the twin's module at that path, built on the meta device: never
    guessed from array ranks (a depthwise kernel looks like a conv's). A layer the twin lacks,
    or whose variables its rule cannot read, keeps ``<layer>.variable<i>`` keys, which then
    show as unexpected."""
    kinds = layer_kinds(name, explicit)
    out: Shapes = {}
    for layer, arrays in weights.items():
        shapes = tuple(tuple(int(d) for d in np.shape(a)) for a in arrays)
        rule = RULES.get(kinds.get(layer, ""))
        try:
            named = rule.torch_shapes(LayerPlan(layer, rule.name, shapes)) if rule else None
        except (ValueError, IndexError):  # a variable count or rank the rule cannot read
            named = None
        if named is None:
            named = [(f"variable{i}", s) for i, s in enumerate(shapes)]
        out.update({f"{layer}.{suffix}": tuple(s) for suffix, s in named})
    return out


def mismatches(expected: Shapes, found: Shapes) -> list[str]:
    """Missing keys, unexpected keys and wrong shapes (``num_batches_tracked`` optional)."""
    nbt = "." + NUM_BATCHES_TRACKED
    missing = [f"missing {k}" for k in expected if k not in found and not k.endswith(nbt)]
    unexpected = [f"unexpected {k}" for k in found if k not in expected]
    shapes = [f"{k} is {found[k]}, expected {s}" for k, s in expected.items()
              if k in found and tuple(found[k]) != s and not k.endswith(nbt)]
    return missing + unexpected + shapes


def show(value: Any) -> str:
    """An option value as the CLI spells it (``true``, ``10``)."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def _infer_flag(name: str, key: str, base: dict[str, Any], found: Shapes
                ) -> tuple[bool, str] | None:
    on = expected_shapes(name, {**base, key: True}).keys()
    off = expected_shapes(name, {**base, key: False}).keys()
    only_on = sorted(on - off)
    if not only_on or off - on:
        return None
    value = any(k in found for k in only_on)
    group = only_on[0].split(".", 1)[0]
    return value, f"{'found' if value else 'no'} {group}.* keys"


def _infer_size(name: str, key: str, base: dict[str, Any], found: Shapes, default: int
                ) -> tuple[int, str] | None:
    a = expected_shapes(name, {**base, key: default})
    b = expected_shapes(name, {**base, key: default + 1})
    seen: dict[str, int] = {}
    for k, shape in a.items():
        other = b.get(k)
        if other is None or other == shape or k not in found or len(found[k]) != len(shape):
            continue
        dim = next(i for i, (x, y) in enumerate(zip(shape, other, strict=True)) if x != y)
        seen[k] = int(found[k][dim])
    if not seen or len(set(seen.values())) > 1:
        return None  # a head that disagrees with itself is reported as a shape mismatch
    first = next(iter(seen))
    return seen[first], f"{first} {tuple(found[first])}"


def infer_options(
    name: str, found: Shapes, explicit: Mapping[str, Any], notes: list[str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(options, inferred)``: ``explicit`` plus the options the file determines.

    Raises :class:`UsageError` when an explicit option contradicts the file.
    """
    defaults = default_options(name)
    base = {k: explicit[k] for k in explicit if k not in INFERABLE}
    inferred: dict[str, Any] = {}
    for key in _free_options(name):
        default = defaults[key]
        got = (_infer_flag(name, key, base, found) if isinstance(default, bool)
               else _infer_size(name, key, base, found, default))
        if got is None:
            base[key] = explicit.get(key, default)
            continue
        value, why = got
        if key in explicit and explicit[key] != value:
            raise UsageError(f"option {key}={show(explicit[key])} contradicts the checkpoint "
                             f"({why}: {key}={show(value)})")
        base[key] = value
        if value != default:
            inferred[key] = value
            if key not in explicit:
                filters.note(notes, f"inferred {key}={show(value)} from the checkpoint "
                                    f"({why})")
    return {**dict(explicit), **inferred}, inferred


def _variants(name: str, explicit: Mapping[str, Any]) -> list[dict[str, Any]]:
    """``explicit`` without inferable options, and with each inferable flag on and off."""
    base = {k: v for k, v in explicit.items() if k not in INFERABLE}
    flags = [k for k in _free_options(name) if isinstance(default_options(name)[k], bool)]
    return [base] + [{**base, k: v} for k in flags for v in (True, False)]


def default_keys(name: str) -> frozenset[str]:
    """Every key any variant of ``name`` has (its inferable flags on and off)."""
    return frozenset().union(*_candidates(name, {}))


def _candidates(name: str, explicit: Mapping[str, Any]) -> tuple[frozenset[str], ...]:
    return tuple(frozenset(expected_shapes(name, v)) for v in _variants(name, explicit))


def filtered_for(name: str, raw: RawCheckpoint, explicit: Mapping[str, Any], notes: list[str]
                 ) -> tuple[TorchState | None, KerasWeights | None, Shapes]:
    """The raw checkpoint with ``name``'s filters applied, and its torch-key shapes."""
    spec = get_spec(name)
    if raw.keras_weights is not None:
        weights = raw.keras_weights
        if spec.keras_filter:
            renamed = _resolve(spec.keras_filter)(weights)
            if renamed is not None:
                filters.note(notes, f"renamed {len(weights)} foreign Keras layers to "
                                    f"{name}'s layer names")
                weights = renamed
        return None, weights, keras_shapes_as_torch(name, weights, explicit)
    ctx = filters.FilterContext(candidates=_candidates(name, explicit), notes=notes)
    steps = (*filters.DEFAULT_FILTERS, *(_resolve(f) for f in spec.torch_filters))
    state = filters.apply_filters(dict(raw.torch_state or {}), steps, ctx)
    return state, None, {k: tuple(np.shape(v)) for k, v in state.items()}


def resolve(name: str, raw: RawCheckpoint, explicit: Mapping[str, Any] | None = None
            ) -> Source:
    """``raw`` resolved for model ``name``: filtered, options inferred, floats widened."""
    notes = list(raw.notes)
    explicit = dict(explicit or {})
    state, weights, found = filtered_for(name, raw, explicit, notes)
    options, inferred = infer_options(name, found, explicit, notes)
    dtypes = dict(raw.dtypes)
    if state is not None:
        state, dtypes = filters.widen(state, notes)
    return Source(model=name, path=raw.path, layout=raw.layout, options=options,
                  inferred=inferred, notes=tuple(notes), dtypes=dtypes, torch_state=state,
                  keras_weights=weights, tracked=dict(raw.tracked))


def read_source(name: str, path: str | os.PathLike[str],
                explicit: Mapping[str, Any] | None = None) -> Source:
    """Read ``path`` for model ``name`` (see the module docstring); notes are logged."""
    get_spec(name)  # unknown model: a clear error before reading anything
    source = resolve(name, read_raw(path), explicit)
    filters.note_all(source.notes)
    return source
