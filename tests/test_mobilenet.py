"""MobileNetV2/V3: torchvision's layout, the odd size, keras.applications' files (both
layouts, include_preprocessing, minimalistic), and faults planted in a depthwise conv and a
squeeze-excitation block. The generic contract (convert, export, verify) is the registry's."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from codenn_convert.checkpoints import files as checkpoint
from codenn_convert.models.mobilenet import make_divisible, v2_config, v3_config
from codenn_convert.registry import get_model, get_spec
from codenn_convert.twins import build as twins
from codenn_convert.twins import mapper
from codenn_convert.twins.init import realistic_model, realistic_state, torch_state_of
from codenn_convert.verification import localise as loc
from codenn_convert.verification import seeded_batch
from tests.conftest import max_rel, run_cli_here
from tests.keras_apps import realistic_keras_application

TORCHVISION = ("mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large")
# torchvision's published parameter counts (its model docs / weights metadata).
TORCHVISION_PARAMS = {"mobilenet_v2": 3_504_872, "mobilenet_v3_small": 2_542_856,
                      "mobilenet_v3_large": 5_483_032}


@pytest.mark.parametrize("name", TORCHVISION)
def test_torchvision_layout_on_the_meta_device(name: str) -> None:
    with torch.device("meta"):
        model = get_model(name, "torch")
    assert sum(p.numel() for p in model.parameters()) == TORCHVISION_PARAMS[name]
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    mods = dict(model.named_modules())
    eps = 1e-5 if name == "mobilenet_v2" else 1e-3
    assert {m.eps for m in mods.values() if isinstance(m, torch.nn.BatchNorm2d)} == {eps}
    if name == "mobilenet_v2":  # torchvision's keys: conv.<i>, project conv and BN apart
        assert shapes["features.1.conv.0.0.weight"] == (32, 1, 3, 3)  # depthwise, no expand
        assert shapes["features.2.conv.1.0.weight"] == (96, 1, 3, 3)
        assert shapes["features.2.conv.3.running_var"] == (24,)
        assert shapes["features.18.0.weight"] == (1280, 320, 1, 1)
        assert shapes["classifier.1.weight"] == (1000, 1280)
    else:  # block.<i>, SE as torchvision.ops.SqueezeExcitation (fc1, fc2)
        se = "features.4.block.2" if name == "mobilenet_v3_large" else "features.1.block.1"
        assert isinstance(mods[se].scale_activation, torch.nn.Hardsigmoid)
        assert shapes[f"{se}.fc1.weight"][1:] == (72 if "large" in name else 16, 1, 1)
        assert shapes["classifier.0.weight"][0] == (1280 if "large" in name else 1024)
        assert shapes["classifier.3.weight"][0] == 1000
    depthwise = [m for m in mods.values() if isinstance(m, torch.nn.Conv2d) and m.groups > 1]
    assert depthwise and all(m.groups == m.in_channels == m.out_channels for m in depthwise)


def test_width_rounding_is_torchvision_and_keras_data() -> None:
    assert [make_divisible(v) for v in (11.2, 3.0, 35.0, 36.0)] == [16, 8, 32, 40]
    half = v2_config(0.5)
    assert (half.stem, half.blocks[0].out, half.last_conv) == (16, 8, 1280)
    wide = v2_config(1.4)
    assert (wide.stem, wide.last_conv) == (48, 1792)
    # Keras truncates c * alpha before rounding; torchvision does not: 24 * 0.35 = 8.4.
    assert v2_config(0.35).blocks[1].out == make_divisible(8.4) == 8
    k = v3_config("mobilenet_v3_small", 0.75, keras_style=True)
    assert k.stem == 16 and k.blocks[0].expanded == 16 and k.head == 1024
    assert v3_config("mobilenet_v3_large").bn_eps == 1e-3


@pytest.mark.parametrize("name", ["mobilenet_v3_small", "mobilenet_v2",
                                  "keras_mobilenet_v3_small"])
def test_odd_non_square_size(name: str) -> None:
    """201x239: odd and non-square, where stride-2 padding bugs shift the maps. The round
    trip through the Keras layout is bit-exact; the Keras twin computes torch's function."""
    size = (201, 239)
    tmodel = realistic_model(name, seed=0)
    state = torch_state_of(tmodel)
    kmodel = get_model(name, "keras", input_size=size)
    plan = mapper.plan_keras_model(kmodel)
    weights, tracked = mapper.torch_to_keras(state, plan, name)
    back = mapper.keras_to_torch(weights, plan, name, tracked)
    assert all(back[k].dtype == v.dtype and np.array_equal(back[k], v) for k, v in state.items())
    mapper.set_keras_weights(kmodel, weights)
    x = seeded_batch(2, size, seed=1)
    with torch.no_grad():
        want = tmodel(torch.from_numpy(x)).numpy()
    got = np.asarray(kmodel(x.transpose(0, 2, 3, 1)))
    assert np.abs(want).max() > 0.5 and max_rel(want, got) <= 1e-5


# keras.applications function -> (our model, input size). Small even sizes: TF's 'same' /
# correct_pad pads asymmetrically only there.
APPS = {"MobileNetV2": ("keras_mobilenet_v2", 64), "MobileNetV3Small": (
    "keras_mobilenet_v3_small", 64), "MobileNetV3Large": ("keras_mobilenet_v3_large", 64)}


def _app(app: str, size: int, **kwargs: Any) -> Any:
    import keras

    if app != "MobileNetV2":
        kwargs.setdefault("include_preprocessing", False)
    return getattr(keras.applications, app)(weights=None, input_shape=(size, size, 3),
                                            classifier_activation=None, **kwargs)


def _legacy(model: Any, path: Path) -> Path:
    import h5py
    from keras.src.legacy.saving.legacy_h5_format import save_weights_to_hdf5_group

    with h5py.File(path, "w") as f:
        save_weights_to_hdf5_group(f, model)
    return path


@pytest.mark.parametrize("app", list(APPS))
def test_keras_applications_both_layouts_into_torch_and_onnx(app: str, tmp_path: Path) -> None:
    """``codenn convert SRC DST`` (no model name) from the Keras 3 file, and ``codenn
    export`` from the legacy HDF5: both match keras.applications' logits within 1e-5."""
    import onnxruntime as ort

    name, size = APPS[app]
    model = _app(app, size)
    x = realistic_keras_application(model, seed=0, positive_shift=True)
    ref = np.asarray(model(x, training=False))
    keras3 = tmp_path / "app.weights.h5"
    model.save_weights(str(keras3))
    legacy = _legacy(model, tmp_path / "app_weights_tf_dim_ordering_tf_kernels.h5")
    del model
    gc.collect()
    assert np.abs(ref).max() > 0.5 and np.isfinite(ref).all()
    nchw = np.ascontiguousarray(x.transpose(0, 3, 1, 2))

    pth = tmp_path / f"{name}.pth"
    proc = run_cli_here("convert", str(keras3), str(pth))
    assert proc.returncode == 0, proc.stderr
    assert f"note: identified {name}" in proc.stderr, proc.stderr
    tmodel = twins.torch_twin(name, checkpoint.load_torch_state(pth))
    with torch.no_grad():
        assert max_rel(ref, tmodel(torch.from_numpy(nchw)).numpy()) <= 1e-5

    onnx_file = tmp_path / f"{name}.onnx"
    proc = run_cli_here("export", name, "--weights", str(legacy), "--input-size", str(size),
                   str(size), "-o", str(onnx_file))
    assert proc.returncode == 0, proc.stderr
    got = ort.InferenceSession(str(onnx_file)).run(None, {"input": nchw})[0]
    assert max_rel(ref, got) <= 1e-5


def test_include_preprocessing_is_weight_free(tmp_path: Path) -> None:
    """MobileNetV3 with ``include_preprocessing`` (a Rescaling to [-1, 1]) saves the same
    weights as without; our twins take the rescaled input, x / 127.5 - 1."""
    off = _app("MobileNetV3Small", 32)
    x = realistic_keras_application(off, seed=0, positive_shift=True)
    on = _app("MobileNetV3Small", 32, include_preprocessing=True)
    on.set_weights(off.get_weights())
    files = [tmp_path / "on.weights.h5", tmp_path / "off.weights.h5"]
    on.save_weights(str(files[0]))
    off.save_weights(str(files[1]))
    (a, _), (b, _) = (checkpoint.read_keras_weights(f) for f in files)
    assert a.keys() == b.keys() and all(
        all(np.array_equal(u, v) for u, v in zip(a[k], b[k], strict=True)) for k in a)
    pixels = (x + 1.0) * 127.5  # what the Rescaling maps back to x (up to rounding)
    assert max_rel(np.asarray(off(x)), np.asarray(on(pixels))) <= 1e-5


def test_minimalistic_is_refused_by_name(tmp_path: Path) -> None:
    model = _app("MobileNetV3Small", 32, minimalistic=True)
    path = tmp_path / "small.weights.h5"
    model.save_weights(str(path))
    proc = run_cli_here("convert", str(path), str(tmp_path / "out.pth"))
    assert proc.returncode == 2, proc.stderr
    assert "MobileNetV3Small(minimalistic=True)" in proc.stderr
    assert not (tmp_path / "out.pth").exists()


# Planted faults: one depthwise channel 2% off; one SE gate's fc2 bias shifted.
FAULTS = {"depthwise": "features.5.block.1.0", "se": "features.5.block.2.fc2"}


@pytest.fixture(scope="module")
def v3_twins() -> tuple[Any, Any, np.ndarray]:
    name, size = "mobilenet_v3_large", (64, 64)
    state = realistic_state(name, seed=0)
    return (twins.torch_twin(name, state), twins.keras_twin(name, state, input_size=size),
            seeded_batch(2, size, seed=1))


@pytest.mark.parametrize("fault", list(FAULTS))
def test_planted_fault_is_localised(fault: str, v3_twins: tuple[Any, Any, np.ndarray]) -> None:
    tmodel, kmodel, x = v3_twins
    clean = loc.localise_models(tmodel, kmodel, x)
    assert clean.first_divergent_layer is None
    layer = kmodel.get_layer(FAULTS[fault])
    saved = layer.get_weights()
    try:
        if fault == "depthwise":
            kernel = saved[0].copy()
            kernel[..., 3, 0] *= 1.02  # input channel 3's filter
            layer.set_weights([kernel, *saved[1:]])
        else:
            layer.set_weights([saved[0], saved[1] + 0.05])
        found = loc.localise_models(tmodel, kmodel, x)
    finally:
        layer.set_weights(saved)
    assert found.first_divergent_layer == FAULTS[fault]
    assert {e.name: e.max_rel for e in found.layers}[FAULTS[fault]] > 1e-3


def test_spec_defaults() -> None:
    assert get_spec("mobilenet_v3_large").default
    assert dict(get_spec("keras_mobilenet_v2").builder_kwargs) == {
        "arch": "mobilenet_v2", "keras_style": True}


@pytest.mark.parametrize(("app", "alpha"), [("MobileNetV2", 0.35), ("MobileNetV3Small", 0.75),
                                            ("MobileNetV3Large", 1.3)])
def test_keras_alpha_rules_match_keras_applications(app: str, alpha: float) -> None:
    """``width_mult`` on a keras variant is keras.applications' ``alpha``: the same layer
    names (after renaming) and the same variable shapes, where Keras' rounding differs from
    torchvision's (V2 truncates, V3 keeps a 16-channel stem, head width)."""
    from codenn_convert.models.mobilenet import config
    from codenn_convert.models.mobilenet.keras_applications import keras_names

    name, _ = APPS[app]
    arch = get_spec(name).builder_kwargs["arch"]
    theirs = {layer.name: tuple(tuple(w.shape) for w in layer.weights)
              for layer in _app(app, 32, alpha=alpha).layers if layer.weights}
    ours = {p.name: p.keras_shapes for p in mapper.plan_keras_model(
        get_model(name, "keras", input_size=(32, 32), width_mult=alpha))}
    names = keras_names(config(arch, width_mult=alpha, keras_style=True))
    assert set(theirs) == set(names)
    assert {names[k]: v for k, v in theirs.items()} == ours
