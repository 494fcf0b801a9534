"""The CLI through real subprocesses: exit codes, one-line errors, no framework at start-up."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from codenn_convert.checkpoints import files as checkpoint
from tests.conftest import heavy_imports, run_cli, run_cli_here


def _one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr  # one line, no traceback
    assert lines[0].startswith("error: ")
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.mark.parametrize("argv", [["--help"], ["list"]])
def test_help_and_list_import_no_framework(argv: list[str]) -> None:
    assert heavy_imports(argv, ("torch", "tensorflow", "keras", "onnx", "onnxruntime")) == []


def test_version_from_outside_the_checkout(tmp_path: Path) -> None:
    """The installed console script works from any directory (not just the repo root)."""
    from codenn_convert import __version__

    exe = Path(sys.executable).with_name("codenn")
    proc = subprocess.run([str(exe), "--version"], capture_output=True, text=True,
                          cwd=tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"codenn-convert {__version__}"


def test_list_shows_models_params_and_size() -> None:
    proc = run_cli_here("list")
    assert proc.returncode == 0
    assert "alexnet" in proc.stdout and "61,100,840" in proc.stdout and "224x224" in proc.stdout


def test_console_script_exists() -> None:
    exe = Path(sys.executable).with_name("codenn")
    proc = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "convert" in proc.stdout


def test_unknown_model() -> None:
    _one_line_error(run_cli_here("verify", "alexnett"), "unknown model 'alexnett'", "alexnet")


def test_too_small_input_size_before_any_work(tmp_path: Path) -> None:
    out = tmp_path / "x.onnx"
    proc = run_cli_here("export", "alexnet", "--input-size", "32", "32", "-o", str(out))
    _one_line_error(proc, "minimum is 63x63")
    assert not out.exists()


@pytest.fixture(scope="module")
def ckpts(module_tmp: Path) -> dict[str, Path]:
    from codenn_convert.twins.init import realistic_state

    d = module_tmp
    state = realistic_state("alexnet", seed=1)
    torch.save({k: torch.from_numpy(v) for k, v in state.items()}, d / "alexnet.pth")
    bad_shape = {**state, "features.3.weight": np.zeros((192, 64, 3, 3), np.float32)}
    checkpoint.save_torch_state(bad_shape, d / "bad_shape.safetensors")
    r18 = realistic_state("resnet18", seed=1)
    checkpoint.save_torch_state(r18, d / "resnet18.safetensors")
    cut = (d / "alexnet.pth").read_bytes()
    (d / "truncated.pth").write_bytes(cut[: len(cut) // 2])
    return {"pth": d / "alexnet.pth", "bad_shape": d / "bad_shape.safetensors",
            "resnet18": d / "resnet18.safetensors", "truncated": d / "truncated.pth"}


def test_convert_round_trip_via_cli(ckpts: dict[str, Path], tmp_path: Path) -> None:
    h5, back = tmp_path / "a.weights.h5", tmp_path / "back.pt"
    assert run_cli_here("convert", "alexnet", str(ckpts["pth"]), str(h5)).returncode == 0
    proc = run_cli_here("convert", "alexnet", str(h5), str(back))
    assert proc.returncode == 0, proc.stderr
    a, b = checkpoint.load_torch_state(ckpts["pth"]), checkpoint.load_torch_state(back)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(
    ("src", "needles"),
    [
        ("resnet18", ["does not match alexnet", "missing keys: features.0.weight",
                      "unexpected keys:", "conv1.weight"]),
        ("bad_shape", ["features.3.weight", "expected (192, 64, 5, 5)", "found (192, 64, 3, 3)"]),
        ("truncated", ["not a readable torch checkpoint"]),
    ],
)
def test_bad_checkpoints_exit_2_and_keep_destination(ckpts: dict[str, Path], tmp_path: Path,
                                                     src: str, needles: list[str]) -> None:
    dst = tmp_path / "out.weights.h5"
    dst.write_bytes(b"keep me")
    _one_line_error(run_cli_here("convert", "alexnet", str(ckpts[src]), str(dst)), *needles)
    assert dst.read_bytes() == b"keep me"
    assert [p.name for p in tmp_path.iterdir()] == ["out.weights.h5"]


def test_malicious_pickle_is_refused_via_cli(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    code = (
        "import os, torch\n"
        "class E:\n    def __reduce__(self):\n"
        f"        return (os.system, ('touch {marker}',))\n"
        f"torch.save({{'features.0.weight': E()}}, {str(evil)!r})\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    _one_line_error(run_cli_here("convert", "alexnet", str(evil), str(tmp_path / "x.weights.h5")),
                    "refused to load")
    assert not marker.exists()


def test_unwritable_output(ckpts: dict[str, Path], tmp_path: Path) -> None:
    proc = run_cli_here("convert", "alexnet", str(ckpts["pth"]), str(tmp_path / "nope" / "x.pt"))
    _one_line_error(proc, "cannot write", "does not exist")


def test_debug_shows_the_traceback() -> None:
    proc = run_cli("--debug", "verify", "alexnett")  # the interpreter prints the traceback
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_export_torch_and_keras_share_one_interface(tmp_path: Path) -> None:
    for fw in ("torch", "keras"):
        out = tmp_path / f"{fw}.onnx"
        proc = run_cli_here("export", "alexnet", "--framework", fw, "--input-size", "67", "99",
                       "-o", str(out))
        assert proc.returncode == 0, proc.stderr
        model = onnx.load(str(out))
        onnx.checker.check_model(model)
        (inp,), (outp,) = model.graph.input, model.graph.output
        dims = [d.dim_value or d.dim_param for d in inp.type.tensor_type.shape.dim]
        assert inp.name == "input" and outp.name == "logits"
        assert isinstance(dims[0], str) and dims[1:] == [3, 67, 99]


def test_verify_passes_and_writes_json(tmp_path: Path) -> None:
    js = tmp_path / "v.json"
    proc = run_cli_here("verify", "alexnet", "--input-size", "95", "71", "--batch", "3", "--json",
                   str(js))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(js.read_text())
    (m,) = data["models"]
    assert m["input_shape"] == [3, 3, 95, 71] and m["passed"]
    assert len(m["pairs"]) == 6 and all(p["max_rel"] <= 1e-5 for p in m["pairs"])


def test_verify_exits_1_on_parity_failure(tmp_path: Path) -> None:
    """float32 runtimes differ by ~1e-6; a 1e-12 tolerance must fail, with exit 1."""
    js = tmp_path / "v.json"
    proc = run_cli_here("verify", "alexnet", "--input-size", "63", "63", "--rtol", "1e-12",
                   "--json", str(js))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "FAIL" in proc.stdout
    assert not json.loads(js.read_text())["models"][0]["passed"]
