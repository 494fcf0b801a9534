"""Checkpoint conversion, file to file. Formats follow from the extensions."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from codenn_convert import checkpoint
from codenn_convert.errors import UsageError


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


def convert_checkpoint(
    model: str, src: str | os.PathLike[str], dst: str | os.PathLike[str],
    *, options: Mapping[str, Any] | None = None, allow_nonfinite: bool = False,
) -> ConvertResult:
    """Convert ``src`` to ``dst`` for ``model``.

    ``.pt``/``.pth``/``.safetensors`` hold the torch layout and ``.weights.h5`` the Keras one;
    the direction follows from the two. The source is checked against the architecture
    (missing/unexpected keys, shapes) before anything is written, and ``dst`` is replaced
    atomically, so a failure leaves an existing file intact. ``options`` go to both twin
    builders (e.g. ``{"aux_logits": False}`` for an InceptionV3 checkpoint without aux head).
    A source with NaN/Inf values is refused unless ``allow_nonfinite`` (to move a broken
    file for debugging).
    """
    from codenn_convert import twins
    from codenn_convert.registry import get_model, get_spec

    start = time.perf_counter()
    get_spec(model)  # unknown model -> clear error before any framework import
    src, dst = Path(src), Path(dst)
    src_layout, dst_layout = checkpoint.layout_of(src), checkpoint.layout_of(dst)
    if dst_layout == "keras" and not dst.name.endswith(".weights.h5"):
        raise UsageError(f"Keras output must end in .weights.h5, got {dst.name}")
    if src.resolve() == dst.resolve():
        raise UsageError("source and destination are the same file")
    checkpoint.ensure_writable(dst)
    if not src.is_file():
        raise UsageError(f"checkpoint not found: {src}")

    options = dict(options or {})
    keras_model = get_model(model, "keras", **options)
    state = twins.load_state(model, src, keras_model=keras_model)
    if not allow_nonfinite:
        checkpoint.refuse_nonfinite(state, src)
    if dst_layout == "keras":
        weights, tracked = twins.set_torch_state(keras_model, state, model)
        checkpoint.save_keras_model_weights(keras_model, dst, tracked)
        tensors = sum(len(v) for v in weights.values())
    else:
        checkpoint.save_torch_state(twins.torch_key_order(model, state, **options), dst)
        tensors = len(state)
    return ConvertResult(
        model=model, src=str(src), dst=str(dst), src_layout=src_layout, dst_layout=dst_layout,
        tensors=tensors, seconds=round(time.perf_counter() - start, 3),
    )
