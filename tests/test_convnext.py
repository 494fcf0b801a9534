"""ConvNeXt: what the model contract (tests/test_models.py) does not cover. torchvision's
keys and parameter counts, DepthwiseConv2D (never a grouped Conv2D), LayerNorm eps 1e-6,
the odd size 193x229, planted faults in a LayerNorm and a layer scale, full-size parity."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from codenn_convert.registry import get_model, get_spec
from codenn_convert.twins import mapper
from codenn_convert.twins.build import keras_twin, set_torch_state, torch_twin
from codenn_convert.twins.init import realistic_state
from codenn_convert.verification import localise as loc
from codenn_convert.verification import seeded_batch, verify

# torchvision's published num_params (ConvNeXt_*_Weights meta).
TORCHVISION_NUM_PARAMS = {"convnext_tiny": 28_589_128, "convnext_small": 50_223_688,
                          "convnext_base": 88_591_464, "convnext_large": 197_767_336}


@pytest.mark.parametrize("name", list(TORCHVISION_NUM_PARAMS))
def test_parameter_count(name: str) -> None:
    with torch.device("meta"):
        model = get_model(name, "torch")
    assert sum(p.numel() for p in model.parameters()) == TORCHVISION_NUM_PARAMS[name]
    assert get_spec(name).num_params == TORCHVISION_NUM_PARAMS[name]


def test_tiny_keys_follow_torchvision() -> None:
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in get_model("convnext_tiny", "torch")
                  .state_dict().items()}
    assert list(shapes)[:4] == ["features.0.0.weight", "features.0.0.bias",
                                "features.0.1.weight", "features.0.1.bias"]
    assert shapes["features.0.0.weight"] == (96, 3, 4, 4)
    assert shapes["features.1.0.layer_scale"] == (96, 1, 1)
    assert shapes["features.1.0.block.0.weight"] == (96, 1, 7, 7)  # depthwise
    assert shapes["features.1.0.block.2.weight"] == (96,)  # LayerNorm
    assert shapes["features.1.0.block.3.weight"] == (384, 96)  # Linear, channels-last
    assert shapes["features.1.0.block.5.weight"] == (96, 384)
    assert shapes["features.2.0.weight"] == (96,)  # LayerNorm2d of the downsampler
    assert shapes["features.2.1.weight"] == (192, 96, 2, 2)
    assert shapes["features.5.8.layer_scale"] == (384, 1, 1)
    assert list(shapes)[-4:] == ["classifier.0.weight", "classifier.0.bias",
                                 "classifier.2.weight", "classifier.2.bias"]


@pytest.fixture(scope="module")
def tiny() -> dict[str, Any]:
    state = realistic_state("convnext_tiny", seed=0)
    return {"state": state, "torch": torch_twin("convnext_tiny", state)}


def test_keras_twin_uses_depthwise_layers_and_eps_1e6(tiny: dict[str, Any]) -> None:
    model = keras_twin("convnext_tiny", tiny["state"], input_size=(32, 32))
    kinds = [type(lyr).__name__ for lyr in model.layers]
    assert kinds.count("DepthwiseConv2D") == 18
    assert all(lyr.groups == 1 for lyr in model.layers if type(lyr).__name__ == "Conv2D")
    norms = [lyr for lyr in model.layers if type(lyr).__name__ == "LayerNormalization"]
    assert len(norms) == 18 + 1 + 3 + 1 and {lyr.epsilon for lyr in norms} == {1e-6}


def test_odd_size_193x229_round_trip_and_parity(tiny: dict[str, Any]) -> None:
    size = (193, 229)
    km = get_model("convnext_tiny", "keras", input_size=size)
    _, tracked = set_torch_state(km, tiny["state"], "convnext_tiny")
    plan = mapper.plan_keras_model(km)
    back = mapper.keras_to_torch(mapper.get_keras_weights(km), plan, "convnext_tiny", tracked)
    assert sorted(back) == sorted(tiny["state"])
    assert all(np.array_equal(back[k], v) and back[k].dtype == v.dtype
               for k, v in tiny["state"].items())
    x = seeded_batch(2, size, seed=4)
    with torch.no_grad():
        ref = tiny["torch"](torch.from_numpy(x)).numpy()
    out = np.asarray(km(x.transpose(0, 2, 3, 1)))
    assert np.abs(out - ref).max() <= 1e-5 * np.abs(ref).max()
    assert (out.argmax(1) == ref.argmax(1)).all()


@pytest.fixture(scope="module")
def small(tiny: dict[str, Any]) -> dict[str, Any]:
    size = (64, 64)
    return {"keras": keras_twin("convnext_tiny", tiny["state"], input_size=size),
            "x": seeded_batch(2, size, seed=1)}


def _localise(tiny: dict[str, Any], small: dict[str, Any], layer_name: str, index: int,
              edit: Any) -> str | None:
    """Localise with variable ``index`` of Keras layer ``layer_name`` edited; restore it."""
    layer = small["keras"].get_layer(layer_name)
    saved = layer.get_weights()
    weights = [w.copy() for w in saved]
    edit(weights[index])
    layer.set_weights(weights)
    try:
        return loc.localise_models(tiny["torch"], small["keras"], small["x"]
                                   ).first_divergent_layer
    finally:
        layer.set_weights(saved)


def test_clean_twins_compare_blocks_and_norms(tiny: dict[str, Any],
                                              small: dict[str, Any]) -> None:
    found = loc.localise_models(tiny["torch"], small["keras"], small["x"])
    assert found.first_divergent_layer is None
    names = {e.name for e in found.layers}
    # Channels-first outputs are compared by name; the in-block channels-last LayerNorm and
    # Linears (torch outputs NHWC between two permutes) are judged by their block.
    assert {"features.0.1", "features.2.0", "features.1.0", "features.5.8",
            "classifier.2"} <= names
    assert "features.1.0.block.2" not in names


def _scale_one(w: np.ndarray) -> None:
    w[3] *= 1.5


@pytest.mark.parametrize(("layer", "index", "expected"), [
    ("features.2.0", 0, "features.2.0"),  # LayerNorm2d gamma
    ("features.4.0", 1, "features.4.0"),  # LayerNorm2d beta
    ("features.3.1", 0, "features.3.1"),  # layer scale
    ("features.5.2.block.2", 0, "features.5.2"),  # in-block LayerNorm: named by its block
])
def test_planted_faults_are_named(tiny: dict[str, Any], small: dict[str, Any], layer: str,
                                  index: int, expected: str) -> None:
    assert _localise(tiny, small, layer, index, _scale_one) == expected


@pytest.mark.parity
def test_tiny_full_size_parity_at_193x229(tmp_path: Path) -> None:
    result = verify("convnext_tiny", batch=2, seed=0, input_size=(193, 229),
                    work_dir=tmp_path)
    assert result.input_shape == [2, 3, 193, 229]
    assert len(result.pairs) == 6 and result.passed
    assert all(p.passed and p.max_rel <= 1e-5 for p in result.pairs)
    assert all(e is not None and e <= 1e-5 for e in result.error_vs_float64.values())
