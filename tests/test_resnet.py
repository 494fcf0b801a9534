"""ResNet twins: torchvision layout, registry metadata, torch-vs-Keras parity, exact mapping."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import functools
import re
from typing import Any

import numpy as np
import pytest
import torch

from codenn_convert.registry import get_model, get_spec, list_models
from codenn_convert.twins import mapper
from codenn_convert.twins.build import keras_twin, torch_twin
from codenn_convert.twins.init import realistic_state

RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")

# Parameter counts published in torchvision's weights docs (ResNet*_Weights.IMAGENET1K_V1).
TORCHVISION_NUM_PARAMS = {
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
}

BN_SUFFIXES = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _bn_keys(prefix: str) -> list[str]:
    return [f"{prefix}.{s}" for s in BN_SUFFIXES]


def _meta_torch(name: str) -> Any:
    """The torch twin on the meta device: exact keys and shapes, no memory or init time."""
    with torch.device("meta"):
        return get_model(name, "torch")


@functools.cache
def _state(name: str) -> dict[str, np.ndarray]:
    return realistic_state(name, seed=0)


@functools.cache
def _torch_model(name: str) -> Any:
    return torch_twin(name, _state(name))


def _max_rel(ref: np.ndarray, other: np.ndarray) -> float:
    return float(np.abs(ref - other).max() / np.abs(ref).max())


# --- torchvision layout -----------------------------------------------------------------


def test_resnet50_state_dict_matches_torchvision_layout() -> None:
    state = _meta_torch("resnet50").state_dict()
    keys = list(state)
    shapes = {k: tuple(v.shape) for k, v in state.items()}

    # 53 convs (stem, 16 blocks x 3, 4 downsamples), 53 BNs x 5 entries, fc weight + bias.
    assert len(keys) == 53 + 53 * 5 + 2 == 320
    assert keys[:7] == ["conv1.weight", *_bn_keys("bn1"), "layer1.0.conv1.weight"]
    assert keys[-2:] == ["fc.weight", "fc.bias"]

    # The first block of each stage owns a downsample (layer1: 64 -> 256 channels).
    first = [k for k in keys if k.startswith("layer1.0.")]
    assert first == [
        "layer1.0.conv1.weight", *_bn_keys("layer1.0.bn1"),
        "layer1.0.conv2.weight", *_bn_keys("layer1.0.bn2"),
        "layer1.0.conv3.weight", *_bn_keys("layer1.0.bn3"),
        "layer1.0.downsample.0.weight", *_bn_keys("layer1.0.downsample.1"),
    ]  # fmt: skip
    assert not any(k.startswith("layer1.1.downsample") for k in keys)
    blocks = {
        stage: len({m.group(1) for k in keys if (m := re.match(rf"layer{stage}\.(\d+)\.", k))})
        for stage in (1, 2, 3, 4)
    }
    assert blocks == {1: 3, 2: 4, 3: 6, 4: 3}

    assert shapes["conv1.weight"] == (64, 3, 7, 7)
    assert shapes["layer1.0.conv1.weight"] == (64, 64, 1, 1)
    # v1.5: the stride sits on the 3x3 conv2; conv2 of layer2.0 maps 128 -> 128.
    assert shapes["layer2.0.conv2.weight"] == (128, 128, 3, 3)
    assert shapes["layer2.0.downsample.0.weight"] == (512, 256, 1, 1)
    assert shapes["layer4.2.conv3.weight"] == (2048, 512, 1, 1)
    assert shapes["layer4.2.bn3.running_var"] == (2048,)
    assert shapes["layer4.2.bn3.num_batches_tracked"] == ()
    assert shapes["fc.weight"] == (1000, 2048)
    assert "conv1.bias" not in shapes and "layer1.0.conv2.bias" not in shapes


def test_resnet50_strides_and_eps_are_torchvision() -> None:
    model = _meta_torch("resnet50")
    block = model.layer2[0]
    assert (block.conv1.stride, block.conv2.stride, block.downsample[0].stride) == (
        (1, 1), (2, 2), (2, 2),
    )  # fmt: skip
    assert (model.conv1.padding, model.maxpool.padding) == ((3, 3), 1)
    assert {m.eps for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)} == {1e-5}


def test_resnet18_blocks_are_basic() -> None:
    keys = list(_meta_torch("resnet18").state_dict())
    assert len(keys) == 122
    assert not any(".conv3." in k or ".bn3." in k for k in keys)
    assert "layer1.0.downsample.0.weight" not in keys  # 64 -> 64 at stride 1: identity
    assert "layer2.0.downsample.0.weight" in keys


# --- registry metadata ------------------------------------------------------------------


@pytest.mark.parametrize("name", RESNETS)
def test_param_count(name: str) -> None:
    count = sum(p.numel() for p in _meta_torch(name).parameters())
    assert count == TORCHVISION_NUM_PARAMS[name] == get_spec(name).num_params


def test_specs() -> None:
    assert [n for n in list_models() if n.startswith("resnet")] == list(RESNETS)
    assert [n for n in RESNETS if get_spec(n).default] == ["resnet50"]
    for name in RESNETS:
        spec = get_spec(name)
        assert spec.family == "resnet"
        assert spec.input_size == (224, 224)
        assert spec.min_input_size == (1, 1)



# --- Keras twin structure ---------------------------------------------------------------


def test_keras_layers_follow_torch_semantics() -> None:
    import keras

    model = get_model("resnet18", "keras", input_size=(64, 97))
    assert model.layers[0].name == "input"
    by_name = {layer.name: layer for layer in model.layers}
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(bns) == 20
    assert {(bn.epsilon, bn.momentum) for bn in bns} == {(1e-5, 0.9)}

    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert {c.padding for c in convs} == {"valid"}
    for conv in convs:
        # Every conv with k > 1 is fed by its explicit symmetric padding layer.
        if conv.kernel_size != (1, 1):
            pad = by_name[f"{conv.name}.pad"]
            assert conv.input is pad.output
            assert pad.padding == ((k := conv.kernel_size[0] // 2, k), (k, k))
    assert by_name["maxpool.pad"].value == float("-inf")

    weighted = {p.name for p in mapper.plan_keras_model(model)}
    torch_paths = {n for n, m in _meta_torch("resnet18").named_modules() if m._parameters}
    assert weighted == torch_paths
    fc = [p for p in mapper.plan_keras_model(model) if p.name == "fc"]
    assert fc[0].kind == "dense"  # a 1x1 map flattens alike in NCHW and NHWC


# --- realistic init ---------------------------------------------------------------------


def test_init_hook_shrinks_last_bn_of_each_branch() -> None:
    state = _state("resnet50")
    for key, value in state.items():
        if key.endswith("bn3.weight"):
            assert value.min() >= 0.0 and value.max() <= 0.2
        elif key.endswith(("bn1.weight", "bn2.weight", "downsample.1.weight")):
            assert value.min() >= 0.5 and value.max() <= 1.5
    # Calibrated statistics, not identity ones.
    assert np.abs(state["layer3.0.bn2.running_mean"]).max() > 0.01
    assert np.abs(state["layer3.0.bn2.running_var"] - 1.0).max() > 0.01

    basic = _state("resnet18")
    assert basic["layer4.1.bn2.weight"].max() <= 0.2
    assert basic["layer4.1.bn1.weight"].min() >= 0.5


# --- parity -----------------------------------------------------------------------------

# 65x97 keeps every map odd (65 -> 33 -> 17 -> 9 -> 5 -> 3), where TF's 'same' happens to pad
# a stride-2 window symmetrically and so cannot betray a padding bug. 64x97 feeds every
# stride-2 op an even height (64 -> 32 -> 16 -> 8 -> 4 -> 2), where 'same' pads (0, 1) or
# (2, 3): that size catches it. The minimum input (1x1) is the model contract's
# (tests/test_models.py).
PARITY_CASES = [
    ("resnet18", (65, 97)),
    ("resnet18", (64, 97)),
    ("resnet50", (65, 97)),
    ("resnet50", (64, 97)),
]


@pytest.mark.parametrize(("name", "size"), PARITY_CASES)
def test_torch_keras_parity(name: str, size: tuple[int, int]) -> None:
    kmodel = keras_twin(name, _state(name), input_size=size)
    x = np.random.default_rng(1).standard_normal((2, 3, *size)).astype(np.float32)
    with torch.no_grad():
        ref = _torch_model(name)(torch.from_numpy(x)).numpy()
    out = np.asarray(kmodel(x.transpose(0, 2, 3, 1), training=False))
    assert out.shape == ref.shape == (2, 1000)
    assert np.isfinite(ref).all()
    assert np.abs(ref).max() > 0.1  # realistic logits, not a collapsed output
    assert _max_rel(ref, out) <= 1e-5
