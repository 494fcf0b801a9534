"""``.npy`` headers, read before any data: the one reader behind ``--inputs``,
``--calibration`` and the members of a golden ``.npz``.

A header states the dtype and shape of what follows, so a file claiming terabytes (or a zip
member that would inflate to gigabytes) is refused by what it says it holds, before a byte
of data is read or allocated. Object dtypes (pickles) are never accepted.
"""

from __future__ import annotations

import math
import zipfile
from dataclasses import dataclass
from typing import IO

import numpy as np

_CHUNK = 1 << 20


class NpyError(ValueError):
    """A header that is unreadable, or that the data does not match."""


class ObjectDtypeError(NpyError):
    """A header whose dtype holds Python objects: a pickle, never loaded."""


@dataclass(frozen=True)
class NpyHeader:
    """What a ``.npy`` header says: shape, dtype, Fortran order, and where the data starts."""

    shape: tuple[int, ...]
    dtype: np.dtype
    fortran: bool
    offset: int

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize

    def describe(self) -> str:
        return f"{self.dtype} {list(self.shape)}"


def read_header(f: IO[bytes]) -> NpyHeader:
    """The header at the start of ``f`` (a file or a zip member stream), nothing more read."""
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:  # 3.0 only exists for structured dtypes with unicode field names
            raise NpyError(f"unsupported .npy format version {version}")
    except NpyError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise NpyError(f"not a .npy array ({_first(exc)})") from None
    if dtype.hasobject:
        raise ObjectDtypeError(f"dtype {dtype} holds Python objects (a pickle), never loaded")
    return NpyHeader(tuple(int(n) for n in shape), dtype, bool(fortran), f.tell())


def read_data(f: IO[bytes], header: NpyHeader) -> np.ndarray:
    """The array after ``header`` (already read from ``f``), read in chunks into one buffer
    of the array's own size, whatever the compression ratio of a zip member."""
    raw = np.empty(header.nbytes, np.uint8)
    view, pos = memoryview(raw), 0
    try:
        while pos < header.nbytes:
            got = f.readinto(view[pos:pos + _CHUNK])  # type: ignore[attr-defined]
            if not got:
                raise NpyError(f"truncated data (header says {header.describe()})")
            pos += got
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise NpyError(f"damaged data ({_first(exc)})") from None
    return raw.view(header.dtype).reshape(header.shape, order="F" if header.fortran else "C")


def zip_headers(zf: zipfile.ZipFile) -> dict[str, NpyHeader]:
    """Every ``name.npy`` member's header, keyed by ``name``; each checked against the size
    the zip directory gives for the member, so a header cannot under-state what a member
    would inflate to. Only the first few hundred bytes of each member are inflated."""
    found: dict[str, NpyHeader] = {}
    for info in zf.infolist():
        if not info.filename.endswith(".npy"):
            raise NpyError(f"member {info.filename!r} is not a .npy array")
        with zf.open(info) as member:
            try:
                header = read_header(member)
            except NpyError as exc:
                raise NpyError(f"member {info.filename}: {exc}") from None
        if info.file_size != header.offset + header.nbytes:
            raise NpyError(f"member {info.filename} would inflate to {info.file_size} bytes, "
                           f"but its header says {header.describe()}")
        found[info.filename[:-len(".npy")]] = header
    return found


def _first(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:120]
