"""Where an output really goes: standard output, a pipe or device, a symlink's target, or a
regular file that we may replace.

The atomic writer (:func:`codenn_convert.checkpoint.atomic_output`) renames a temporary file
over its destination. That is right for a regular file and wrong for everything else: a
rename would replace a symlink, a FIFO or ``/dev/stdout`` itself with a regular file. So:

* ``-`` is standard output;
* a symlink is followed, its target replaced atomically, and the link kept;
* a FIFO or a character device is written in place (no temporary file beside it, no rename);
* a regular file that cannot be replaced (``chattr +i``, append-only) is refused up front.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import stat
import struct
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from codenn_convert.errors import OutputError

#: The path that means standard output (``--json -``).
STDOUT = "-"
# Linux inode flags (linux/fs.h): a file with either cannot be replaced, not even by root.
_FS_IOC_GETFLAGS = 0x80086601
_IMMUTABLE_FL, _APPEND_FL = 0x10, 0x20


def is_stdout(path: str | os.PathLike[str]) -> bool:
    return os.fspath(path) == STDOUT


def is_stream(path: str | os.PathLike[str]) -> bool:
    """Standard output, or an existing file that is neither regular nor a directory (a FIFO,
    a character device, a socket): written in place, never renamed over."""
    if is_stdout(path):
        return True
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def resolve(path: str | os.PathLike[str]) -> Path:
    """``path``, or the file a symlink at ``path`` points to (so the link survives)."""
    p = Path(path)
    return Path(os.path.realpath(p)) if p.is_symlink() else p


def _inode_flags(path: Path) -> int:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return 0
    try:
        buf = fcntl.ioctl(fd, _FS_IOC_GETFLAGS, struct.pack("i", 0))
        return int(struct.unpack("i", buf)[0])
    except OSError:  # a file system without inode flags
        return 0
    finally:
        os.close(fd)


def check_replaceable(dst: Path) -> None:
    """Refuse, before any work, a regular file that a rename cannot replace."""
    if dst.is_file() and _inode_flags(dst) & (_IMMUTABLE_FL | _APPEND_FL):
        raise OutputError(f"cannot replace {dst}: the file is immutable or append-only "
                          f"(chattr +i/+a); write elsewhere")


def check_directory(path: str | os.PathLike[str], what: str) -> Path:
    """An output folder (``report -o``, ``--keep-onnx``): refused up front when it is an
    existing non-directory or its nearest existing parent is not writable."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise OutputError(f"{what} {p} is not a directory (it is an existing file)")
    existing = next(q for q in (p, *p.parents) if q.exists() or q == Path(q.anchor))
    if existing.exists() and not existing.is_dir():
        raise OutputError(f"{what} {p}: {existing} is a file, not a directory")
    if not os.access(existing, os.W_OK):
        raise OutputError(f"{what} {p}: {existing} is not writable")
    return p


def replace_failed(exc: OSError, dst: Path) -> OutputError:
    """The one-line error for a rename that the file system refused."""
    return OutputError(f"cannot replace {dst}: {exc.strerror or exc}; write elsewhere")


@contextlib.contextmanager
def stream_output(dst: str | os.PathLike[str],
                  disk_full: Callable[[OSError, Path], OutputError | None]) -> Iterator[Path]:
    """Yield a temporary path (in the temp folder); on success copy its bytes into ``dst``
    in place (standard output for ``-``). Writers that need a path (torch.save, h5py) work
    unchanged; the temporary file is always removed. ``disk_full`` names a failed write's
    cause when it was a full disk (the caller's, so this module imports no writer)."""
    fd, name = tempfile.mkstemp(prefix=".codenn-partial.", suffix=".tmp"
                                + "".join(Path(dst).suffixes[-2:]))
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with tmp.open("rb") as src:
            if is_stdout(dst):
                sys.stdout.flush()
                shutil.copyfileobj(src, sys.stdout.buffer)
                sys.stdout.buffer.flush()
            else:
                with open(dst, "wb") as out:
                    shutil.copyfileobj(src, out)
    except OSError as exc:
        full = disk_full(exc, tmp.parent)
        if full is not None:
            raise full from exc
        raise OutputError(f"cannot write {dst}: {exc.strerror or exc}") from None
    finally:
        tmp.unlink(missing_ok=True)
