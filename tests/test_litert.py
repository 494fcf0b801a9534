"""LiteRT (.tflite): export at every precision, verify, check, faults named at their layer,
bad files refused; all through the CLI. ResNet-18 at 64x64 keeps it cheap; the ResNet-50
acceptance check at full size is marked ``parity``."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from codenn_convert.export.litert_format import read_metadata
from tests.conftest import heavy_imports, max_rel, run_cli_here

SIZE = ("--input-size", "64", "64")
#: Planted fault: the gamma of this BatchNorm sign-flipped (a visible layer in LiteRT: the
#: conv before it is folded into it, and no activation is fused after it).
FAULT = "layer3.0.bn2"


def _ok(proc: object) -> None:
    assert proc.returncode == 0, proc.stdout + proc.stderr  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def files(module_tmp: Path) -> dict[str, Path]:
    """ResNet-18 checkpoints (clean, faulty) and their LiteRT exports."""
    from codenn_convert.checkpoints.files import save_torch_state
    from codenn_convert.twins.init import realistic_state

    d = module_tmp
    state = realistic_state("resnet18", seed=3)
    save_torch_state(state, d / "clean.safetensors")
    state[f"{FAULT}.weight"] = -state[f"{FAULT}.weight"]
    save_torch_state(state, d / "bad.safetensors")
    w = ("--weights", str(d / "clean.safetensors"))
    runs = {
        "fp32.tflite": ("--framework", "torch", *w),
        "fp32k.tflite": ("--framework", "keras", *w),
        "fp16.tflite": (*w, "--precision", "fp16", "--layout", "nchw"),
        "int8.tflite": (*w, "--precision", "int8"),
        "bad.tflite": ("--weights", str(d / "bad.safetensors")),
        "bad.int8.tflite": ("--weights", str(d / "bad.safetensors"), "--precision", "int8"),
    }
    for name, args in runs.items():
        _ok(run_cli_here("export", "resnet18", *SIZE, *args, "-o", str(d / name)))
    return {p.name: p for p in d.iterdir()}


def test_both_frameworks_give_the_same_file_with_its_metadata(files: dict[str, Path]) -> None:
    assert files["fp32.tflite"].read_bytes() == files["fp32k.tflite"].read_bytes()
    meta = read_metadata(files["fp32.tflite"])
    assert meta == {"codenn.model": "resnet18", "codenn.layout": "NHWC",
                    "codenn.precision": "fp32", "codenn.source": "clean.safetensors"}
    assert read_metadata(files["fp16.tflite"])["codenn.layout"] == "NCHW"
    int8 = read_metadata(files["int8.tflite"])
    assert int8["codenn.precision"] == "int8" and int8["codenn.calibration.samples"] == "16"


def test_interface_is_float32_with_a_resizable_batch(files: dict[str, Path]) -> None:
    from ai_edge_litert.interpreter import Interpreter

    for name, shape in [("fp32.tflite", [-1, 64, 64, 3]), ("fp16.tflite", [-1, 3, 64, 64]),
                        ("int8.tflite", [-1, 64, 64, 3])]:
        it = Interpreter(model_path=str(files[name]))
        (inp,), (out,) = it.get_input_details(), it.get_output_details()
        assert list(inp["shape_signature"]) == shape, name
        assert inp["dtype"] == np.float32 and out["dtype"] == np.float32, name
    # int8 is full-integer inside and a quarter of the float32 file.
    it = Interpreter(model_path=str(files["int8.tflite"]))
    kinds = {np.dtype(t["dtype"]) for t in it.get_tensor_details()}
    assert np.dtype(np.int8) in kinds
    assert files["int8.tflite"].stat().st_size <= 0.35 * files["fp32.tflite"].stat().st_size


def test_verify_judges_every_precision_and_check_replays_it(
        files: dict[str, Path], tmp_path: Path) -> None:
    js, golden = tmp_path / "v.json", tmp_path / "g.npz"
    proc = run_cli_here("verify", "resnet18", *SIZE, "--weights", str(files["clean.safetensors"]),
                   "--runtimes", "torch,keras,tflite", "--tflite", str(files["fp32.tflite"]),
                   "--tflite", str(files["fp16.tflite"]), "--tflite", str(files["int8.tflite"]),
                   "--json", str(js), "--save-golden", str(golden))
    _ok(proc)
    from codenn_convert.report import schema

    data = json.loads(js.read_text())
    jsonschema.validate(data, schema())
    (m,) = data["models"]
    assert m["inputs"].startswith("synthetic:")  # int8 is judged on image-like inputs
    pairs = {(p["a"], p["b"]): p for p in m["pairs"]}
    for ref in ("torch", "keras", "tflite"):  # every float32 runtime meets every file
        for f in ("fp32", "fp16", "int8"):
            assert (ref, f"tflite:{f}.tflite") in pairs
    for key in [("torch", "tflite"), ("torch", "tflite:fp32.tflite")]:
        assert pairs[key]["lossy"] is None and pairs[key]["max_rel"] <= 1e-5
    for f, floor in [("fp16", 35.0), ("int8", 20.0)]:
        lossy = pairs[("torch", f"tflite:{f}.tflite")]["lossy"]
        assert lossy["precision"] == f and lossy["passed"] and lossy["sqnr_db"] >= floor
    assert m["error_vs_float64"]["tflite"] <= 1e-5
    assert data["environment"]["ai_edge_litert"].startswith("2.3")
    # Every report form shows the LiteRT runtimes.
    _ok(run_cli_here("report", "--from-json", str(js), "-o", str(tmp_path / "rep")))
    for form in ("parity.json", "parity.md", "parity.html", "junit.xml"):
        text = (tmp_path / "rep" / form).read_text()
        for runtime in ("tflite:fp32.tflite", "tflite:fp16.tflite", "tflite:int8.tflite"):
            assert runtime in text, (form, runtime)
    for f in ("fp32", "fp16", "int8"):
        out = tmp_path / f"c{f}.json"
        _ok(run_cli_here("check", str(files[f"{f}.tflite"]), "--golden", str(golden), "--json",
                    str(out)))
        (c,) = json.loads(out.read_text())["models"][0]["pairs"]
        assert c["b"] == f"tflite:{f}.tflite" and c["passed"]
        assert (c["lossy"] is None) == (f == "fp32")
    watched = ("torch", "tensorflow", "keras")
    assert heavy_imports(["check", str(files["int8.tflite"]), "--golden", str(golden)],
                         watched) == []


@pytest.mark.parametrize("name", ["bad.tflite", "bad.int8.tflite"])
def test_a_planted_fault_is_named_at_its_layer(files: dict[str, Path], tmp_path: Path,
                                               name: str) -> None:
    js = tmp_path / "f.json"
    proc = run_cli_here("verify", "resnet18", *SIZE, "--weights", str(files["clean.safetensors"]),
                   "--runtimes", "torch", "--tflite", str(files[name]), "--json", str(js))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    (p,) = json.loads(js.read_text())["models"][0]["pairs"]
    assert not p["passed"] and p["first_divergent_layer"] == FAULT, p["layers"]
    names = [e["name"] for e in p["layers"]]
    assert names.index(FAULT) > 3  # the layers before it were compared, and were clean
    if name == "bad.int8.tflite":  # judged per layer by SQNR
        assert all(e["sqnr_db"] is not None for e in p["layers"])
        assert p["layers"][names.index(FAULT)]["sqnr_db"] < 8.0


def _other_interface(path: Path) -> Path:
    """A LiteRT file that maps a vector to a vector: not an image classifier."""
    import keras

    inp = keras.Input((10,))
    keras.Model(inp, keras.layers.Dense(4)(inp)).export(str(path), format="litert",
                                                        verbose=False)
    return path


def test_bad_files_are_one_line_and_exit_2(files: dict[str, Path], tmp_path: Path) -> None:
    whole = files["fp32.tflite"].read_bytes()
    (tmp_path / "trunc.tflite").write_bytes(whole[: len(whole) // 3])
    rng = np.random.default_rng(0)
    (tmp_path / "random.tflite").write_bytes(whole[:8] + rng.bytes(4096))
    cases = {
        "trunc.tflite": "not a loadable LiteRT model",
        "random.tflite": "not a loadable LiteRT model",
        "vector.tflite": "fits neither",
    }
    _other_interface(tmp_path / "vector.tflite")
    for name, message in cases.items():
        proc = run_cli_here("verify", "resnet18", *SIZE, "--runtimes", "torch", "--tflite",
                       str(tmp_path / name))
        assert proc.returncode == 2, (name, proc.stdout + proc.stderr)
        assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, name
    # A file for another input size (or layout) than the model is run at.
    proc = run_cli_here("verify", "resnet18", "--input-size", "96", "96", "--runtimes", "torch",
                   "--tflite", str(files["fp32.tflite"]))
    assert proc.returncode == 2 and "fits neither NHWC [N, 96, 96, 3]" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    out = tmp_path / "x.tflite"
    for args, message in [(("--layout", "chw"), "unknown layout"),
                          (("--format", "onnx"), "writes a .onnx file"),
                          (("--opset", "17"), "--opset is for ONNX")]:
        proc = run_cli_here("export", "resnet18", *SIZE, "-o", str(out), *args)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert not out.exists() and not list(tmp_path.glob(".codenn-partial*"))


@pytest.mark.parity
def test_resnet50_tflite_matches_the_torch_twin_at_batch_2(tmp_path: Path) -> None:
    """Acceptance: a torchvision-layout ResNet-50 checkpoint exported to .tflite gives the
    torch twin's (torchvision's module tree) logits within 1e-5 of the largest logit in
    LiteRT's interpreter, at a resized batch of 2."""
    import torch
    from ai_edge_litert.interpreter import Interpreter

    from codenn_convert.checkpoints.files import save_torch_state
    from codenn_convert.twins.build import torch_twin
    from codenn_convert.twins.init import realistic_state
    from codenn_convert.verification import seeded_batch

    state = realistic_state("resnet50", seed=5)
    save_torch_state(state, tmp_path / "resnet50.pth")
    out = tmp_path / "resnet50.tflite"
    _ok(run_cli_here("export", "resnet50", "--weights", str(tmp_path / "resnet50.pth"), "-o",
                str(out)))
    x = seeded_batch(2, (224, 224), seed=9)
    with torch.no_grad():
        ref = torch_twin("resnet50", state)(torch.from_numpy(x)).numpy()
    it = Interpreter(model_path=str(out))
    (inp,), (outp,) = it.get_input_details(), it.get_output_details()
    it.resize_tensor_input(inp["index"], [2, 224, 224, 3])
    it.allocate_tensors()
    it.set_tensor(inp["index"], np.ascontiguousarray(x.transpose(0, 2, 3, 1)))
    it.invoke()
    got = it.get_tensor(outp["index"])
    assert got.shape == (2, 1000)
    assert max_rel(ref, got) <= 1e-5
