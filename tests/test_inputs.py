"""``--inputs FILE.npy``: the user's own batches, checked from the header before reading."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from codenn_convert.errors import UsageError
from codenn_convert.verification import verify_inputs
from codenn_convert.verification.inputs import load_npy, npy_header, npy_input_size
from tests.conftest import run_cli_here


def _save(path: Path, x: np.ndarray) -> Path:
    np.save(path, x)
    return path


def test_header_is_checked_before_the_data(tmp_path: Path) -> None:
    good = _save(tmp_path / "good.npy", np.zeros((2, 3, 70, 90), np.float32))
    assert npy_header(good)[0] == (2, 3, 70, 90)
    assert npy_input_size([good], None) == (70, 90)
    bad = {
        "f64.npy": np.zeros((2, 3, 70, 90), np.float64),
        "nhwc.npy": np.zeros((2, 70, 90, 3), np.float32),
        "three_d.npy": np.zeros((3, 70, 90), np.float32),
        "empty.npy": np.zeros((0, 3, 70, 90), np.float32),
        "objects.npy": np.array([{"a": 1}], dtype=object),
    }
    for name, x in bad.items():
        np.save(tmp_path / name, x, allow_pickle=True)
        with pytest.raises(UsageError, match="expected a float32 NCHW batch"):
            load_npy(tmp_path / name)
    cut = tmp_path / "cut.npy"
    cut.write_bytes(good.read_bytes()[:-100])
    with pytest.raises(UsageError, match="does not match its header"):
        npy_header(cut)
    (tmp_path / "junk.npy").write_bytes(b"\x00" * 64)
    with pytest.raises(UsageError, match="not a .npy file"):
        npy_header(tmp_path / "junk.npy")
    with pytest.raises(UsageError, match="not found"):
        npy_header(tmp_path / "missing.npy")


def test_sizes_must_agree(tmp_path: Path) -> None:
    a = _save(tmp_path / "a.npy", np.zeros((1, 3, 70, 90), np.float32))
    b = _save(tmp_path / "b.npy", np.zeros((1, 3, 64, 64), np.float32))
    with pytest.raises(UsageError, match="differ in H, W"):
        npy_input_size([a, b], None)
    with pytest.raises(UsageError, match="contradicts"):
        npy_input_size([a], (64, 64))
    assert npy_input_size([a], (70, 90)) == (70, 90)
    nan = np.zeros((1, 3, 70, 90), np.float32)
    nan[0, 0, 0, 0] = np.nan
    with pytest.raises(UsageError, match="finite"):
        load_npy(_save(tmp_path / "nan.npy", nan))


def test_a_batch_is_one_entry_at_its_own_size(tmp_path: Path) -> None:
    x = np.random.default_rng(5).standard_normal((3, 3, 67, 75)).astype(np.float32)
    path = _save(tmp_path / "mine.npy", x)
    results = verify_inputs("alexnet", inputs=[path], runtimes=("torch", "keras"))
    assert [r.inputs for r in results] == ["normal(0,1)", "npy:mine.npy"]
    assert results[0].input_shape == [2, 3, 67, 75]  # H, W from the file
    assert results[1].input_shape == [3, 3, 67, 75]
    assert all(r.passed for r in results)
    assert results[1].pairs[0].max_rel != results[0].pairs[0].max_rel  # a different batch


def test_cli_inputs_good_and_bad(tmp_path: Path) -> None:
    good = _save(tmp_path / "good.npy",
                 np.random.default_rng(1).standard_normal((2, 3, 64, 64)).astype(np.float32))
    js = tmp_path / "v.json"
    proc = run_cli_here("verify", "alexnet", "--inputs", str(good), "--runtimes", "torch,keras",
                   "--json", str(js))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    models = json.loads(js.read_text())["models"]
    assert [m["inputs"] for m in models] == ["normal(0,1)", "npy:good.npy"]
    nhwc = _save(tmp_path / "nhwc.npy", np.zeros((2, 64, 64, 3), np.float32))
    for argv, needle in ((["--inputs", str(nhwc)], "nhwc.npy: expected a float32 NCHW"),
                         (["--inputs", str(good), "--input-size", "70", "70"], "contradicts")):
        proc = run_cli_here("verify", "alexnet", *argv, "--runtimes", "torch,keras")
        assert proc.returncode == 2, proc.stdout + proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0], proc.stderr
