"""Verifying what users bring: per-side checkpoints, foreign ONNX files (NCHW or NHWC),
real photos; and the faults they carry, named at the exact layer in every runtime pair."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper
from PIL import Image

from codenn_convert.checkpoints import files as checkpoint
from codenn_convert.errors import CheckpointError, UsageError
from codenn_convert.export.onnx_export import export_onnx
from codenn_convert.twins.init import realistic_state
from codenn_convert.verification import verify, verify_inputs
from codenn_convert.verification.images import IMAGENET_MEAN, IMAGENET_STD, load_image, resize_size
from codenn_convert.verification.layers import LAYER_RTOL
from tests.conftest import FAULT, run_cli_here, write_faulty_alexnet

SIZE = (64, 64)


def _to_nhwc(src: Path, dst: Path) -> Path:
    """The same graph taking an NHWC input: a Transpose in front, metadata kept."""
    model = onnx.load(str(src))
    (inp,) = model.graph.input
    n = inp.type.tensor_type.shape.dim[0].dim_param or "N"
    _, _, h, w = (d.dim_value for d in inp.type.tensor_type.shape.dim)
    model.graph.node.insert(0, helper.make_node("Transpose", ["image_nhwc"], [inp.name],
                                                perm=[0, 3, 1, 2], name="to_nchw"))
    model.graph.input.remove(inp)
    model.graph.input.append(helper.make_tensor_value_info(
        "image_nhwc", onnx.TensorProto.FLOAT, [n, h, w, 3]))
    onnx.save(model, str(dst))
    return dst


@pytest.fixture(scope="module")
def files(module_tmp: Path) -> dict[str, Path]:
    d = module_tmp
    write_faulty_alexnet(d, SIZE)
    export_onnx("alexnet", "torch", d / "clean.onnx", weights=d / "clean.safetensors",
                input_size=SIZE)
    _to_nhwc(d / "clean.onnx", d / "clean_nhwc.onnx")
    _to_nhwc(d / "bad.onnx", d / "bad_nhwc.onnx")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)).save(d / "photo.jpg")
    return {p.name: p for p in d.iterdir()}


def test_fault_in_the_keras_file_is_named_in_every_failing_pair(files: dict[str, Path]) -> None:
    """torch side clean, Keras side from a file with one perturbed conv channel."""
    r = verify("alexnet", torch_weights=files["clean.safetensors"],
               keras_weights=files["bad.weights.h5"], input_size=SIZE, seed=1)
    by_pair = {(p.a, p.b): p for p in r.pairs}
    # Same-side pairs agree: each twin's export matches it.
    for same in [("torch", "onnx-torch"), ("keras", "onnx-keras")]:
        assert by_pair[same].passed and by_pair[same].first_divergent_layer is None
    failing = [p for p in r.pairs if not p.passed]
    assert {(p.a, p.b) for p in failing} == {("torch", "keras"), ("torch", "onnx-keras"),
                                             ("keras", "onnx-torch"), ("onnx-torch", "onnx-keras")}
    for p in failing:  # ONNX graphs are localised too (torch metadata, tf2onnx names)
        assert p.first_divergent_layer == FAULT, (p.a, p.b, p.layers)
        names = [e.name for e in p.layers]
        before = names[:names.index(FAULT)]
        assert "features.0" in before  # the layers before it were compared, and were clean
        assert all(e.max_rel <= LAYER_RTOL for e in p.layers[:len(before)])
    assert not r.passed


def test_a_missing_side_is_filled_from_the_other(files: dict[str, Path]) -> None:
    only_keras = verify("alexnet", keras_weights=files["bad.weights.h5"], input_size=SIZE,
                        runtimes=("torch", "keras"))
    (p,) = only_keras.pairs
    assert p.passed  # both twins run the perturbed weights
    with pytest.raises(UsageError, match="not both"):
        verify("alexnet", weights=files["clean.safetensors"],
               torch_weights=files["clean.safetensors"], input_size=SIZE)


def test_given_onnx_files_nchw_and_nhwc(files: dict[str, Path]) -> None:
    r = verify("alexnet", weights=files["clean.safetensors"], input_size=SIZE,
               runtimes=("torch",), layers=True,
               onnx=[files["clean.onnx"], files["clean_nhwc.onnx"], files["bad_nhwc.onnx"]])
    by_pair = {(p.a, p.b): p for p in r.pairs}
    clean = by_pair[("torch", "onnx:clean.onnx")]
    nhwc = by_pair[("torch", "onnx:clean_nhwc.onnx")]
    assert clean.passed and nhwc.passed and nhwc.max_rel <= 1e-5
    assert len(nhwc.layers) >= 15 and nhwc.first_divergent_layer is None
    bad = by_pair[("torch", "onnx:bad_nhwc.onnx")]
    assert not bad.passed and bad.first_divergent_layer == FAULT
    assert not by_pair[("onnx:clean.onnx", "onnx:bad_nhwc.onnx")].passed


def test_given_onnx_file_errors(files: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not found"):
        verify("alexnet", onnx=[tmp_path / "nope.onnx"], input_size=SIZE)
    twin = tmp_path / "clean.onnx"
    twin.write_bytes(files["clean.onnx"].read_bytes())
    with pytest.raises(UsageError, match="two ONNX files are named clean.onnx"):
        verify("alexnet", onnx=[files["clean.onnx"], twin], input_size=SIZE)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a protobuf")
    with pytest.raises(CheckpointError, match="junk.onnx is not a loadable ONNX model"):
        verify("alexnet", onnx=[junk], input_size=SIZE, runtimes=("torch", "keras"))


def test_resize_size_is_size_over_0875() -> None:
    assert resize_size((224, 224)) == 256
    assert resize_size((299, 299)) == 342
    assert resize_size((197, 251)) == 287  # the crop fits both sides


def test_photo_preprocessing(tmp_path: Path) -> None:
    colour = (200, 30, 90)
    Image.new("RGB", (500, 300), colour).save(tmp_path / "flat.png")
    x = load_image(tmp_path / "flat.png", (224, 224))
    assert x.shape == (1, 3, 224, 224) and x.dtype == np.float32
    want = (np.array(colour) / 255 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    assert np.allclose(x[0, :, 100, 100], want, atol=1e-6)  # channels in R, G, B order
    # A portrait photo whose left half is black, right half white: the centre crop keeps
    # equal parts of both, mirrored.
    img = np.zeros((400, 300, 3), np.uint8)
    img[:, 150:] = 255
    Image.fromarray(img).save(tmp_path / "half.png")
    y = load_image(tmp_path / "half.png", (96, 80))
    assert y.shape == (1, 3, 96, 80)
    bright = y[0, 0] > 0
    assert bright[:, 40:].all() and not bright[:, :40].any()
    Image.new("L", (64, 64), 128).save(tmp_path / "grey.png")
    assert load_image(tmp_path / "grey.png", (64, 64)).shape == (1, 3, 64, 64)
    (tmp_path / "junk.jpg").write_bytes(b"not an image")
    with pytest.raises(UsageError, match="cannot read image"):
        load_image(tmp_path / "junk.jpg", (64, 64))
    with pytest.raises(UsageError, match="image not found"):
        load_image(tmp_path / "missing.jpg", (64, 64))


def test_photo_runs_as_its_own_result(files: dict[str, Path]) -> None:
    results = verify_inputs("alexnet", weights=files["clean.safetensors"], input_size=SIZE,
                            runtimes=("torch", "keras"), images=[files["photo.jpg"]])
    assert [r.inputs for r in results] == ["normal(0,1)", "image:photo.jpg"]
    assert results[0].input_shape == [2, 3, *SIZE] and results[1].input_shape == [1, 3, *SIZE]
    assert all(r.passed for r in results)
    only = verify("alexnet", weights=files["clean.safetensors"], input_size=SIZE,
                  runtimes=("torch", "keras"), image=files["photo.jpg"])
    assert only.inputs == "image:photo.jpg"
    assert only.pairs[0].max_rel == results[1].pairs[0].max_rel


def test_cli_per_side_weights_and_layers(files: dict[str, Path], tmp_path: Path) -> None:
    js = tmp_path / "v.json"
    proc = run_cli_here("verify", "alexnet", "--input-size", "64", "64",
                   "--torch-weights", str(files["clean.safetensors"]),
                   "--keras-weights", str(files["bad.weights.h5"]),
                   "--onnx", str(files["clean_nhwc.onnx"]), "--image", str(files["photo.jpg"]),
                   "--layers", "--json", str(js))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"first divergent layer: {FAULT}" in proc.stdout
    data = json.loads(js.read_text())
    assert [m["inputs"] for m in data["models"]] == ["normal(0,1)", "image:photo.jpg"]
    for m in data["models"]:
        pairs = {(p["a"], p["b"]): p for p in m["pairs"]}
        assert len(pairs) == 10  # 5 runtimes
        assert all(p["layers"] for p in pairs.values())  # --layers: every pair
        assert pairs[("torch", "keras")]["first_divergent_layer"] == FAULT
        assert pairs[("torch", "onnx:clean_nhwc.onnx")]["passed"]
        assert pairs[("keras", "onnx:clean_nhwc.onnx")]["first_divergent_layer"] == FAULT


def test_torchscript_exported_file_with_fixed_batch_and_folded_batchnorm(tmp_path: Path) -> None:
    """torch's older exporter: ``/layer1/layer1.0/conv1/Conv`` node names, BatchNorm folded
    into the conv before it, a batch fixed at 1 (run in slices)."""
    import warnings

    import torch

    from codenn_convert.twins.build import torch_twin

    state = realistic_state("resnet18", seed=3)
    checkpoint.save_torch_state(state, tmp_path / "r18.safetensors")
    bad = {k: v.copy() for k, v in state.items()}
    bad["layer2.1.bn1.running_var"][4] *= 1.5
    for name, weights in (("ts.onnx", state), ("ts_bad.onnx", bad)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(torch_twin("resnet18", weights), (torch.zeros(1, 3, *SIZE),),
                              str(tmp_path / name), dynamo=False, input_names=["input"])
    r = verify("resnet18", weights=tmp_path / "r18.safetensors", input_size=SIZE,
               runtimes=("torch",), layers=True,
               onnx=[tmp_path / "ts.onnx", tmp_path / "ts_bad.onnx"])
    by_pair = {(p.a, p.b): p for p in r.pairs}
    good = by_pair[("torch", "onnx:ts.onnx")]
    assert good.passed and good.first_divergent_layer is None
    names = [e.name for e in good.layers]
    # The folded BatchNorms are compared (their convs are not in the graph), the shared
    # block ReLUs are not (torch calls them twice), the stem and head are.
    assert {"bn1", "layer2.1.bn1", "layer3.0.downsample.1", "fc"} <= set(names)
    assert "layer1.0.conv1" not in names and "layer1.0.relu" not in names
    bad_pair = by_pair[("torch", "onnx:ts_bad.onnx")]
    assert not bad_pair.passed and bad_pair.first_divergent_layer == "layer2.1.bn1"
