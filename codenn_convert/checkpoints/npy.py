"""The one ``.npy`` reader: a float32 NCHW batch ``[N, 3, H, W]``, for ``--inputs`` (the
verifier's own batches) and ``--calibration`` (int8 calibration data) alike.

A ``.npy`` file is data only. Its header is read and checked first (dtype float32, four
dimensions with 3 channels, at least one sample, C order, a file size that matches the
header's shape), so that a hostile header costs nothing; then the data is loaded with
``allow_pickle=False`` and must be finite.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from codenn_convert.checkpoints.npyfile import NpyError, ObjectDtypeError, read_header
from codenn_convert.errors import UsageError

#: What a ``.npy`` batch must be, as the error messages say it.
EXPECTED = "a float32 NCHW batch [N, 3, H, W]"


def _read_header(path: Path) -> tuple[tuple[int, ...], np.dtype, bool, int]:
    """``(shape, dtype, fortran_order, data offset)`` from the header alone (the one header
    reader, :func:`codenn_convert.checkpoints.npyfile.read_header`, shared with golden files)."""
    try:
        with path.open("rb") as f:
            h = read_header(f)
    except ObjectDtypeError:
        raise UsageError(f"{path}: expected {EXPECTED}, found dtype object (Python objects "
                         "are never loaded)") from None
    except (NpyError, OSError) as exc:
        raise UsageError(f"{path} is not a .npy file: {str(exc)[:120]}") from None
    return h.shape, h.dtype, h.fortran, h.offset


def npy_header(path: str | os.PathLike[str], *, what: str = "input file",
               input_size: tuple[int, int] | None = None) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of a ``.npy`` batch from its header alone, checked to be
    :data:`EXPECTED` (of spatial size ``input_size`` when given). ``what`` names the file
    in the messages (``input file``, ``calibration data``)."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{what} {path} is a directory, not a .npy file")
    if not path.is_file():
        raise UsageError(f"{what} not found: {path}")
    shape, dtype, fortran, offset = _read_header(path)
    if dtype != np.float32 or len(shape) != 4 or shape[1] != 3 or shape[0] < 1 or fortran:
        raise UsageError(f"{path}: expected {EXPECTED}, found dtype {dtype}, shape "
                         f"{shape}{' (Fortran order)' if fortran else ''}")
    if input_size is not None and tuple(shape[2:]) != tuple(input_size):
        h, w = input_size
        raise UsageError(f"{path}: {what} has shape {shape}; expected [N, 3, {h}, {w}] (the "
                         f"input size)")
    # The header's claim is checked against the file before any data is read (or allocated).
    if path.stat().st_size != offset + 4 * int(np.prod(shape, dtype=np.int64)):
        raise UsageError(f"{path}: the file's size does not match its header's shape "
                         f"{list(shape)} (truncated or damaged)")
    return shape, dtype


def load_npy(path: str | os.PathLike[str], *, what: str = "input file",
             input_size: tuple[int, int] | None = None) -> np.ndarray:
    """A checked, finite float32 NCHW batch from a ``.npy`` file (header first, no pickles)."""
    shape, _ = npy_header(path, what=what, input_size=input_size)
    try:
        x = np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise UsageError(f"{path}: cannot read: {str(exc)[:120]}") from None
    if x.shape != shape:
        raise UsageError(f"{path}: the data is not of its header's shape {list(shape)}")
    if not np.isfinite(x).all():
        raise UsageError(f"{path}: {what} holds NaN or Inf values; the data must be finite")
    return np.ascontiguousarray(x, dtype=np.float32)
