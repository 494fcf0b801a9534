"""Layer-wise localisation: planted faults are named at the exact layer; clean twins at none."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch

from codenn_convert.twins import build as twins
from codenn_convert.twins.init import realistic_state
from codenn_convert.verification import layers as lay
from codenn_convert.verification import localise as loc
from codenn_convert.verification import matching, ort, probes, seeded_batch

# Small even sizes: 'same' at stride 2 differs from torch's symmetric padding only there.
SIZES = {"alexnet": (64, 64), "resnet50": (64, 64), "inception_v3": (80, 80)}


@dataclass
class Twins:
    name: str
    state: dict[str, np.ndarray]
    torch_model: Any
    keras_model: Any
    x: np.ndarray


@pytest.fixture(scope="module", params=list(SIZES))
def built(request: pytest.FixtureRequest) -> Iterator[Twins]:
    name = request.param
    state = realistic_state(name, seed=0)
    yield Twins(name, state, twins.torch_twin(name, state),
                twins.keras_twin(name, state, input_size=SIZES[name]),
                seeded_batch(2, SIZES[name], seed=1))


@pytest.fixture()
def restore(built: Twins) -> Iterator[Callable[[str], Any]]:
    """Hand out Keras layers to tamper with; put their weights back afterwards."""
    saved: dict[str, list[np.ndarray]] = {}

    def layer(name: str) -> Any:
        lyr = built.keras_model.get_layer(name)
        saved.setdefault(name, [w.copy() for w in lyr.get_weights()])
        return lyr

    yield layer
    for name, weights in saved.items():
        built.keras_model.get_layer(name).set_weights(weights)


def test_clean_twins_have_no_divergent_layer(built: Twins) -> None:
    found = loc.localise_models(built.torch_model, built.keras_model, built.x)
    assert found.first_divergent_layer is None
    assert all(e.max_rel <= lay.LAYER_RTOL for e in found.layers), found.layers
    names = [e.name for e in found.layers]
    modules = dict(built.torch_model.named_modules())
    assert len(names) == len(set(names)) and all(n in modules for n in names)
    # Every weighted layer is compared (they are what a checkpoint can get wrong).
    weighted = {n for n, m in modules.items() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear
                                                           | torch.nn.BatchNorm2d)}
    weighted -= {n for n in weighted if n.startswith("AuxLogits")}  # not run in eval mode
    assert weighted <= set(names)


CONV_FAULT = {"alexnet": "features.3", "resnet50": "layer2.1.conv2",
              "inception_v3": "Mixed_6b.branch7x7_2.conv"}
BN_FAULT = {"resnet50": "layer3.0.bn1", "inception_v3": "Mixed_5c.branch5x5_1.bn"}


def test_perturbed_conv_weight_is_named(built: Twins, restore: Callable[[str], Any]) -> None:
    layer = restore(CONV_FAULT[built.name])
    kernel, *rest = layer.get_weights()
    kernel[..., 3] *= 1.02  # one output channel 2% off
    layer.set_weights([kernel, *rest])
    found = loc.localise_models(built.torch_model, built.keras_model, built.x)
    assert found.first_divergent_layer == CONV_FAULT[built.name]
    by_name = {e.name: e.max_rel for e in found.layers}
    assert by_name[CONV_FAULT[built.name]] > 1e-3


@pytest.mark.parametrize("built", list(BN_FAULT), indirect=True)
def test_changed_running_variance_is_named(built: Twins, restore: Callable[[str], Any]) -> None:
    layer = restore(BN_FAULT[built.name])
    gamma, beta, mean, var = layer.get_weights()
    var[5] *= 1.5
    layer.set_weights([gamma, beta, mean, var])
    found = loc.localise_models(built.torch_model, built.keras_model, built.x)
    assert found.first_divergent_layer == BN_FAULT[built.name]
    names = [e.name for e in found.layers]
    # The conv right before it was compared and is clean: the fault is the BN's.
    conv = BN_FAULT[built.name].replace(".bn", ".conv")
    assert conv in names and names.index(conv) < names.index(BN_FAULT[built.name])


def _same_padding(real: Callable[..., Any], target: str) -> Callable[..., Any]:
    """A drop-in for a Keras builder helper that makes layer ``target`` use 'same' padding."""
    from keras import layers

    def helper(x: Any, *args: Any, name: str, **kwargs: Any) -> Any:
        if name != target:
            return real(x, *args, name=name, **kwargs)
        stride = kwargs.get("stride") or 1
        if real.__name__ == "conv2d":
            filters, kernel = args
            return layers.Conv2D(filters, kernel, strides=stride, padding="same",
                                 use_bias=kwargs.get("use_bias", True), name=name)(x)
        (pool,) = args  # avg_pool: TF's 'same' leaves the padding out of the mean
        return layers.AveragePooling2D(pool, strides=stride, padding="same", name=name)(x)

    return helper


# (module to patch, helper, layer given 'same' padding, the layer that must be named).
M = "codenn_convert.models"
SAME_FAULT = {
    # 11x11/4 pad 2 -> 'same' also changes the map size (16 vs 15): the shapes differ.
    "alexnet": (f"{M}.alexnet.keras_alexnet", "conv2d", "features.0", "features.0"),
    # 3x3/2 pad 1 -> 'same' pads (0, 1) at an even size: same shape, shifted by a pixel.
    "resnet50": (f"{M}.resnet.keras_resnet", "conv2d", "layer2.0.conv2", "layer2.0.conv2"),
    # Inception's padded convs are all stride 1, where 'same' *is* torch's padding; its
    # classic 'same' bug is the branch pool (F.avg_pool2d, no module of its own), which the
    # first module after it, the branch_pool conv, shows.
    "inception_v3": (f"{M}.inception.keras_inception", "avg_pool", "Mixed_5b.avg_pool",
                     "Mixed_5b.branch_pool.conv"),
}


def test_same_padding_is_named(built: Twins, monkeypatch: pytest.MonkeyPatch) -> None:
    module, helper, target, expected = SAME_FAULT[built.name]
    mod = __import__(module, fromlist=[helper])
    monkeypatch.setattr(mod, helper, _same_padding(getattr(mod, helper), target))
    faulty = twins.keras_twin(built.name, built.state, input_size=SIZES[built.name])
    found = loc.localise_models(built.torch_model, faulty, built.x)
    assert found.first_divergent_layer == expected
    assert {e.name: e.max_rel for e in found.layers}[expected] > 1e-3


ALEXNET_ONLY = pytest.mark.parametrize("built", ["alexnet"], indirect=True)


@ALEXNET_ONLY
def test_chunks_give_the_same_errors(built: Twins) -> None:
    whole = loc.localise_models(built.torch_model, built.keras_model, built.x)
    # A budget below one layer's output: one layer per chunk, 21 chunks.
    tiny = loc.localise_models(built.torch_model, built.keras_model, built.x, budget_bytes=1)
    assert [(e.name, e.max_rel) for e in tiny.layers] == [
        (e.name, e.max_rel) for e in whole.layers]


def test_chunking_respects_the_budget() -> None:
    layers = [matching.MappedLayer(f"l{i}", (4, 8, 8)) for i in range(10)]  # 1 KiB a sample
    chunks = loc._chunks(layers, lambda m: m.nbytes(2) * 2, 4096 * 4)  # 4 KiB a layer
    assert [len(c) for c in chunks] == [4, 4, 2]
    assert loc._chunks(layers[:1], lambda m: 10**9, 1) == [layers[:1]]  # never empty


@ALEXNET_ONLY
def test_torch_probe_stops_after_the_last_wanted_layer(built: Twins) -> None:
    layers = matching.mapped_layers(built.keras_model, built.torch_model, built.x)
    probe = probes.TorchProbe(built.torch_model, layers)
    ran: list[str] = []
    handle = built.torch_model.classifier.register_forward_pre_hook(
        lambda *_: ran.append("classifier"))
    try:
        out = probe.run(["features.3"], built.x)
    finally:
        handle.remove()
    assert list(out) == ["features.3"] and out["features.3"].shape == (2, 192, 7, 7)
    assert ran == []  # the classifier never ran


def test_layer_error_semantics() -> None:
    a = np.array([[4.0, -2.0], [1.0, 0.5]], np.float32)
    assert lay.layer_error(a, a.copy()) == 0.0
    assert lay.layer_error(a, a + np.float32(0.04)) == pytest.approx(0.01)  # relative to |4|
    assert lay.layer_error(a, a[:1]) == float("inf")  # shapes differ
    n = a.copy()
    n[0, 1] = np.nan
    # Issue 9: NaN/Inf never agree, even at the same place.
    assert lay.layer_error(n, n.copy()) == float("inf")
    assert lay.layer_error(n, a) == float("inf")
    assert lay.first_divergent([lay.LayerError("x", 1e-6), lay.LayerError("y", np.nan),
                                lay.LayerError("z", 1.0)], 1e-4) == "y"


def test_flattened_keras_vectors_are_put_in_torch_order() -> None:
    rng = np.random.default_rng(0)
    nchw = rng.standard_normal((2, 5, 3, 4)).astype(np.float32)
    keras_flat = nchw.transpose(0, 2, 3, 1).reshape(2, -1)  # Flatten of the NHWC map
    layer = matching.MappedLayer("classifier.0", (60,), flatten_hwc=(3, 4, 5))
    got = matching.to_torch_layout(keras_flat, layer, "NHWC")
    assert np.array_equal(got, torch.flatten(torch.from_numpy(nchw), 1).numpy())
    assert np.array_equal(
        matching.to_torch_layout(nchw, matching.MappedLayer("m", (5, 3, 4)), "NCHW"), nchw)


@ALEXNET_ONLY
def test_alexnet_flatten_dropout_is_compared_in_torch_order(built: Twins) -> None:
    """AlexNet's classifier.0 is a Dropout on the flattened map."""
    found = loc.localise_models(built.torch_model, built.keras_model, built.x)
    errors = {e.name: e.max_rel for e in found.layers}
    assert errors["classifier.0"] <= lay.LAYER_RTOL  # would be O(1) in H,W,C order


@pytest.mark.parametrize(
    ("shape", "layout"),
    [(["N", 3, 64, 80], "NCHW"), (["N", 64, 80, 3], "NHWC"), ([2, 3, 64, 80], "NCHW"),
     (["N", 3, "H", "W"], "NCHW"), (["N", "H", "W", 3], "NHWC")],
)
def test_onnx_input_layout(shape: list[Any], layout: str) -> None:
    assert ort.onnx_input_layout(shape, (64, 80)) == layout


def test_onnx_input_layout_refuses_other_shapes() -> None:
    from codenn_convert.errors import UsageError

    with pytest.raises(UsageError, match="fits neither"):
        ort.onnx_input_layout(["N", 3, 32, 32], (64, 80))
    with pytest.raises(UsageError, match="4-d"):
        ort.onnx_input_layout(["N", 3], (64, 80))
