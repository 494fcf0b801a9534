"""EfficientNet: what the model contract (tests/test_models.py) does not cover. torchvision's
keys and parameter counts, BatchNorm eps per variant, stochastic depth gone at inference
(and from the export), odd sizes, a planted fault in an SE block, full-size parity."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch

from codenn_convert import export_onnx
from codenn_convert.models.common.torch_layers import StochasticDepth
from codenn_convert.registry import get_model, get_spec
from codenn_convert.twins.build import keras_twin, torch_twin
from codenn_convert.twins.init import realistic_state
from codenn_convert.verification import localise as loc
from codenn_convert.verification import seeded_batch

# torchvision's published num_params (EfficientNet_*_Weights meta).
TORCHVISION_NUM_PARAMS = {
    "efficientnet_b0": 5_288_548, "efficientnet_b1": 7_794_184, "efficientnet_b2": 9_109_994,
    "efficientnet_b3": 12_233_232, "efficientnet_b4": 19_341_616,
    "efficientnet_b5": 30_389_784, "efficientnet_b6": 43_040_704,
    "efficientnet_b7": 66_347_960, "efficientnet_v2_s": 21_458_488,
    "efficientnet_v2_m": 54_139_356, "efficientnet_v2_l": 118_515_272,
}
# torchvision: B0-B4 keep BatchNorm2d's default eps; B5-B7 and V2 pass eps=1e-3.
BN_EPS = {n: 1e-3 if n[-2:] in ("b5", "b6", "b7") or "_v2_" in n else 1e-5
          for n in TORCHVISION_NUM_PARAMS}


def _meta(name: str) -> Any:
    with torch.device("meta"):
        return get_model(name, "torch")


@pytest.mark.parametrize("name", list(TORCHVISION_NUM_PARAMS))
def test_parameter_count_and_bn_eps_per_variant(name: str) -> None:
    model = _meta(name)
    assert sum(p.numel() for p in model.parameters()) == TORCHVISION_NUM_PARAMS[name]
    assert get_spec(name).num_params == TORCHVISION_NUM_PARAMS[name]
    eps = {m.eps for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)}
    assert eps == {BN_EPS[name]}


def test_b0_keys_follow_torchvision() -> None:
    shapes = {k: tuple(v.shape) for k, v in _meta("efficientnet_b0").state_dict().items()}
    assert list(shapes)[:2] == ["features.0.0.weight", "features.0.1.weight"]
    # features.1.0: expand ratio 1, so no expand conv: depthwise, SE, project.
    assert shapes["features.1.0.block.0.0.weight"] == (32, 1, 3, 3)
    assert shapes["features.1.0.block.1.fc1.weight"] == (8, 32, 1, 1)
    assert shapes["features.1.0.block.1.fc2.bias"] == (32,)
    assert shapes["features.1.0.block.2.0.weight"] == (16, 32, 1, 1)
    # features.2.0: expand 16 -> 96, depthwise, SE squeezing to 16 // 4, project to 24.
    assert shapes["features.2.0.block.0.0.weight"] == (96, 16, 1, 1)
    assert shapes["features.2.0.block.2.fc1.weight"] == (4, 96, 1, 1)
    assert shapes["features.2.0.block.3.1.running_var"] == (24,)
    assert shapes["features.8.0.weight"] == (1280, 320, 1, 1)
    assert list(shapes)[-2:] == ["classifier.1.weight", "classifier.1.bias"]
    assert not any("stochastic_depth" in k for k in shapes)  # weight-free


def test_v2_fused_blocks_follow_torchvision() -> None:
    shapes = {k: tuple(v.shape) for k, v in _meta("efficientnet_v2_s").state_dict().items()}
    assert shapes["features.1.0.block.0.0.weight"] == (24, 24, 3, 3)  # ratio 1: one conv
    assert "features.1.0.block.1.0.weight" not in shapes
    assert shapes["features.2.0.block.0.0.weight"] == (96, 24, 3, 3)  # fused expand
    assert shapes["features.2.0.block.1.0.weight"] == (48, 96, 1, 1)  # project
    assert shapes["features.4.0.block.2.fc1.weight"] == (16, 256, 1, 1)  # MBConv: SE
    assert shapes["features.7.0.weight"] == (1280, 256, 1, 1)


def test_keras_twin_has_the_variant_eps_and_depthwise_layers() -> None:
    model = get_model("efficientnet_b5", "keras", input_size=(33, 33))
    bns = [lyr for lyr in model.layers if type(lyr).__name__ == "BatchNormalization"]
    assert bns and {lyr.epsilon for lyr in bns} == {1e-3}
    convs = [lyr for lyr in model.layers if type(lyr).__name__ == "Conv2D"]
    assert all(lyr.groups == 1 for lyr in convs)
    assert sum(type(lyr).__name__ == "DepthwiseConv2D" for lyr in model.layers) == 39


def test_stochastic_depth_is_identity_in_eval_and_random_in_training() -> None:
    sd = StochasticDepth(0.5, "row")
    x = torch.randn(64, 4, 2, 2)
    assert sd.eval()(x) is x
    y = sd.train()(x)
    kept = (y != 0).flatten(1).all(1)
    assert 0 < int(kept.sum()) < 64  # rows dropped at random
    assert torch.equal(y[kept], x[kept] * 2)


@pytest.fixture(scope="module")
def b0() -> dict[str, Any]:
    state = realistic_state("efficientnet_b0", seed=0)
    return {"state": state, "torch": torch_twin("efficientnet_b0", state)}


def test_odd_non_square_size(b0: dict[str, Any]) -> None:
    size = (57, 43)
    km = keras_twin("efficientnet_b0", b0["state"], input_size=size)
    x = seeded_batch(2, size, seed=3)
    with torch.no_grad():
        ref = b0["torch"](torch.from_numpy(x)).numpy()
    out = np.asarray(km(x.transpose(0, 2, 3, 1)))
    assert np.abs(out - ref).max() <= 1e-5 * np.abs(ref).max()


def test_planted_fault_in_an_se_block_is_named(b0: dict[str, Any]) -> None:
    size, target = (64, 64), "features.2.0.block.2.fc1"
    km = keras_twin("efficientnet_b0", b0["state"], input_size=size)
    x = seeded_batch(2, size, seed=1)
    clean = loc.localise_models(b0["torch"], km, x)
    assert clean.first_divergent_layer is None
    names = [e.name for e in clean.layers]
    assert {target, "features.2.0.block.2", "features.2.1"} <= set(names)  # SE, residual
    layer = km.get_layer(target)
    kernel, bias = layer.get_weights()
    bias[1] += 0.5
    layer.set_weights([kernel, bias])
    found = loc.localise_models(b0["torch"], km, x)
    assert found.first_divergent_layer == target


def test_torch_export_has_no_random_op(tmp_path: Path) -> None:
    out = tmp_path / "b0.onnx"
    export_onnx("efficientnet_b0", "torch", out, input_size=(32, 32))
    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert not ops & {"RandomUniform", "RandomUniformLike", "RandomNormal",
                      "RandomNormalLike", "Bernoulli", "Dropout"}
    assert "Sigmoid" in ops  # the SE gate (and SiLU) are there


def test_keras_style_with_imagenet_rescaling_twins_agree() -> None:
    """keras_efficientnet_b0 with ``imagenet_rescaling`` (weights="imagenet" models): the
    extra per-channel Rescaling is in both twins, which agree."""
    name, size, opts = "keras_efficientnet_b0", (48, 40), {"imagenet_rescaling": True}
    state = realistic_state(name, seed=0, **opts)
    assert {"normalization.mean", "normalization.variance", "normalization.count"} <= set(state)
    tm = torch_twin(name, state, **opts)
    km = keras_twin(name, state, input_size=size, **opts)
    scale = km.get_layer("stddev_scale").scale
    assert np.allclose(scale, [1 / np.sqrt(s) for s in (0.229, 0.224, 0.225)])
    x = seeded_batch(2, size, seed=2)
    with torch.no_grad():
        ref = tm(torch.from_numpy(x)).numpy()
        plain = torch_twin(name, state)(torch.from_numpy(x)).numpy()
    out = np.asarray(km(x.transpose(0, 2, 3, 1)))
    assert np.abs(out - ref).max() <= 1e-5 * np.abs(ref).max()
    assert np.abs(plain - ref).max() > 1e-3 * np.abs(ref).max()  # the option changes it
