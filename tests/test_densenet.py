"""DenseNet: what is special to the family (the contract test over every model covers the
rest): torchvision's key layout and parameter counts, eps per variant, the minimum input,
torchvision's legacy ``norm.1`` keys, keras.applications DenseNet121 in both file layouts,
a full-size torchvision checkpoint through Keras and both ONNX exports, and a planted fault
named at its layer by ``codenn verify``."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from codenn_convert import convert_checkpoint
from codenn_convert.models.densenet.torchvision_legacy import rename_legacy_keys
from codenn_convert.registry import get_model, get_spec
from codenn_convert.twins.build import keras_twin
from codenn_convert.twins.init import realistic_state
from tests.conftest import max_rel, run_cli_here
from tests.keras_apps import realistic_keras_application

DENSENETS = ("densenet121", "densenet161", "densenet169", "densenet201")
KERAS_DENSENETS = {"keras_densenet121": "densenet121", "keras_densenet169": "densenet169",
                   "keras_densenet201": "densenet201"}

# torchvision's DenseNet*_Weights.IMAGENET1K_V1 "num_params".
TORCHVISION_NUM_PARAMS = {
    "densenet121": 7_978_856,
    "densenet161": 28_681_000,
    "densenet169": 14_149_480,
    "densenet201": 20_013_928,
}
# (dense layers per block, channels into the classifier): growth 32 (161: 48), 64 (96) stem
# channels, each transition halving the channels.
BLOCKS = {
    "densenet121": ((6, 12, 24, 16), 1024),
    "densenet161": ((6, 12, 36, 24), 2208),
    "densenet169": ((6, 12, 32, 32), 1664),
    "densenet201": ((6, 12, 48, 32), 1920),
}
BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
NBT = ".num_batches_tracked"


def _meta_torch(name: str) -> Any:
    """The torch twin on the meta device: exact keys and shapes, no memory or init time."""
    with torch.device("meta"):
        return get_model(name, "torch")


def _torch_model(name: str, state: dict[str, np.ndarray]) -> Any:
    model = get_model(name, "torch")
    model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in state.items()})
    return model.eval()  # strict=True: every key, and nothing else


def _load(path: Path) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in torch.load(path, weights_only=True).items()}


def _save(state: dict[str, np.ndarray], path: Path) -> Path:
    torch.save({k: torch.from_numpy(np.asarray(v)) for k, v in state.items()}, path)
    return path


def _notes(proc: subprocess.CompletedProcess[str]) -> list[str]:
    return [ln[len("note: "):] for ln in proc.stderr.splitlines() if ln.startswith("note: ")]


def _ok(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


@pytest.fixture(scope="module")
def tv_state() -> dict[str, np.ndarray]:
    """A torchvision-layout DenseNet-121 state with trained-looking weights."""
    return realistic_state("densenet121", seed=0)


# --- torchvision layout -----------------------------------------------------------------


def test_densenet121_state_dict_matches_torchvision_layout() -> None:
    state = _meta_torch("densenet121").state_dict()
    keys = list(state)
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    # 58 dense layers (2 BN + 2 convs each), 3 transitions (BN + conv), stem conv + BN,
    # norm5, classifier weight + bias.
    assert len(keys) == 58 * (2 * 5 + 2) + 3 * (5 + 1) + (1 + 5) + 5 + 2 == 727
    layer = "features.denseblock1.denselayer1"
    assert keys[:18] == [
        "features.conv0.weight", *(f"features.norm0.{s}" for s in BN),
        *(f"{layer}.norm1.{s}" for s in BN), f"{layer}.conv1.weight",
        *(f"{layer}.norm2.{s}" for s in BN), f"{layer}.conv2.weight",
    ]  # fmt: skip
    assert keys[-7:] == [*(f"features.norm5.{s}" for s in BN), "classifier.weight",
                         "classifier.bias"]
    assert [k for k in keys if k.startswith("features.transition1.")] == [
        *(f"features.transition1.norm.{s}" for s in BN), "features.transition1.conv.weight"]
    assert not any(k.endswith(".bias") and ".conv" in k for k in keys)  # convs have no bias

    assert shapes["features.conv0.weight"] == (64, 3, 7, 7)
    # Layer i of a block sees the block input plus i-1 growths: 64 + 5 * 32 = 224.
    assert shapes["features.denseblock1.denselayer6.norm1.weight"] == (224,)
    assert shapes["features.denseblock1.denselayer6.conv1.weight"] == (128, 224, 1, 1)
    assert shapes["features.denseblock1.denselayer6.conv2.weight"] == (32, 128, 3, 3)
    assert shapes["features.transition1.conv.weight"] == (128, 256, 1, 1)
    assert shapes["features.transition3.conv.weight"] == (512, 1024, 1, 1)
    assert shapes["features.norm5.running_var"] == (1024,)
    assert shapes["classifier.weight"] == (1000, 1024)


@pytest.mark.parametrize("name", [*DENSENETS, *KERAS_DENSENETS])
def test_blocks_and_param_counts_are_torchvision(name: str) -> None:
    model = _meta_torch(name)
    tv = KERAS_DENSENETS.get(name, name)
    blocks, channels = BLOCKS[tv]
    keys = list(model.state_dict())
    found = tuple(len({m[1] for k in keys if (m := re.match(rf"features\.denseblock{b}\."
                                                            rf"denselayer(\d+)\.", k))})
                  for b in (1, 2, 3, 4))
    assert found == blocks
    assert model.classifier.in_features == channels
    count = sum(p.numel() for p in model.parameters())
    assert count == TORCHVISION_NUM_PARAMS[tv] == get_spec(name).num_params
    if tv != name:  # keras.applications' variant: the same tree, keys and shapes
        assert keys == list(_meta_torch(tv).state_dict())


@pytest.mark.parametrize(("name", "eps"), [("densenet121", 1e-5),
                                           ("keras_densenet121", 1.001e-5)])
def test_eps_padding_and_layer_names(name: str, eps: float) -> None:
    import keras

    torch_model = _meta_torch(name)
    assert {m.eps for m in torch_model.modules() if isinstance(m, torch.nn.BatchNorm2d)} == {eps}
    assert (torch_model.features.conv0.padding, torch_model.features.pool0.padding) == (
        (3, 3), 1)

    model = get_model(name, "keras", input_size=(29, 29))  # the minimum
    by_name = {layer.name: layer for layer in model.layers}
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(bns) == 58 * 2 + 3 + 2
    assert {(bn.epsilon, bn.momentum) for bn in bns} == {(eps, 0.9)}
    assert {c.padding for c in model.layers if isinstance(c, keras.layers.Conv2D)} == {"valid"}
    # Explicit symmetric zero padding for the stride-2 stem (TF's 'same' would pad (2, 3)).
    conv_pad, pool_pad = by_name["features.conv0.pad"], by_name["features.pool0.pad"]
    assert isinstance(pool_pad, keras.layers.ZeroPadding2D)
    assert (conv_pad.padding, pool_pad.padding) == (((3, 3), (3, 3)), ((1, 1), (1, 1)))
    assert by_name["features.pool0"].input is pool_pad.output
    assert by_name["features.pool0.pad"].input is by_name["features.relu0"].output  # >= 0

    weighted = {layer.name for layer in model.layers if layer.weights}
    assert weighted == {n for n, m in torch_model.named_modules() if m._parameters}


# --- parity of the twins -------------------------------------------------------------------


# 29x29 is the minimum (a 1x1 map in the last block; test_registry shows 28 fails). 64x97
# feeds every stride-2 op an even height, where TF's 'same' would pad asymmetrically.
@pytest.mark.parametrize("size", [(29, 29), (64, 97)])
def test_torch_keras_parity(tv_state: dict[str, np.ndarray], size: tuple[int, int]) -> None:
    x = np.random.default_rng(1).standard_normal((2, 3, *size)).astype(np.float32)
    with torch.no_grad():
        ref = _torch_model("densenet121", tv_state)(torch.from_numpy(x)).numpy()
    out = np.asarray(keras_twin("densenet121", tv_state, input_size=size)(
        x.transpose(0, 2, 3, 1), training=False))
    assert out.shape == ref.shape == (2, 1000) and np.abs(ref).max() > 0.5
    assert max_rel(ref, out) <= 1e-5  # measured: 1.9e-6 at 29x29, 3.2e-6 at 64x97


# --- torchvision's legacy keys ------------------------------------------------------------


def _legacy(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """As torchvision's first DenseNet files: ``norm.1``/``conv.2`` and no counters."""
    return {re.sub(r"(denselayer\d+\.(?:norm|conv))([12])\.", r"\1.\2.", k): v
            for k, v in state.items() if not k.endswith(NBT)}


def test_the_legacy_filter_renames_only_legacy_keys(tv_state: dict[str, np.ndarray]) -> None:
    ctx = SimpleNamespace(notes=[])
    assert rename_legacy_keys(tv_state, ctx) is tv_state and ctx.notes == []
    old = _legacy(tv_state)
    assert "features.denseblock1.denselayer1.norm.1.weight" in old
    new = rename_legacy_keys(old, ctx)
    assert new.keys() == {k for k in tv_state if not k.endswith(NBT)}
    layer = "features.denseblock4.denselayer16"
    assert new[f"{layer}.conv2.weight"] is old[f"{layer}.conv.2.weight"]  # renamed, not copied
    assert new["features.norm5.weight"] is old["features.norm5.weight"]
    assert len(ctx.notes) == 1


def test_legacy_torchvision_checkpoint_converts_with_a_note(
        tv_state: dict[str, np.ndarray], module_tmp: Path) -> None:
    old = _save(_legacy(tv_state), module_tmp / "densenet121-a639ec97.pth")
    proc = _ok(run_cli_here("convert", str(old), str(module_tmp / "legacy.weights.h5")))
    renamed = 58 * 10  # per dense layer: norm1 and norm2 (4 tensors each), conv1, conv2
    assert _notes(proc) == [
        "identified densenet121",
        f"renamed {renamed} legacy torchvision DenseNet keys ('norm.1' -> 'norm1', "
        "'conv.1' -> 'conv1', ...)",
    ]
    proc = _ok(run_cli_here("identify", str(old)))
    assert proc.stdout.split() == ["densenet121"]  # keras_densenet121 reads no legacy keys
    back = module_tmp / "legacy_back.pth"
    convert_checkpoint("densenet121", module_tmp / "legacy.weights.h5", back)
    got = _load(back)
    for key, value in tv_state.items():
        if not key.endswith(NBT):
            assert np.array_equal(got[key], value), key


# --- keras.applications -------------------------------------------------------------------

# 64x64: at keras.applications' 32x32 minimum the last block's 1x1 maps calibrate its
# BatchNorms on 16 values per channel, and float32 rounding alone reaches 7.8e-6 of the
# logits; at 64x64 it is 4.5e-6.
KERAS_APP_SIZE = 64


@pytest.fixture(scope="module")
def keras_app(module_tmp: Path) -> SimpleNamespace:
    """keras.applications DenseNet121 with trained-looking weights, saved as Keras 3
    ``.weights.h5`` and as a Keras 2 download (``conv1/conv``, ``conv1/bn``); its batch
    (NHWC) and logits."""
    import h5py
    import keras
    from keras.src.legacy.saving.legacy_h5_format import save_weights_to_hdf5_group

    model = keras.applications.DenseNet121(
        weights=None, input_shape=(KERAS_APP_SIZE, KERAS_APP_SIZE, 3),
        classifier_activation=None)
    x = realistic_keras_application(model, seed=0)
    logits = np.asarray(model(x, training=False))
    keras3 = module_tmp / "densenet121.weights.h5"
    model.save_weights(str(keras3))
    legacy = module_tmp / "densenet121_weights_tf_dim_ordering_tf_kernels.h5"
    with h5py.File(legacy, "w") as f:
        save_weights_to_hdf5_group(f, model)
        # Keras 2 named the stem layers with a slash (an HDF5 subgroup).
        keras2 = {"conv1_conv": "conv1/conv", "conv1_bn": "conv1/bn"}
        for now, then in keras2.items():
            f.move(now, then)
        names = [n.decode() if isinstance(n, bytes) else n for n in f.attrs["layer_names"]]
        f.attrs["layer_names"] = [keras2.get(n, n).encode() for n in names]
    keras.backend.clear_session()
    return SimpleNamespace(keras3=keras3, legacy=legacy, x=x, logits=logits)


@pytest.mark.parametrize("layout", ["keras3", "legacy"])
def test_keras_applications_densenet121_into_torch(
        keras_app: SimpleNamespace, module_tmp: Path, layout: str) -> None:
    src = getattr(keras_app, layout)
    pth = module_tmp / f"{layout}.pth"
    proc = _ok(run_cli_here("convert", str(src), str(pth)))  # no model named: identified
    assert _notes(proc)[:2] == ["identified keras_densenet121", "renamed 242 foreign Keras "
                                "layers to keras_densenet121's layer names"]
    nchw = np.ascontiguousarray(keras_app.x.transpose(0, 3, 1, 2))
    with torch.no_grad():
        got = _torch_model("keras_densenet121", _load(pth))(torch.from_numpy(nchw)).numpy()
    assert np.abs(keras_app.logits).max() > 0.5
    assert max_rel(keras_app.logits, got) <= 1e-5  # measured 4.5e-6
    assert (keras_app.logits.argmax(1) == got.argmax(1)).all()


def test_keras_applications_densenet121_to_onnx(keras_app: SimpleNamespace,
                                                module_tmp: Path) -> None:
    import onnxruntime as ort

    onnx_file = module_tmp / "keras_densenet121.onnx"
    size = str(KERAS_APP_SIZE)
    _ok(run_cli_here("export", "keras_densenet121", "--weights", str(keras_app.legacy),
                "--input-size", size, size, "-o", str(onnx_file)))
    nchw = np.ascontiguousarray(keras_app.x.transpose(0, 3, 1, 2))
    got = ort.InferenceSession(str(onnx_file)).run(None, {"input": nchw})[0]
    assert max_rel(keras_app.logits, got) <= 1e-5


# --- a planted fault, named by codenn verify ----------------------------------------------

FAULT = "features.denseblock3.denselayer7.conv1"


def test_verify_names_a_faulty_layer(tv_state: dict[str, np.ndarray], module_tmp: Path
                                     ) -> None:
    """Keras side from a file with one output channel of a deep 1x1 conv 2% off."""
    clean = _save(tv_state, module_tmp / "clean.pth")
    bad = {k: v.copy() for k, v in tv_state.items()}
    bad[f"{FAULT}.weight"][5] *= 1.02
    bad_h5 = module_tmp / "bad.weights.h5"
    convert_checkpoint("densenet121", _save(bad, module_tmp / "bad.pth"), bad_h5)
    report = module_tmp / "fault.json"
    proc = run_cli_here("verify", "densenet121", "--torch-weights", str(clean), "--keras-weights",
                   str(bad_h5), "--input-size", "64", "64", "--runtimes", "torch,keras",
                   "--json", str(report))
    assert proc.returncode == 1, proc.stdout + proc.stderr  # a parity failure
    (model,) = json.loads(report.read_text())["models"]
    (pair,) = model["pairs"]
    assert not pair["passed"] and pair["first_divergent_layer"] == FAULT
    names = [e["name"] for e in pair["layers"]]
    before = pair["layers"][:names.index(FAULT)]
    # Everything before it was compared and is clean: stem, blocks 1-2 (their concatenated
    # outputs included), transitions, and block 3's first six layers.
    assert {"features.conv0", "features.pool0", "features.denseblock1",
            "features.transition2.pool", f"{FAULT.rsplit('.', 2)[0]}.denselayer6.conv2"
            } <= {e["name"] for e in before}
    assert all(e["max_rel"] <= model["layer_rtol"] for e in before)
    assert pair["layers"][len(before)]["max_rel"] > 1e-3


# --- a torchvision checkpoint through Keras and both ONNX exports -------------------------
# At 64x64: the checkpoint's round trip does not depend on the size, and full-size 224x224
# parity of all six pairs is tests/test_parity.py's densenet121.


def test_torchvision_densenet121_round_trip_and_onnx_exports(
        tv_state: dict[str, np.ndarray], module_tmp: Path) -> None:
    import onnxruntime as ort

    src = _save(tv_state, module_tmp / "densenet121.pth")
    h5, back = module_tmp / "densenet121.weights.h5", module_tmp / "back.pth"
    _ok(run_cli_here("convert", "densenet121", str(src), str(h5)))
    _ok(run_cli_here("convert", "densenet121", str(h5), str(back)))
    got = _load(back)
    assert got.keys() == tv_state.keys()
    for key, value in tv_state.items():
        assert got[key].dtype == value.dtype and np.array_equal(got[key], value), key

    x = np.random.default_rng(3).standard_normal((2, 3, 64, 64)).astype(np.float32)
    with torch.no_grad():
        ref = _torch_model("densenet121", tv_state)(torch.from_numpy(x)).numpy()
    for framework, weights in (("torch", src), ("keras", h5)):
        onnx_file = module_tmp / f"densenet121-{framework}.onnx"
        _ok(run_cli_here("export", "densenet121", "--framework", framework, "--weights",
                    str(weights), "--input-size", "64", "64", "-o", str(onnx_file)))
        out = ort.InferenceSession(str(onnx_file)).run(None, {"input": x})[0]
        assert max_rel(ref, out) <= 1e-5, framework
        assert (ref.argmax(1) == out.argmax(1)).all(), framework


@pytest.mark.parity
def test_int8_meets_the_default_floors_on_both_sides(module_tmp: Path) -> None:
    """``codenn verify densenet121 --precision int8`` at 224x224. Its BatchNorms come before
    their convs, so they cannot fold into one; quantised with the Concat feeding them, the
    int8 files fell to 26.3 dB with top-5 overlap 0.7 (torch) and 13.1 dB (Keras). At small
    sizes both sides sit near 18 dB with or without that, so only the full size shows it."""
    from codenn_convert.verification.lossy import DEFAULT_THRESHOLDS

    report = module_tmp / "int8.json"
    _ok(run_cli_here("verify", "densenet121", "--precision", "int8", "--runtimes",
                "onnx-torch,onnx-keras", "--json", str(report)))
    (model,) = json.loads(report.read_text())["models"]
    lossy = {p["b"]: p["lossy"] for p in model["pairs"] if p.get("lossy")}
    assert set(lossy) == {"onnx-torch-int8", "onnx-keras-int8"}
    floors = vars(DEFAULT_THRESHOLDS["int8"])
    for side in lossy.values():
        assert side["thresholds"] == floors and side["passed"], side
