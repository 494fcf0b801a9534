"""Error types. Anything deriving from :class:`CodennError` is a user-facing, one-line error."""

from __future__ import annotations

import errno
import os
import shutil


class CodennError(Exception):
    """A problem with the user's input; the CLI prints it on one line and exits with 2."""

    exit_code = 2


class UsageError(CodennError):
    """Bad arguments: unknown model, impossible input size, unknown format."""


class CheckpointError(CodennError):
    """A checkpoint that cannot be read, is unsafe, or does not match the architecture."""


class OutputError(CodennError):
    """An output path that cannot be written."""


def _preview(items: list[str], limit: int = 6) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" (+{len(items) - limit} more)" if len(items) > limit else "")


def key_mismatch(model: str, missing: list[str], unexpected: list[str]) -> CheckpointError:
    """Build the error for a checkpoint whose keys are not the model's."""
    # Parameters say more about the architecture than BatchNorm buffers: show them first.
    def _rank(keys: list[str]) -> list[str]:
        buffers = ("num_batches_tracked", "running_mean", "running_var")
        return sorted(keys, key=lambda k: k.rsplit(".", 1)[-1] in buffers)

    missing, unexpected = _rank(missing), _rank(unexpected)
    parts = []
    if missing:
        parts.append(f"missing keys: {_preview(missing)}")
    if unexpected:
        parts.append(f"unexpected keys: {_preview(unexpected)}")
    return CheckpointError(
        f"checkpoint does not match {model} ({len(missing)} missing, {len(unexpected)} "
        f"unexpected): " + "; ".join(parts)
    )


def shape_mismatch(key: str, expected: tuple[int, ...], found: tuple[int, ...]) -> CheckpointError:
    """Build the error for one tensor of the wrong shape."""
    return CheckpointError(
        f"shape mismatch for {key}: expected {tuple(expected)}, found {tuple(found)}"
    )


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
