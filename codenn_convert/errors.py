"""Error types. Anything deriving from :class:`CodennError` is a user-facing, one-line error."""

from __future__ import annotations

from codenn_convert.interface import NUM_BATCHES_TRACKED


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
        buffers = (NUM_BATCHES_TRACKED, "running_mean", "running_var")
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


