"""VGG twins: torchvision layout, torch-vs-Keras parity, the CHW->HWC classifier reorder, and
keras.applications VGG19 weights (Keras 3 and legacy Keras 2 HDF5) loaded by content."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import gc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import torch

from codenn_convert.checkpoints.files import read_keras_weights
from codenn_convert.errors import CheckpointError, UsageError
from codenn_convert.models.vgg.keras_applications import keras_applications_filter
from codenn_convert.registry import get_model, get_spec, list_models
from codenn_convert.twins import mapper
from codenn_convert.twins.build import keras_plan, keras_twin, load_state, torch_twin
from codenn_convert.twins.init import realistic_state

VGGS = [n for n in list_models() if get_spec(n).family == "vgg"]

# Parameter counts published in torchvision's weights docs (VGG*_Weights.IMAGENET1K_V1).
TORCHVISION_NUM_PARAMS = {
    "vgg11": 132_863_336,
    "vgg11_bn": 132_868_840,
    "vgg13": 133_047_848,
    "vgg13_bn": 133_053_736,
    "vgg16": 138_357_544,
    "vgg16_bn": 138_365_992,
    "vgg19": 143_667_240,
    "vgg19_bn": 143_678_248,
}

# torchvision's VGG-19 conv indices in ``features`` (without BN; pools at 4, 9, 18, 27, 36).
VGG19_CONVS = (0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34)
VGG16_CONVS = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
BN_SUFFIXES = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _meta_torch(name: str) -> Any:
    """The torch twin on the meta device: exact keys and shapes, no memory or init time."""
    with torch.device("meta"):
        return get_model(name, "torch")


def _max_rel(ref: np.ndarray, other: np.ndarray) -> float:
    ref, other = np.asarray(ref, np.float64), np.asarray(other, np.float64)
    return float(np.abs(ref - other).max() / np.abs(ref).max())


def _free() -> None:
    import keras

    keras.backend.clear_session()
    gc.collect()


# --- torchvision layout and registry metadata --------------------------------------------


def test_registry_lists_all_eight_variants_with_vgg19_default() -> None:
    assert list(TORCHVISION_NUM_PARAMS) == VGGS
    assert [n for n in VGGS if get_spec(n).default] == ["vgg19"]


@pytest.mark.parametrize("name", list(TORCHVISION_NUM_PARAMS))
def test_num_params_match_torchvision(name: str) -> None:
    count = sum(p.numel() for p in _meta_torch(name).parameters())
    assert count == TORCHVISION_NUM_PARAMS[name] == get_spec(name).num_params


def test_vgg19_state_dict_matches_torchvision_layout() -> None:
    state = _meta_torch("vgg19").state_dict()
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    convs = [f"features.{i}.{s}" for i in VGG19_CONVS for s in ("weight", "bias")]
    head = [f"classifier.{i}.{s}" for i in (0, 3, 6) for s in ("weight", "bias")]
    assert list(state) == convs + head
    assert shapes["features.0.weight"] == (64, 3, 3, 3)
    assert shapes["features.16.weight"] == (256, 256, 3, 3)
    assert shapes["features.34.weight"] == (512, 512, 3, 3)
    assert shapes["classifier.0.weight"] == (4096, 25088)
    assert shapes["classifier.3.weight"] == (4096, 4096)
    assert shapes["classifier.6.weight"] == (1000, 4096)
    assert shapes["classifier.6.bias"] == (1000,)


def test_vgg19_bn_state_dict_matches_torchvision_layout() -> None:
    state = _meta_torch("vgg19_bn").state_dict()
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    keys = list(state)
    # 16 convs x (weight, bias) + 16 BNs x 5 entries + 3 linears x 2.
    assert len(keys) == 16 * 2 + 16 * 5 + 6 == 118
    assert keys[:7] == ["features.0.weight", "features.0.bias"] + [
        f"features.1.{s}" for s in BN_SUFFIXES
    ]
    assert keys[7] == "features.3.weight"  # conv, BN, ReLU: the second conv is features.3
    assert shapes["features.49.weight"] == (512, 512, 3, 3)  # the last conv
    assert shapes["features.50.running_var"] == (512,)
    assert shapes["features.50.num_batches_tracked"] == ()
    assert keys[-6:] == [f"classifier.{i}.{s}" for i in (0, 3, 6) for s in ("weight", "bias")]
    assert shapes["classifier.0.weight"] == (4096, 25088)


def test_min_input_size_is_five_pools_deep() -> None:
    spec = get_spec("vgg11")
    assert spec.min_input_size == (32, 32)
    spec.check_input_size((32, 32))
    with pytest.raises(UsageError, match="31x32 is too small"):
        spec.check_input_size((31, 32))
    features = get_model("vgg11", "torch").features.eval()
    with torch.no_grad():
        assert tuple(features(torch.randn(1, 3, 32, 32)).shape) == (1, 512, 1, 1)
        with pytest.raises(RuntimeError, match="too small"):
            features(torch.randn(1, 3, 31, 32))


# --- torch vs Keras parity -----------------------------------------------------------------


@pytest.fixture(scope="module", params=["vgg11", "vgg11_bn"])
def vgg11_twins(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """VGG-11 with and without BN: realistic state, torch twin, Keras twin at 32x32."""
    name = request.param
    state = realistic_state(name, seed=0)
    twins = {
        "name": name,
        "state": state,
        "torch": torch_twin(name, state),
        (32, 32): keras_twin(name, state, input_size=(32, 32)),
    }
    yield twins
    twins.clear()
    _free()


# 32x32 leaves a 1x1 map that the 7x7 adaptive pool replicates; 48x80 leaves a 1x2 map, so
# the pool's bins overlap (column 3 averages both pixels).
@pytest.mark.parametrize("size", [(32, 32), (48, 80)])
def test_torch_keras_parity(vgg11_twins: dict[str, Any], size: tuple[int, int]) -> None:
    name, state = vgg11_twins["name"], vgg11_twins["state"]
    kmodel = vgg11_twins.get(size) or keras_twin(name, state, input_size=size)
    x = np.random.default_rng(1).standard_normal((2, 3, *size)).astype(np.float32)
    with torch.no_grad():
        ref = vgg11_twins["torch"](torch.from_numpy(x)).numpy()
    got = np.asarray(kmodel(x.transpose(0, 2, 3, 1), training=False))
    assert ref.shape == got.shape == (2, 1000)
    assert np.abs(ref).max() > 1.0  # realistic weights keep the logits well scaled
    assert _max_rel(ref, got) <= 1e-5


def test_classifier0_reorder_round_trip(vgg11_twins: dict[str, Any]) -> None:
    name, state, kmodel = vgg11_twins["name"], vgg11_twins["state"], vgg11_twins[(32, 32)]
    plan = keras_plan(kmodel)
    first = next(p for p in plan if p.name == "classifier.0")
    assert first.kind == "dense_after_flatten" and first.flatten_hwc == (7, 7, 512)

    weights, tracked = mapper.torch_to_keras(state, plan, name)
    kernel, weight = weights["classifier.0"][0], state["classifier.0.weight"]
    assert kernel.shape == (25088, 4096)
    # Keras row (h, w, c) is torch column (c, h, w), for a few (h, w, c) across the map.
    for h, w, c in [(0, 0, 1), (0, 1, 0), (3, 5, 200), (6, 6, 511)]:
        np.testing.assert_array_equal(kernel[(h * 7 + w) * 512 + c], weight[:, c * 49 + h * 7 + w])
    del weights

    # torch -> Keras (done by keras_twin) -> torch is bit-identical, BN counters included.
    back = mapper.keras_to_torch(mapper.get_keras_weights(kmodel), plan, name, tracked)
    assert back.keys() == state.keys()
    for key, value in state.items():
        assert back[key].dtype == value.dtype and back[key].shape == value.shape, key
        assert np.array_equal(back[key], value), key


# --- keras.applications names -------------------------------------------------------------


def _apps_names(block_convs: tuple[int, ...]) -> list[str]:
    convs = [f"block{b}_conv{k}" for b, n in enumerate(block_convs, 1) for k in range(1, n + 1)]
    return [*convs, "fc1", "fc2", "predictions"]


def test_filter_renames_vgg19_layers_to_torch_paths() -> None:
    names = _apps_names((2, 2, 4, 4, 4))
    weights = {n: [np.full((1,), i, np.float32)] for i, n in enumerate(names)}
    out = keras_applications_filter(weights)
    assert out is not None
    # The renamed layers are exactly the weighted modules of our VGG-19.
    torch_layers = {k.rsplit(".", 1)[0] for k in _meta_torch("vgg19").state_dict()}
    assert set(out) == torch_layers
    assert out["features.0"] is weights["block1_conv1"]
    assert out["features.16"] is weights["block3_conv4"]
    assert out["features.19"] is weights["block4_conv1"]
    assert out["features.34"] is weights["block5_conv4"]
    assert [out[f"features.{i}"][0][0] for i in VGG19_CONVS] == list(range(16))
    assert out["classifier.0"] is weights["fc1"]
    assert out["classifier.3"] is weights["fc2"]
    assert out["classifier.6"] is weights["predictions"]


def test_filter_picks_the_configuration_from_the_names() -> None:
    names = _apps_names((2, 2, 3, 3, 3))  # keras.applications.VGG16
    out = keras_applications_filter({n: [np.zeros(1)] for n in names})
    assert out is not None
    assert sorted(k for k in out if k.startswith("features.")) == sorted(
        f"features.{i}" for i in VGG16_CONVS
    )


@pytest.mark.parametrize(
    "names",
    [
        ["features.0", "classifier.0"],  # already our names
        [*_apps_names((2, 2, 4, 4, 4)), "extra_dense"],  # a foreign layer
        ["block1_conv1", "block1_conv3", "fc1"],  # a gap in the numbering
        _apps_names((2, 2, 4, 4, 5)),  # no configuration has 5 convs in block 5
        ["fc1", "fc2", "predictions"],  # no convs at all
    ],
)
def test_filter_declines_names_it_does_not_know(names: list[str]) -> None:
    assert keras_applications_filter({n: [np.zeros(1)] for n in names}) is None


def test_bn_variants_have_no_keras_applications_filter() -> None:
    assert get_spec("vgg19").keras_filter is not None
    assert all(get_spec(n).keras_filter is None for n in VGGS if n.endswith("_bn"))


# --- legacy Keras 2 HDF5 ------------------------------------------------------------------


def _write_legacy_h5(
    path: Path, layers: list[tuple[str, list[np.ndarray]]], *, suffixes: tuple[str, ...] = ()
) -> None:
    """What Keras 2's ``save_weights`` wrote to ``.h5``: root attributes ``layer_names``,
    ``backend``, ``keras_version``; per layer a group with ``weight_names`` (bytes, empty for
    weightless layers) and each variable at ``<layer>/<weight name>``."""
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [name.encode("utf8") for name, _ in layers]
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.2.4"
        for name, arrays in layers:
            group = f.create_group(name)
            names = [f"{name}/{s}:0" for s in suffixes[: len(arrays)]]
            group.attrs["weight_names"] = [n.encode("utf8") for n in names]
            for weight_name, value in zip(names, arrays, strict=True):
                group.create_dataset(weight_name, data=value)


def test_read_legacy_h5_in_weight_names_order(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    conv = [rng.standard_normal((3, 3, 3, 4)).astype(np.float32), np.arange(4, dtype=np.float32)]
    dense = [rng.standard_normal((8, 5)).astype(np.float32), np.arange(5, dtype=np.float32)]
    path = tmp_path / "legacy.h5"
    layers = [("input_1", []), ("block1_conv1", conv), ("block1_pool", []), ("fc1", dense)]
    _write_legacy_h5(path, layers, suffixes=("kernel", "bias"))
    # h5py stores datasets sorted by name (bias before kernel): order must come from the attr.
    with h5py.File(path) as f:
        assert list(f["block1_conv1/block1_conv1"]) == ["bias:0", "kernel:0"]
    weights, tracked = read_keras_weights(path)
    assert list(weights) == ["block1_conv1", "fc1"] and tracked == {}
    for got, want in zip([*weights["block1_conv1"], *weights["fc1"]], [*conv, *dense],
                         strict=True):
        np.testing.assert_array_equal(got, want)


def test_read_legacy_h5_with_chunked_names_inside_a_whole_model_file(tmp_path: Path) -> None:
    # Keras 2 split attributes over 64 KiB into name0, name1, ...; whole-model .h5 files keep
    # the weights under "model_weights".
    values = [np.full((2,), i, np.float32) for i in range(3)]
    path = tmp_path / "model.h5"
    with h5py.File(path, "w") as f:
        g = f.create_group("model_weights")
        g.attrs["layer_names0"] = [b"a", b"b"]
        g.attrs["layer_names1"] = [b"c"]
        for name, value in zip("abc", values, strict=True):
            layer = g.create_group(name)
            layer.attrs["weight_names0"] = [f"{name}/w:0".encode()]
            layer.create_dataset(f"{name}/w:0", data=value)
    weights, _ = read_keras_weights(path)
    assert list(weights) == ["a", "b", "c"]
    for got, want in zip(weights.values(), values, strict=True):
        np.testing.assert_array_equal(got[0], want)


def test_read_h5_without_keras_weights_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=np.zeros(3))
    with pytest.raises(CheckpointError, match="holds no Keras weights"):
        read_keras_weights(path)


# --- keras.applications VGG19 end to end (heavy: ~550 MB of weights per copy) ---------------


@pytest.fixture(scope="module")
def keras_apps_vgg19(module_tmp: Path) -> dict[str, Any]:
    """keras.applications.VGG19 with seeded He-scaled weights, saved in both layouts, and
    its prediction (softmax probabilities) on one N(0,1) 224x224 image."""
    import keras

    model = keras.applications.VGG19(weights=None)  # no download
    rng = np.random.default_rng(0)
    legacy_layers: list[tuple[str, list[np.ndarray]]] = []
    for layer in model.layers:
        arrays = []
        for var in layer.weights:
            shape = tuple(var.shape)
            fan_in = int(np.prod(shape[:-1]))
            scale = float(np.sqrt(2.0 / fan_in)) if len(shape) > 1 else 0.05  # He; small biases
            arrays.append(rng.standard_normal(shape, dtype=np.float32) * np.float32(scale))
        if arrays:
            layer.set_weights(arrays)
        legacy_layers.append((layer.name, arrays))
    x = rng.standard_normal((1, 224, 224, 3), dtype=np.float32)
    probs = np.asarray(model.predict(x, verbose=0))

    folder = module_tmp
    keras3 = folder / "vgg19_apps.weights.h5"
    model.save_weights(str(keras3))
    legacy = folder / "vgg19_weights_tf_dim_ordering_tf_kernels.h5"
    _write_legacy_h5(legacy, legacy_layers, suffixes=("kernel", "bias"))
    model.load_weights(str(legacy))  # Keras itself accepts the hand-written legacy file
    del model, legacy_layers
    _free()
    return {"keras3": keras3, "legacy": legacy, "x": x, "probs": probs}


# Full-size (224x224 VGG-19, several 550 MB copies): selected with -m parity like the other
# full-size checks, and left out of `make test-fast`.
@pytest.mark.parity
@pytest.mark.parametrize("layout", ["keras3", "legacy"])
def test_keras_applications_vgg19_weights_load_by_content(
    keras_apps_vgg19: dict[str, Any], layout: str
) -> None:
    state = load_state("vgg19", keras_apps_vgg19[layout])
    tmodel = torch_twin("vgg19", state)
    del state
    x = keras_apps_vgg19["x"]
    with torch.no_grad():
        probs = torch.softmax(tmodel(torch.from_numpy(x.transpose(0, 3, 1, 2))), dim=1).numpy()
    ref = keras_apps_vgg19["probs"]
    assert ref.shape == probs.shape == (1, 1000)
    assert 0.01 < ref.max() < 0.9  # not saturated: the comparison sees many classes
    assert _max_rel(ref, probs) <= 1e-5
    del tmodel
    _free()


def test_keras_applications_weights_for_another_depth_are_refused(tmp_path: Path) -> None:
    # VGG16 names are recognised (configuration D) but cannot fill VGG-19.
    path = tmp_path / "vgg16_apps.h5"
    layers = [(n, [np.zeros(1, np.float32)]) for n in _apps_names((2, 2, 3, 3, 3))]
    _write_legacy_h5(path, layers, suffixes=("kernel",))
    kmodel = get_model("vgg19", "keras", input_size=(32, 32))
    missing = r"missing keys: features\.16, features\.23, features\.25"
    with pytest.raises(CheckpointError, match=missing):
        load_state("vgg19", path, keras_model=kmodel)
    del kmodel
    _free()
