"""Golden files and ``codenn check``: record once with torch, replay in onnxruntime alone."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from codenn_convert.errors import CheckpointError
from codenn_convert.verification.golden import load_golden
from tests.conftest import heavy_imports, run_cli_here
from tests.test_verify_artifacts import _to_nhwc


@pytest.fixture(scope="module")
def recorded(module_tmp: Path) -> dict[str, Path]:
    """A verified AlexNet run at 64x64 with its golden file and both of our exports."""
    d = module_tmp
    proc = run_cli_here("verify", "alexnet", "--input-size", "64", "64", "--seed", "4",
                   "--keep-onnx", str(d), "--save-golden", str(d / "g.npz"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _to_nhwc(d / "alexnet.keras.onnx", d / "nhwc.onnx")
    model = onnx.load(str(d / "alexnet.torch.onnx"))
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    init = next(t for t in model.graph.initializer if t.name == conv.input[1])
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * np.float32(1.05),
                                          init.name))
    onnx.save(model, str(d / "scaled.onnx"))
    return {p.name: p for p in d.iterdir()}


def test_golden_file_holds_what_was_verified(recorded: dict[str, Path]) -> None:
    g = load_golden(recorded["g.npz"])
    assert g.model == "alexnet" and g.labels == ["normal(0,1)"] and g.rtol == 1e-5
    assert g.inputs[0].shape == (2, 3, 64, 64) and g.reference[0].shape == (2, 1000)
    assert g.exact[0].dtype == np.float64 and g.environment.get("torch")
    rel = np.abs(g.reference[0] - g.exact[0]).max() / np.abs(g.exact[0]).max()
    assert rel <= 1e-5


@pytest.mark.parametrize("name", ["alexnet.torch.onnx", "alexnet.keras.onnx", "nhwc.onnx"])
def test_check_passes_on_our_exports(recorded: dict[str, Path], tmp_path: Path,
                                     name: str) -> None:
    js = tmp_path / "c.json"
    proc = run_cli_here("check", str(recorded[name]), "--golden", str(recorded["g.npz"]),
                   "--json", str(js))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (m,) = json.loads(js.read_text())["models"]
    (p,) = m["pairs"]
    assert (p["a"], p["b"]) == ("golden", f"onnx:{name}") and p["passed"]
    assert p["max_rel"] <= 1e-5 and m["error_vs_float64"][f"onnx:{name}"] <= 1e-5


def test_check_fails_on_a_conv_scaled_by_five_percent(recorded: dict[str, Path],
                                                      tmp_path: Path) -> None:
    js = tmp_path / "c.json"
    proc = run_cli_here("check", str(recorded["scaled.onnx"]), "--golden", str(recorded["g.npz"]),
                   "--json", str(js))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    (m,) = json.loads(js.read_text())["models"]
    (p,) = m["pairs"]
    assert not p["passed"] and p["max_rel"] > 1e-3 and p["farther"] == "onnx:scaled.onnx"
    # A looser tolerance given on the command line is honoured.
    proc = run_cli_here("check", str(recorded["scaled.onnx"]), "--golden", str(recorded["g.npz"]),
                   "--rtol", "0.5")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_check_imports_no_framework(recorded: dict[str, Path]) -> None:
    argv = ["check", str(recorded["alexnet.keras.onnx"]), "--golden", str(recorded["g.npz"])]
    assert heavy_imports(argv, ("torch", "tensorflow", "keras", "tf2onnx")) == []


def test_damaged_or_foreign_golden_files(recorded: dict[str, Path], tmp_path: Path) -> None:
    junk = tmp_path / "junk.npz"
    junk.write_bytes(np.random.default_rng(0).bytes(300))
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, x=np.zeros(3))
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, meta=np.array([{"format": "codenn-golden"}], dtype=object))
    cut = tmp_path / "cut.npz"
    cut.write_bytes(recorded["g.npz"].read_bytes()[:2000])
    for path in (junk, foreign, pickled, cut):
        with pytest.raises(CheckpointError):
            load_golden(path)
        proc = run_cli_here("check", str(recorded["alexnet.torch.onnx"]), "--golden", str(path))
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1, proc.stderr
        assert path.name in lines[0]
    assert zipfile.is_zipfile(recorded["g.npz"])
    proc = run_cli_here("check", str(recorded["alexnet.torch.onnx"]), "--golden",
                   str(recorded["g.npz"]), "--rtol", "nan")
    assert proc.returncode == 2 and "positive finite" in proc.stderr
