"""Checkpoint conversion, file to file. Formats follow from the extensions."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from codenn_convert.checkpoints import files as checkpoint
from codenn_convert.checkpoints import filters
from codenn_convert.checkpoints.atomic import ensure_writable
from codenn_convert.checkpoints.identify import identify_source
from codenn_convert.checkpoints.sources import SOURCE_DTYPES_ATTR, read_source
from codenn_convert.errors import UsageError
from codenn_convert.registry import get_model, get_spec
from codenn_convert.twins import build as twins


@dataclass(frozen=True)
class ConvertResult:
    """What a conversion did."""

    model: str
    src: str
    dst: str
    src_layout: str
    dst_layout: str
    tensors: int
    seconds: float
    options: dict[str, Any]
    notes: tuple[str, ...] = ()


def _check_paths(src: Path, dst: Path) -> None:
    dst_layout = checkpoint.layout_of(dst)
    checkpoint.layout_of(src)
    if dst_layout == "keras" and not dst.name.endswith(".weights.h5"):
        raise UsageError(f"Keras output must end in .weights.h5, got {dst.name}")
    if src.resolve() == dst.resolve():
        raise UsageError("source and destination are the same file")
    ensure_writable(dst)
    if not src.is_file():
        raise UsageError(f"checkpoint not found: {src}")


def convert_checkpoint(
    model: str | None, src: str | os.PathLike[str], dst: str | os.PathLike[str],
    *, options: Mapping[str, Any] | None = None, allow_nonfinite: bool = False,
) -> ConvertResult:
    """Convert ``src`` to ``dst`` for ``model`` (None: identify the model from the file).

    ``.pt``/``.pth``/``.safetensors`` hold the torch layout and ``.weights.h5`` the Keras one;
    the direction follows from the two. The source goes through
    :func:`codenn_convert.checkpoints.sources.read_source` (wrappers, precision, foreign
    names, inferred options) and is checked against the architecture before anything is
    written; ``dst`` is replaced atomically. Source dtypes survive: a Keras file records them,
    a torch file gets them back, so float16/bfloat16 round trips are bit-identical. A source
    with NaN/Inf values is refused unless ``allow_nonfinite`` (to move a broken file for
    debugging).
    """
    start = time.perf_counter()
    if model is not None:
        get_spec(model)  # unknown model -> clear error before any framework import
    src, dst = Path(src), Path(dst)
    _check_paths(src, dst)
    source = (read_source(model, src, options) if model is not None
              else identify_source(src, dict(options or {})))
    model = source.model
    keras_model = get_model(model, "keras", **source.options)
    state = twins.state_from_source(model, source, keras_model)
    if not allow_nonfinite:
        checkpoint.refuse_nonfinite(state, src)
    if checkpoint.layout_of(dst) == "keras":
        weights, tracked = twins.set_torch_state(keras_model, state, model)
        attrs = {SOURCE_DTYPES_ATTR: json.dumps(source.dtypes, sort_keys=True)} if (
            source.dtypes) else None
        checkpoint.save_keras_model_weights(keras_model, dst, tracked, attrs)
        tensors = sum(len(v) for v in weights.values())
    else:
        ordered = twins.torch_key_order(model, state, **source.options)
        checkpoint.save_torch_state(filters.narrow(ordered, source.dtypes), dst)
        tensors = len(state)
    return ConvertResult(
        model=model, src=str(src), dst=str(dst), src_layout=source.layout,
        dst_layout=checkpoint.layout_of(dst), tensors=tensors,
        seconds=round(time.perf_counter() - start, 3), options=source.options,
        notes=source.notes,
    )
