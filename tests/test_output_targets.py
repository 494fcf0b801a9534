"""Outputs never replace what isn't ours: a symlink's target is written and the link kept,
a FIFO or a device is written in place, ``--json -`` is standard output; a file that cannot
be replaced, ``report -o FILE`` and ``verify --keep-onnx FILE`` are one line and exit 2,
checked before any work; a full disk under ``.weights.h5`` is exit 2 with the old file kept.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest

from codenn_convert.checkpoints import files as checkpoint
from codenn_convert.errors import OutputError
from tests.conftest import run_cli_here
from tests.tiny_onnx import write_tiny_golden, write_tiny_onnx


@pytest.fixture(scope="module")
def tiny(module_tmp: Path) -> tuple[Path, Path]:
    return write_tiny_onnx(module_tmp / "tiny.onnx"), write_tiny_golden(module_tmp / "g.npz")


def _check(tiny: tuple[Path, Path], *extra: str) -> subprocess.CompletedProcess[str]:
    return run_cli_here("check", str(tiny[0]), "--golden", str(tiny[1]), *extra)


def _one_error_line(proc: subprocess.CompletedProcess[str], needle: str) -> None:
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and needle in lines[0], lines[0]


def _report(text: str) -> dict:
    data = json.loads(text)
    assert data["models"][0]["pairs"][0]["passed"]
    return data


def test_json_onto_a_symlink_writes_its_target(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    target = tmp_path / "real" / "report.json"
    target.parent.mkdir()
    target.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    proc = _check(tiny, "--json", str(link))
    assert proc.returncode == 0, proc.stderr
    assert link.is_symlink() and os.readlink(link) == str(target)
    _report(target.read_text())
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["link.json", "real", "report.json"]


def test_json_into_a_fifo_is_written_in_place(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    proc = _check(tiny, "--json", str(fifo))
    reader.join(timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    _report(got[0].decode())
    assert [p.name for p in tmp_path.iterdir()] == ["pipe"]


def test_json_onto_a_character_device_writes_through_it(tiny: tuple[Path, Path], tmp_path: Path
                                                         ) -> None:
    dev = tmp_path / "null"
    try:  # a private /dev/null (root only): the real one must never be at stake in a test
        os.mknod(dev, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("mknod needs root")
    proc = _check(tiny, "--json", str(dev))
    assert proc.returncode == 0, proc.stderr
    assert stat.S_ISCHR(dev.lstat().st_mode)
    assert [p.name for p in tmp_path.iterdir()] == ["null"]


def test_json_dash_is_stdout(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    proc = _check(tiny, "--json", "-")
    assert proc.returncode == 0, proc.stderr
    _report(proc.stdout)  # the table went to stderr, so stdout is the JSON alone
    assert "golden vs onnx:tiny.onnx" in proc.stderr
    assert not (Path.cwd() / "-").exists()
    # The move to stderr lasts one command: the next one in this process prints its table.
    proc = _check(tiny)
    assert proc.returncode == 0 and "golden vs onnx:tiny.onnx" in proc.stdout, proc.stderr


def test_an_immutable_output_is_refused_up_front(tiny: tuple[Path, Path], tmp_path: Path
                                                 ) -> None:
    out = tmp_path / "report.json"
    out.write_text("old")
    if subprocess.run(["chattr", "+i", str(out)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available here")
    try:
        proc = _check(tiny, "--json", str(out))
        _one_error_line(proc, "immutable")
        assert out.read_text() == "old"
        assert [p.name for p in tmp_path.iterdir()] == ["report.json"]
    finally:
        subprocess.run(["chattr", "-i", str(out)], check=True)


def test_a_refused_rename_is_an_output_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                             ) -> None:
    # Made immutable while we worked (or a file system that refuses): caught at the rename.
    dst = tmp_path / "out.json"
    dst.write_text("old")

    def refuse(src: object, dst: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OutputError, match="cannot replace .*Operation not permitted"), \
            checkpoint.atomic_output(dst) as tmp:
        tmp.write_text("new")
    assert dst.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_report_into_an_existing_file_is_refused(tmp_path: Path) -> None:
    shard = tmp_path / "shard.json"
    shard.write_text(json.dumps({"environment": {}, "models": []}))
    out = tmp_path / "reports"
    out.write_text("a file")
    proc = run_cli_here("report", "--from-json", str(shard), "-o", str(out))
    _one_error_line(proc, "is not a directory")
    assert out.read_text() == "a file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reports", "shard.json"]
    proc = run_cli_here("report", "alexnet", "-o", str(out))  # before any model runs
    _one_error_line(proc, "is not a directory")


def test_keep_onnx_into_an_existing_file_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "kept"
    out.write_text("a file")
    proc = run_cli_here("verify", "alexnet", "--keep-onnx", str(out), "--input-size", "64", "64")
    _one_error_line(proc, "--keep-onnx")
    assert "is not a directory" in proc.stderr and "build" not in proc.stderr
    assert out.read_text() == "a file" and [p.name for p in tmp_path.iterdir()] == ["kept"]


@pytest.fixture
def small_disk(tmp_path: Path) -> Path:
    """A real 8 MiB file system (tmpfs; root only)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=True)


def test_weights_h5_on_a_full_disk_is_exit_2_and_keeps_the_old_file(
    small_disk: Path, tmp_path: Path
) -> None:
    from codenn_convert.twins.init import realistic_state

    src = tmp_path / "r18.safetensors"
    checkpoint.save_torch_state(realistic_state("resnet18", seed=0), src)  # 45 MB
    dst = small_disk / "r18.weights.h5"
    dst.write_bytes(b"previous output")
    proc = run_cli_here("convert", "resnet18", str(src), str(dst))
    _one_error_line(proc, "no space left on the device")
    assert "Traceback" not in proc.stderr and proc.returncode != -11
    assert dst.read_bytes() == b"previous output"
    assert [p.name for p in small_disk.iterdir()] == ["r18.weights.h5"]


def test_weights_h5_written_from_memory_is_what_keras_wrote(tmp_path: Path) -> None:
    # The bytes go through our writer: Keras reads them back, and the attributes are there.
    import h5py
    import keras

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="fc")])
    path = checkpoint.save_keras_model_weights(model, tmp_path / "m.weights.h5",
                                               attrs={"codenn_source_dtypes": "{}"})
    other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="fc")])
    other.load_weights(str(path))
    for a, b in zip(model.get_weights(), other.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    with h5py.File(path) as f:
        assert f.attrs["codenn_source_dtypes"] == "{}"
    assert [p.name for p in tmp_path.iterdir()] == ["m.weights.h5"]
