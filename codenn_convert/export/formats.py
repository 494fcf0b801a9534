"""Which file format an export writes: the output's suffix, or ``--format`` explicitly.

One row per format: its suffix and its exporter. Options that only one format has
(``--opset`` for ONNX, ``--layout`` for LiteRT) are refused for the other.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from codenn_convert.errors import UsageError


@dataclass(frozen=True)
class FormatOptions:
    """Format-specific export options; None: the format's default (or not given)."""

    opset: int | None = None
    layout: str | None = None


def _onnx(model: str, output: Path, common: Mapping[str, Any], extra: FormatOptions) -> Path:
    from codenn_convert.export.onnx_export import export_onnx
    from codenn_convert.interface import DEFAULT_OPSET

    if extra.layout is not None and extra.layout.lower() != "nchw":
        raise UsageError("ONNX exports take NCHW input; --layout nhwc is for .tflite")
    return export_onnx(model, common["framework"], output, opset=extra.opset or DEFAULT_OPSET,
                       **{k: v for k, v in common.items() if k != "framework"})


def _tflite(model: str, output: Path, common: Mapping[str, Any], extra: FormatOptions) -> Path:
    from codenn_convert.export.litert_export import export_tflite
    from codenn_convert.export.litert_format import DEFAULT_LAYOUT

    if extra.opset is not None:
        raise UsageError("--opset is for ONNX exports, not .tflite")
    return export_tflite(model, output, layout=extra.layout or DEFAULT_LAYOUT, **common)


@dataclass(frozen=True)
class ExportFormat:
    """A file format we export: its suffix and its exporter."""

    suffix: str
    export: Callable[[str, Path, Mapping[str, Any], FormatOptions], Path]


FORMATS: dict[str, ExportFormat] = {
    "onnx": ExportFormat(".onnx", _onnx),
    "tflite": ExportFormat(".tflite", _tflite),
}


def pick_format(output: str | os.PathLike[str], fmt: str | None) -> str:
    """The format named by ``fmt`` or, without it, by ``output``'s suffix; the two must
    agree."""
    suffix = Path(output).suffix.lower()
    by_suffix = next((name for name, f in FORMATS.items() if f.suffix == suffix), None)
    if fmt is None:
        if by_suffix is None:
            raise UsageError(f"cannot tell the format from {Path(output).name}; name it "
                             f"{' or '.join(f.suffix for f in FORMATS.values())} or give "
                             f"--format {'|'.join(FORMATS)}")
        return by_suffix
    if fmt not in FORMATS:
        raise UsageError(f"unknown format {fmt!r}; use {' or '.join(FORMATS)}")
    if by_suffix != fmt:
        raise UsageError(f"--format {fmt} writes a {FORMATS[fmt].suffix} file, got "
                         f"{Path(output).name}")
    return fmt


def export_file(model: str, output: str | os.PathLike[str], *, fmt: str | None = None,
                extra: FormatOptions | None = None, **common: Any) -> Path:
    """Export ``model`` to ``output`` in its format; ``common`` are the options every
    format takes (framework, weights, input_size, seed, options, precision, ...)."""
    kind = pick_format(output, fmt)
    return FORMATS[kind].export(model, Path(output), common, extra or FormatOptions())
