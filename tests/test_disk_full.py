"""A full disk is the user's to fix: one line naming where, exit 2, the old output intact."""

from __future__ import annotations

import errno
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from codenn_convert import errors
from codenn_convert.checkpoints import atomic
from codenn_convert.checkpoints import files as checkpoint
from codenn_convert.errors import OutputError
from tests.conftest import ROOT

# torch's zip writer says only this when the disk fills (no errno); seen in CI.
SHORT_WRITE = "OSError: 36864 requested and 23360 written"


@pytest.fixture
def nearly_full(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(atomic, "_free_bytes", lambda folder: 2**20)


def test_enospc_is_a_full_disk_wherever_it_came_from() -> None:
    full = atomic.disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert isinstance(full, OutputError) and "no space left" in str(full)
    assert atomic.disk_full(OSError(errno.EACCES, "Permission denied")) is None
    assert atomic.disk_full(RuntimeError(SHORT_WRITE), "/") is None  # plenty free here


def test_a_short_write_on_a_nearly_full_folder_names_it(nearly_full: None, tmp_path: Path) -> None:
    full = atomic.disk_full(SHORT_WRITE, tmp_path)
    assert full is not None and f"of {tmp_path} (1 MiB free)" in str(full)


def test_atomic_output_turns_a_failed_write_on_a_full_disk_into_an_output_error(
    nearly_full: None, tmp_path: Path
) -> None:
    dst = tmp_path / "out.bin"
    dst.write_bytes(b"old")
    with pytest.raises(OutputError, match="no space left"), atomic.atomic_output(dst) as tmp:
        tmp.write_bytes(b"partial")
        raise RuntimeError(SHORT_WRITE)
    assert dst.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


def test_an_interrupt_stays_an_interrupt_on_a_full_disk(nearly_full: None, tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt), atomic.atomic_output(tmp_path / "x.bin"):
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


# The CLI, with safetensors' writer failing the way a full disk makes it fail.
_SHIM = """
import errno, sys
import safetensors.numpy as st

def save_file(tensors, filename, metadata=None):
    with open(filename, "wb") as f:
        f.write(b"x" * 4096)
    raise OSError(errno.ENOSPC, "No space left on device")

st.save_file = save_file
sys.argv[0] = "codenn"
from codenn_convert.cli import main
main()
"""


def test_convert_on_a_full_disk_is_one_line_and_exit_2(
    alexnet_state: dict[str, np.ndarray], tmp_path: Path
) -> None:
    src, dst = tmp_path / "alexnet.pth", tmp_path / "alexnet.safetensors"
    checkpoint.save_torch_state(alexnet_state, src)
    dst.write_bytes(b"previous output")
    proc = subprocess.run([sys.executable, "-c", _SHIM, "convert", str(src), str(dst)],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("error: no space left on the device"), proc.stderr
    assert "internal error" not in proc.stderr and "Traceback" not in proc.stderr
    assert dst.read_bytes() == b"previous output"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alexnet.pth", "alexnet.safetensors"]


def test_our_own_errors_are_kept_on_a_nearly_full_disk(nearly_full: None, tmp_path: Path
                                                       ) -> None:
    with pytest.raises(errors.CheckpointError, match="bad tensor"), \
            atomic.atomic_output(tmp_path / "x.bin"):
        raise errors.CheckpointError("bad tensor")
    assert list(tmp_path.iterdir()) == []
