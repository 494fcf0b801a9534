"""Reduced precision in the verifier (issue 12, verify side), through the CLI: our ONNX
exports converted to fp16/int8 as extra runtimes, a user's fp16/int8 file detected, lossy
pairs judged by SQNR/cosine/top-k with per-layer SQNR, a planted fault named."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest

from codenn_convert import report as rep
from codenn_convert.verification.layers import LayerError, sqnr_drop
from codenn_convert.verification.lossy import DEFAULT_THRESHOLDS
from tests.conftest import run_cli_here

SIZE = ("--input-size", "64", "64")


def _ok(proc: Any, code: int = 0) -> None:
    assert proc.returncode == code, proc.stdout[-3000:] + proc.stderr[-3000:]


def _pairs(path: Path) -> dict[str, dict[str, Any]]:
    data = json.loads(path.read_text())
    jsonschema.validate(data, rep.schema(), cls=jsonschema.Draft202012Validator)
    [model] = data["models"]
    return {f"{p['a']} vs {p['b']}": p for p in model["pairs"]}


# --------------------------------------------------------------------------- no models


class _R:
    def __init__(self, name: str, precision: str = "fp32", reference: str | None = None):
        self.name, self.precision, self.reference = name, precision, reference


def test_lossy_runners_pair_with_their_source_or_every_float32_runner() -> None:
    from codenn_convert.verification import pair_order

    runners = [_R("torch"), _R("onnx-torch"), _R("onnx-torch-fp16", "fp16", "onnx-torch"),
               _R("onnx-torch-int8", "int8", "onnx-torch"), _R("onnx:user.onnx", "int8")]
    assert pair_order(runners) == [  # type: ignore[arg-type]
        ("torch", "onnx-torch"), ("torch", "onnx:user.onnx"),
        ("onnx-torch", "onnx-torch-fp16"), ("onnx-torch", "onnx-torch-int8"),
        ("onnx-torch", "onnx:user.onnx")]


def test_precision_is_lost_where_sqnr_falls_most() -> None:
    layers = [LayerError("a", 0.0, 70.0), LayerError("b", 0.0, 65.0),
              LayerError("c", 0.0, 30.0), LayerError("d", 0.0, 32.0)]
    assert sqnr_drop(layers) == ("c", 35.0)
    assert sqnr_drop([LayerError("x", 0.0, float("-inf"))]) == ("x", None)


# --------------------------------------------------------------------------- through the CLI


def test_verify_precision_adds_lossy_runtimes_judged_by_sqnr(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    # Batch 8: top-5 overlap is a mean over samples, and at batch 2 one near-tie of this
    # random-weight 64x64 net is 0.1 of it (onnx-keras-int8 measured 0.80 at batch 2, 0.875
    # at batch 8; the floor is 0.8).
    _ok(run_cli_here("verify", "resnet18", *SIZE, "--batch", "8", "--precision", "fp16,int8",
                "--json", str(out)))
    pairs = _pairs(out)
    for side in ("onnx-torch", "onnx-keras"):
        for prec in ("fp16", "int8"):
            p = pairs[f"{side} vs {side}-{prec}"]
            lossy = p["lossy"]
            assert lossy["precision"] == prec and lossy["passed"] and p["passed"]
            floor = DEFAULT_THRESHOLDS[prec]  # type: ignore[index]
            assert lossy["sqnr_db"] >= floor.min_sqnr_db
            assert lossy["thresholds"]["min_sqnr_db"] == floor.min_sqnr_db
            assert 0.0 <= lossy["top5"] <= 1.0 and lossy["cosine"] >= floor.min_cosine
            # Per-layer SQNR of every mapped layer the pair's graphs both keep.
            assert len(p["layers"]) >= 20
            assert all(isinstance(e["sqnr_db"], float) for e in p["layers"])
            assert lossy["precision_lost_at"] in {e["name"] for e in p["layers"]}
            assert p["first_divergent_layer"] is None
    # fp16 loses far less than int8; float32 pairs keep the 1e-5 rule, no lossy block.
    assert (pairs["onnx-torch vs onnx-torch-fp16"]["lossy"]["sqnr_db"]
            > pairs["onnx-torch vs onnx-torch-int8"]["lossy"]["sqnr_db"] + 15)
    assert pairs["torch vs keras"]["lossy"] is None
    assert pairs["torch vs keras"]["max_rel"] <= 1e-5
    assert "onnx-torch-fp16 vs onnx-torch-int8" not in pairs
    assert "torch vs onnx-torch-fp16" not in pairs  # compared with its source only
    # The reports render it: SQNR plot in HTML, the lossy table in Markdown.
    _ok(run_cli_here("report", "--from-json", str(out), "-o", str(tmp_path / "rep")))
    html = (tmp_path / "rep" / "parity.html").read_text()
    assert "Per-layer SQNR of lossy pairs" in html and 'alt="per-layer SQNR' in html
    md = (tmp_path / "rep" / "parity.md").read_text()
    assert "| onnx-torch vs onnx-torch-int8 | int8 |" in md


@pytest.fixture(scope="module")
def user_files(module_tmp: Path) -> dict[str, Path]:
    """fp16 and int8 files exported by `codenn export`, the fp16 one without metadata (so
    its precision can only come from its graph)."""
    import onnx

    d = module_tmp
    files = {}
    for prec in ("fp16", "int8"):
        files[prec] = d / f"r18.{prec}.onnx"
        _ok(run_cli_here("export", "resnet18", "-o", str(files[prec]), *SIZE, "--precision", prec))
    model = onnx.load(str(files["fp16"]))
    del model.metadata_props[:]
    onnx.save(model, str(files["fp16"]))
    return files


def test_a_users_fp16_and_int8_files_are_detected_and_judged_as_lossy(
        user_files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "u.json"
    _ok(run_cli_here("verify", "resnet18", *SIZE, "--runtimes", "torch", "--onnx",
                str(user_files["fp16"]), "--onnx", str(user_files["int8"]), "--json", str(out)))
    pairs = _pairs(out)
    assert set(pairs) == {"torch vs onnx:r18.fp16.onnx", "torch vs onnx:r18.int8.onnx"}
    for prec in ("fp16", "int8"):
        p = pairs[f"torch vs onnx:r18.{prec}.onnx"]
        assert p["lossy"]["precision"] == prec and p["passed"]
        assert p["max_rel"] > 1e-5  # it would fail the float32 rule
        assert p["layers"] and all(e["sqnr_db"] is not None for e in p["layers"])


def test_lossy_thresholds_can_be_overridden(user_files: dict[str, Path], tmp_path: Path
                                            ) -> None:
    out = tmp_path / "o.json"
    proc = run_cli_here("verify", "resnet18", *SIZE, "--runtimes", "torch", "--onnx",
                   str(user_files["fp16"]), "--min-sqnr", "200", "--json", str(out))
    _ok(proc, 1)
    [p] = _pairs(out).values()
    assert p["lossy"]["thresholds"]["min_sqnr_db"] == 200 and not p["lossy"]["passed"]
    assert "SQNR" in proc.stdout and "(min 200)" in proc.stdout


def _negate_conv(src: Path, dst: Path) -> Path:
    """``src`` (fp16) with layer1.0.conv2's weight negated: a planted fault."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(src))
    [weight] = [t for t in model.graph.initializer if t.name == "layer1.0.conv2.weight"]
    assert weight.data_type == onnx.TensorProto.FLOAT16
    weight.CopyFrom(numpy_helper.from_array(-numpy_helper.to_array(weight), weight.name))
    onnx.save(model, str(dst))
    return dst


def test_a_planted_fault_in_an_fp16_file_is_named(user_files: dict[str, Path],
                                                  tmp_path: Path) -> None:
    faulty = _negate_conv(user_files["fp16"], tmp_path / "faulty.fp16.onnx")
    out = tmp_path / "f.json"
    proc = run_cli_here("verify", "resnet18", *SIZE, "--runtimes", "torch", "--onnx", str(faulty),
                   "--json", str(out))
    _ok(proc, 1)
    [p] = _pairs(out).values()
    assert p["lossy"]["precision"] == "fp16" and not p["passed"]
    # The conv's output is its folded BatchNorm's in the torch export: bn2 is where it shows.
    assert p["first_divergent_layer"] == "layer1.0.bn2"
    by_name = {e["name"]: e["sqnr_db"] for e in p["layers"]}
    assert by_name["layer1.0.bn1"] > 40 > 0 > by_name["layer1.0.bn2"]
    assert "first layer below" in proc.stdout and "layer1.0.bn2" in proc.stdout


@pytest.mark.parametrize(("args", "needle"), [
    (("--precision", "fp8"), "unknown precision 'fp8'"),
    (("--precision", "fp16,bf16"), "unknown precision 'bf16'"),
    (("--precision", "fp16", "--runtimes", "torch,keras"), "keep onnx-torch or onnx-keras"),
    (("--precision", "fp16", "--min-sqnr", "nan"), "bad lossy threshold"),
])
def test_bad_precision_arguments_are_one_line_errors(args: tuple[str, ...], needle: str
                                                      ) -> None:
    proc = run_cli_here("verify", "resnet18", *SIZE, *args)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], proc.stderr


def test_lossy_inputs_are_image_like() -> None:
    from codenn_convert.verification.run import _lossy_inputs

    x = np.zeros((2, 3, 8, 8), np.float32)
    [(label, batch), kept] = _lossy_inputs([("normal(0,1)", x), ("npy:a.npy", x)], seed=3)
    assert label == "synthetic:seed 4" and batch.shape == x.shape and batch.std() > 0.1
    assert kept[0] == "npy:a.npy" and kept[1] is x


def test_quantiser_nodes_belong_to_no_layer() -> None:
    """QDQ nodes are named after the tensor they quantise, which in a tf2onnx graph may
    carry another layer's scope: they must not make that layer's output the wrong tensor."""
    from onnx import TensorProto, helper

    from codenn_convert.verification.matching import MappedLayer
    from codenn_convert.verification.onnx_scopes import find_layer_tensors

    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="A_1/Relu"),
        helper.make_node("Relu", ["a"], ["b"], name="B_1/Relu"),
        helper.make_node("QuantizeLinear", ["b", "s", "z"], ["q"], name="A_1/b_QuantizeLinear"),
        helper.make_node("DequantizeLinear", ["q", "s", "z"], ["dq"],
                         name="A_1/b_DequantizeLinear"),
        helper.make_node("Relu", ["dq"], ["y"], name="C_1/Relu"),
    ]
    info = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 4]) for n in ("x", "y")]
    inits = [helper.make_tensor("s", TensorProto.FLOAT, [], [0.1]),
             helper.make_tensor("z", TensorProto.UINT8, [], [0])]
    graph = helper.make_graph(nodes, "g", [info[0]], [info[1]], inits)
    layers = [MappedLayer(n, (4,)) for n in ("A", "B", "C")]
    found, flavour = find_layer_tensors(graph, layers)
    assert flavour == "tf2onnx" and found == {"A": "a", "B": "b", "C": "y"}


def test_a_fault_planted_before_quantisation_is_named_in_the_int8_file(tmp_path: Path
                                                                       ) -> None:
    import onnx
    from onnx import numpy_helper

    from codenn_convert.export.calibration import load_calibration
    from codenn_convert.export.precision import to_int8

    fp32 = tmp_path / "r18.onnx"
    _ok(run_cli_here("export", "resnet18", "-o", str(fp32), *SIZE))
    model = onnx.load(str(fp32))
    [weight] = [t for t in model.graph.initializer if t.name == "layer2.0.conv1.weight"]
    weight.CopyFrom(numpy_helper.from_array(-numpy_helper.to_array(weight), weight.name))
    onnx.save(model, str(fp32))
    faulty = tmp_path / "faulty.int8.onnx"
    to_int8(fp32, faulty, load_calibration(None, (64, 64)))
    out = tmp_path / "q.json"
    _ok(run_cli_here("verify", "resnet18", *SIZE, "--runtimes", "torch", "--onnx", str(faulty),
                "--json", str(out)), 1)
    [p] = _pairs(out).values()
    assert p["lossy"]["precision"] == "int8" and not p["passed"]
    assert p["first_divergent_layer"] == "layer2.0.bn1"
    # The layer fails the pair (-6 dB: the error is twice the signal) whatever the logits do.
    by_name = {e["name"]: e["sqnr_db"] for e in p["layers"]}
    assert by_name["layer2.0.bn1"] < 0 < p["lossy"]["layer_min_sqnr_db"] < by_name["layer1.1.bn2"]


# --------------------------------------------------------------------------- codenn check


@pytest.fixture(scope="module")
def goldens(user_files: dict[str, Path], module_tmp: Path) -> dict[str, Path]:
    """``lossy``: recorded beside the user's int8 file (image-like inputs); ``mixed``: a
    float32 run on N(0,1) noise plus an image-like ``.npy`` batch."""
    from codenn_convert.export.calibration import synthetic_images

    lossy, mixed, npy = (module_tmp / n for n in ("lossy.npz", "mixed.npz", "imgs.npy"))
    _ok(run_cli_here("verify", "resnet18", *SIZE, "--runtimes", "torch", "--onnx",
                str(user_files["int8"]), "--save-golden", str(lossy)))
    np.save(npy, synthetic_images(2, (64, 64), seed=7))
    _ok(run_cli_here("verify", "resnet18", "--runtimes", "torch,onnx-torch", "--inputs", str(npy),
                "--save-golden", str(mixed)))
    return {"lossy": lossy, "mixed": mixed}


def _check(onnx_file: Path, golden: Path, js: Path, *args: str) -> tuple[Any, list[Any]]:
    proc = run_cli_here("check", str(onnx_file), "--golden", str(golden), "--json", str(js), *args)
    models = json.loads(js.read_text())["models"] if js.exists() else []
    return proc, [p for m in models for p in m["pairs"]]


@pytest.mark.parametrize("prec", ["fp16", "int8"])
def test_check_judges_a_reduced_precision_file_by_its_floors(
        prec: str, user_files: dict[str, Path], goldens: dict[str, Path], tmp_path: Path) -> None:
    proc, [p] = _check(user_files[prec], goldens["lossy"], tmp_path / "c.json")
    _ok(proc)
    assert p["lossy"]["precision"] == prec and p["passed"]
    assert p["lossy"]["sqnr_db"] >= DEFAULT_THRESHOLDS[prec].min_sqnr_db  # type: ignore[index]
    assert p["max_rel"] > 1e-5  # the float32 rule would have failed it


def test_check_fails_a_faulty_fp16_file_and_honours_raised_floors(
        user_files: dict[str, Path], goldens: dict[str, Path], tmp_path: Path) -> None:
    faulty = _negate_conv(user_files["fp16"], tmp_path / "faulty.fp16.onnx")
    proc, [p] = _check(faulty, goldens["lossy"], tmp_path / "f.json")
    _ok(proc, 1)
    assert not p["lossy"]["passed"] and p["lossy"]["sqnr_db"] < 35
    proc, [p] = _check(user_files["fp16"], goldens["lossy"], tmp_path / "r.json",
                       "--min-sqnr", "200")
    _ok(proc, 1)
    assert p["lossy"]["thresholds"]["min_sqnr_db"] == 200 and "(min 200)" in proc.stdout


def test_check_leaves_noise_out_of_an_int8_verdict(
        user_files: dict[str, Path], goldens: dict[str, Path], tmp_path: Path) -> None:
    proc, pairs = _check(user_files["int8"], goldens["mixed"], tmp_path / "m.json")
    _ok(proc)
    assert [p["lossy"]["precision"] for p in pairs] == ["int8"]  # the .npy batch only
    assert "note: int8: 1 N(0,1) input batch left out" in proc.stderr
    # fp16 is judged on noise too: both batches.
    proc, pairs = _check(user_files["fp16"], goldens["mixed"], tmp_path / "h.json")
    _ok(proc)
    assert len(pairs) == 2 and all(p["passed"] for p in pairs)


def test_check_refuses_to_judge_int8_on_noise_alone(user_files: dict[str, Path],
                                                    tmp_path: Path) -> None:
    from codenn_convert.verification.golden import Golden, save_golden

    rng = np.random.default_rng(0)
    y = rng.standard_normal((2, 1000))
    noise = save_golden(tmp_path / "noise.npz", Golden(
        model="resnet18", labels=["normal(0,1)"], inputs=[rng.standard_normal(
            (2, 3, 64, 64), dtype=np.float32)], reference=[y.astype(np.float32)], exact=[y],
        rtol=1e-5))
    proc = run_cli_here("check", str(user_files["int8"]), "--golden", str(noise))
    _ok(proc, 2)
    [line] = proc.stderr.strip().splitlines()
    assert "only N(0,1) noise" in line and "--precision int8 --save-golden noise.npz" in line


# --------------------------------------------------------------------------- codenn report


def test_report_precision_adds_the_lossy_runtimes_to_every_form(tmp_path: Path) -> None:
    out = tmp_path / "rep"
    _ok(run_cli_here("report", "resnet18", "--precision", "fp16", "--no-layers", "-o", str(out)))
    pairs = _pairs(out / "parity.json")
    for side in ("onnx-torch", "onnx-keras"):
        lossy = pairs[f"{side} vs {side}-fp16"]["lossy"]
        assert lossy["precision"] == "fp16" and lossy["passed"] and lossy["sqnr_db"] >= 35
    assert "| onnx-keras vs onnx-keras-fp16 | fp16 |" in (out / "parity.md").read_text()
    junit = (out / "junit.xml").read_text()
    assert 'name="onnx-torch vs onnx-torch-fp16 [synthetic:seed 1]"' in junit


@pytest.mark.parametrize(("args", "needle"), [
    (("resnet18", "--precision", "fp8"), "unknown precision 'fp8'"),
    (("--from-json", "x.json", "--precision", "fp16"), "--from-json only renders"),
])
def test_report_precision_errors(args: tuple[str, ...], needle: str, tmp_path: Path) -> None:
    proc = run_cli_here("report", *args, "-o", str(tmp_path / "o"))
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and needle in lines[0], proc.stderr
    assert not (tmp_path / "o").exists()
