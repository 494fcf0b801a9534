"""Atomic writes: every output file appears whole or not at all.

* :func:`ensure_writable` fails early, before any work, on a path that cannot be written;
* :func:`atomic_output` yields a temporary path beside the destination and renames it over
  the destination only on success;
* :func:`disk_full` tells a full disk from other failures, so that it is reported as bad
  input (exit 2) and not as our bug.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from codenn_convert.checkpoints import targets
from codenn_convert.errors import CodennError, OutputError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def ensure_writable(path: str | os.PathLike[str]) -> Path:
    """Fail early, before any work, if ``path`` cannot be created or replaced; the path
    written (a symlink's target; ``-`` and pipes/devices as given, see :mod:`.targets`)."""
    if targets.is_stream(path):
        if not targets.is_stdout(path) and not os.access(path, os.W_OK):
            raise OutputError(f"cannot write {path}: permission denied")
        return Path(path)
    dst = targets.resolve(path)
    parent = dst.parent
    if not parent.is_dir():
        raise OutputError(f"cannot write {dst}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise OutputError(f"cannot write {dst}: directory {parent} is not writable")
    if dst.is_dir():
        raise OutputError(f"cannot write {dst}: it is a directory")
    targets.check_replaceable(dst)
    return dst


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only on success.

    A failure leaves any existing file at ``path`` untouched and removes the temporary file.
    The temporary name keeps the full suffix (Keras insists on ``.weights.h5``). ``-``, a
    FIFO or a device is written in place, and a symlink's target is replaced (the link kept):
    :mod:`.targets`.
    """
    dst = ensure_writable(path)
    if targets.is_stream(dst):
        with targets.stream_output(dst, disk_full) as tmp:
            yield tmp
        return
    parent = dst.parent
    suffix = "".join(dst.suffixes[-2:]) if dst.name.endswith(".weights.h5") else dst.suffix
    # The name says who made it: a file left by `kill -9` (nothing can catch it) is ours.
    fd, tmp_name = tempfile.mkstemp(prefix=f".codenn-partial.{dst.stem}.", suffix=".tmp" + suffix,
                                    dir=parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp creates 0600; give the file the mode a plain open() would (or keep the
        # mode of the file it replaces), so outputs stay readable by the user's tools.
        os.chmod(tmp, dst.stat().st_mode & 0o7777 if dst.exists() else 0o666 & ~_umask())
        try:
            os.replace(tmp, dst)
        except PermissionError as exc:  # e.g. made immutable while we worked
            raise targets.replace_failed(exc, dst) from None
    except BaseException as exc:
        # Measured before the partial file goes. An interrupt stays an interrupt, and our
        # own errors already say what is wrong.
        ours = isinstance(exc, CodennError) or not isinstance(exc, Exception)
        full = None if ours else disk_full(exc, parent)
        tmp.unlink(missing_ok=True)
        if full is not None:
            raise full from exc
        raise


# Below this, a failed write is taken for a full disk: torch's zip writer reports a short
# write ("N requested and M written") without an errno.
_NEARLY_FULL = 16 * 2**20


def disk_full(error: BaseException | str, *folders: str | os.PathLike[str]) -> OutputError | None:
    """An :class:`OutputError` if ``error`` (an exception, or a child process's message) came
    from a full disk, else ``None``.

    ``folders`` are where the failed write went: one nearly full counts as the cause even when
    the error does not say so. Call this before removing the partial file, so the folder is
    measured as the write left it.
    """
    says_full = "No space left" in str(error) or (
        isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT))
    full = [(folder, free) for folder in folders
            if (free := _free_bytes(folder)) is not None and free < _NEARLY_FULL]
    if not (says_full or full):
        return None
    where = f" of {full[0][0]} ({full[0][1] / 2**20:.0f} MiB free)" if full else ""
    return OutputError(f"no space left on the device{where}; nothing was written: free some "
                       "space or write elsewhere (TMPDIR for intermediate files)")


def _free_bytes(folder: str | os.PathLike[str]) -> int | None:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None
