"""InceptionV3 twins: torchvision layout, transform_input, the aux head, parity, exact mapping."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import functools
from typing import Any

import numpy as np
import pytest
import torch

from codenn_convert.registry import get_model, get_spec, list_models
from codenn_convert.twins.build import inference_view, keras_twin, mapper, torch_twin
from codenn_convert.twins.init import realistic_state

NAME = "inception_v3"
# torchvision's documented count (Inception_V3_Weights.IMAGENET1K_V1), aux head included.
NUM_PARAMS = 27_161_264
# AuxLogits: conv0 768*128 + BN 2*128, conv1 128*768*25 + BN 2*768, fc 768*1000 + 1000.
AUX_PARAMS = 98_304 + 256 + 2_457_600 + 1_536 + 769_000
BN_SUFFIXES = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
# torchvision's module order: AuxLogits is registered between Mixed_6e and Mixed_7a.
TOP_LEVEL = [
    "Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
    "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
    "Mixed_6e", "AuxLogits", "Mixed_7a", "Mixed_7b", "Mixed_7c", "fc",
]  # fmt: skip


def _meta_torch(**kwargs: Any) -> Any:
    """The torch twin on the meta device: exact keys and shapes, no memory or init time."""
    with torch.device("meta"):
        return get_model(NAME, "torch", **kwargs)


@functools.cache
def _state() -> dict[str, np.ndarray]:
    return realistic_state(NAME, seed=0)


def _state_without_aux() -> dict[str, np.ndarray]:
    return {k: v for k, v in _state().items() if not k.startswith("AuxLogits.")}


@functools.cache
def _keras(size: tuple[int, int], transform_input: bool = False, aux_logits: bool = True) -> Any:
    state = _state() if aux_logits else _state_without_aux()
    return keras_twin(
        NAME, state, input_size=size, transform_input=transform_input, aux_logits=aux_logits
    )


def _batch(size: tuple[int, int], n: int = 2, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, *size)).astype(np.float32)


def _max_rel(ref: np.ndarray, other: np.ndarray) -> float:
    return float(np.abs(ref - other).max() / np.abs(ref).max())


# --- torchvision layout -----------------------------------------------------------------


def test_state_dict_matches_torchvision_layout() -> None:
    state = _meta_torch().state_dict()
    keys = list(state)
    shapes = {k: tuple(v.shape) for k, v in state.items()}

    # 96 BasicConv2d (stem 5, A 3x7, B 4, C 4x10, D 6, E 2x9, aux 2) x (conv + 5 BN entries),
    # plus fc and AuxLogits.fc (weight + bias each).
    assert len(keys) == 96 * 6 + 4 == 580
    assert keys[:6] == [
        "Conv2d_1a_3x3.conv.weight",
        *(f"Conv2d_1a_3x3.bn.{s}" for s in BN_SUFFIXES),
    ]
    top = list(dict.fromkeys(k.split(".")[0] for k in keys))
    assert top == TOP_LEVEL
    assert keys[-2:] == ["fc.weight", "fc.bias"]

    assert shapes["Conv2d_1a_3x3.conv.weight"] == (32, 3, 3, 3)
    assert shapes["Conv2d_1a_3x3.bn.running_var"] == (32,)
    assert shapes["Conv2d_1a_3x3.bn.num_batches_tracked"] == ()
    assert shapes["Mixed_5b.branch_pool.conv.weight"] == (32, 192, 1, 1)
    assert shapes["Mixed_6a.branch3x3.conv.weight"] == (384, 288, 3, 3)
    assert shapes["Mixed_6b.branch7x7_2.conv.weight"] == (128, 128, 1, 7)
    assert shapes["Mixed_6b.branch7x7_3.conv.weight"] == (192, 128, 7, 1)
    assert shapes["Mixed_7a.branch7x7x3_4.conv.weight"] == (192, 192, 3, 3)
    assert shapes["Mixed_7b.branch3x3_2b.conv.weight"] == (384, 384, 3, 1)
    assert shapes["Mixed_7c.branch_pool.conv.weight"] == (192, 2048, 1, 1)
    assert shapes["AuxLogits.conv0.conv.weight"] == (128, 768, 1, 1)
    assert shapes["AuxLogits.conv1.conv.weight"] == (768, 128, 5, 5)
    assert shapes["AuxLogits.fc.weight"] == (1000, 768)
    assert shapes["fc.weight"] == (1000, 2048)
    assert not any(k.endswith("conv.bias") for k in keys)  # BasicConv2d convs have no bias


def test_modules_and_eps_are_torchvision() -> None:
    model = _meta_torch()
    children = [n for n, _ in model.named_children()]
    for name in ("maxpool1", "maxpool2", "avgpool", "dropout"):
        assert name in children
    assert children.index("maxpool1") == children.index("Conv2d_2b_3x3") + 1
    assert children.index("maxpool2") == children.index("Conv2d_4a_3x3") + 1
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(bns) == 96 and {m.eps for m in bns} == {1e-3}
    assert model.Conv2d_1a_3x3.conv.stride == (2, 2)
    assert model.Mixed_6b.branch7x7dbl_2.conv.padding == (3, 0)
    assert not model.transform_input  # off unless asked for


def test_param_counts_and_no_aux_variant() -> None:
    count = sum(p.numel() for p in _meta_torch().parameters())
    assert count == NUM_PARAMS == get_spec(NAME).num_params
    bare = _meta_torch(aux_logits=False)
    assert bare.AuxLogits is None
    assert sum(p.numel() for p in bare.parameters()) == NUM_PARAMS - AUX_PARAMS == 23_834_568
    keys = list(bare.state_dict())
    assert len(keys) == 580 - 2 * 6 - 2 and not any(k.startswith("AuxLogits") for k in keys)


def test_spec() -> None:
    spec = get_spec(NAME)
    assert NAME in list_models(default_only=True)
    assert spec.family == "inception"
    assert spec.input_size == (299, 299)
    assert spec.min_input_size == (75, 75)


# --- input size limit -------------------------------------------------------------------


def test_75_is_the_smallest_input() -> None:
    model = get_model(NAME, "torch").eval()
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 75, 75)).shape == (1, 1000)
        for size in ((74, 75), (75, 74)):
            with pytest.raises(RuntimeError, match="Kernel size can't be greater"):
                model(torch.zeros(1, 3, *size))



# --- Keras twin structure ---------------------------------------------------------------


def test_keras_layers_follow_torch_semantics() -> None:
    import keras

    model = _keras((75, 75))
    assert model.layers[0].name == "input"
    by_name = {layer.name: layer for layer in model.layers}
    assert "transform_input" not in by_name  # off by default

    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(bns) == 96 and {(bn.epsilon, bn.momentum) for bn in bns} == {(1e-3, 0.9)}
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert {(c.padding, c.use_bias) for c in convs} == {("valid", False)}
    torch_model = _meta_torch()
    for conv in convs:
        # Explicit symmetric padding equal to torch's, in front of every padded conv.
        ph, pw = torch_model.get_submodule(conv.name).padding
        if (ph, pw) != (0, 0):
            assert conv.input is by_name[f"{conv.name}.pad"].output
            assert by_name[f"{conv.name}.pad"].padding == ((ph, ph), (pw, pw))
        else:
            assert f"{conv.name}.pad" not in by_name
    # Branch avg-pools: zero padding then a 'valid' 3x3/1 pool, i.e. count_include_pad=True.
    for block in ("Mixed_5b", "Mixed_6b", "Mixed_7c"):
        pool, pad = by_name[f"{block}.avg_pool"], by_name[f"{block}.avg_pool.pad"]
        assert isinstance(pad, keras.layers.ZeroPadding2D) and pool.input is pad.output
        assert (pool.pool_size, pool.strides, pool.padding) == ((3, 3), (1, 1), "valid")

    # Every torch module with parameters is a weighted Keras layer of the same name, and the
    # plan implies exactly the torch state's keys and shapes (aux head included).
    plan = mapper.plan_keras_model(model)
    expected = mapper.expected_torch_state(plan)
    assert expected == {k: tuple(v.shape) for k, v in torch_model.state_dict().items()}
    assert {p.kind for p in plan} == {"conv", "batchnorm", "dense"}


def test_keras_outputs_logits_first_then_aux() -> None:
    model = _keras((75, 75))
    assert [t.shape for t in model.outputs] == [(None, 1000), (None, 1000)]
    assert model.outputs[0] is model.get_layer("fc").output
    assert model.outputs[1] is model.get_layer("AuxLogits.fc").output
    view = inference_view(model)
    assert len(view.outputs) == 1 and view.outputs[0] is model.get_layer("fc").output

    bare = _keras((75, 75), aux_logits=False)
    assert len(bare.outputs) == 1 and inference_view(bare) is bare
    assert not any(layer.name.startswith("AuxLogits") for layer in bare.layers)


def test_keras_aux_head_refuses_maps_below_17x17() -> None:
    # At 75x75 Mixed_6e is 3x3: the aux layers exist (they own checkpoint weights) but, as
    # in torch's training mode, the head cannot run. The logits-only view still works.
    model = _keras((75, 75))
    x = _batch((75, 75), n=1).transpose(0, 2, 3, 1)
    with pytest.raises(ValueError, match=r"at least 17x17 \(input >= 299x299\).*3x3"):
        model(x, training=False)
    assert np.asarray(inference_view(model)(x, training=False)).shape == (1, 1000)


# --- torch twin outputs -----------------------------------------------------------------


def test_torch_training_mode_returns_inception_outputs() -> None:
    from codenn_convert.models.inception.torch_inception import InceptionOutputs

    model = torch_twin(NAME, _state()).train()
    with torch.no_grad():
        out = model(torch.from_numpy(_batch((299, 299))))
        assert isinstance(out, InceptionOutputs)
        assert out.logits.shape == out.aux_logits.shape == (2, 1000)
        # Below 299 the aux head's 5x5 windows do not fit; torch says so in training mode.
        with pytest.raises(ValueError, match="at least 17x17.*got 16x17"):
            model(torch.from_numpy(_batch((298, 299))))
        bare = torch_twin(NAME, _state_without_aux(), aux_logits=False).train()
        assert isinstance(bare(torch.from_numpy(_batch((75, 75)))), torch.Tensor)
        assert isinstance(model.eval()(torch.from_numpy(_batch((75, 75)))), torch.Tensor)


# --- transform_input --------------------------------------------------------------------


def test_transform_input_is_torchvisions_formula() -> None:
    x = torch.from_numpy(_batch((5, 7)))
    model = get_model(NAME, "torch", transform_input=True)
    expected = torch.cat(
        [
            torch.unsqueeze(x[:, 0], 1) * (0.229 / 0.5) + (0.485 - 0.5) / 0.5,
            torch.unsqueeze(x[:, 1], 1) * (0.224 / 0.5) + (0.456 - 0.5) / 0.5,
            torch.unsqueeze(x[:, 2], 1) * (0.225 / 0.5) + (0.406 - 0.5) / 0.5,
        ],
        1,
    )
    got = model._transform_input(x)
    assert torch.equal(got, expected) and not torch.equal(got, x)
    assert torch.equal(get_model(NAME, "torch")._transform_input(x), x)


def test_keras_transform_input_matches_torch_exactly() -> None:
    import keras

    kmodel = _keras((75, 75), transform_input=True)
    layer = kmodel.get_layer("transform_input")
    assert not layer.weights
    x = _batch((75, 75))
    got = np.asarray(keras.Model(kmodel.inputs[0], layer.output)(x.transpose(0, 2, 3, 1)))
    tmodel = get_model(NAME, "torch", transform_input=True)
    want = tmodel._transform_input(torch.from_numpy(x)).numpy().transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(got, want)


# --- parity -----------------------------------------------------------------------------

# 75x75 is the minimum (Mixed_7c is 1x1; on the 3x3 Mixed_6e map every padded window touches
# the padding, so padding and count_include_pad bugs show). 79x91 is non-square (a 1x7 / 7x1
# mix-up shows) with odd and even maps (39x45 -> 37x43 -> 18x21 -> 16x19 -> 7x9 -> 3x4 -> 1x1).


@pytest.mark.parametrize("transform_input", [False, True], ids=["plain", "transform_input"])
@pytest.mark.parametrize("size", [(75, 75), (79, 91)], ids=["75x75", "79x91"])
def test_torch_keras_parity(size: tuple[int, int], transform_input: bool) -> None:
    tmodel = torch_twin(NAME, _state(), transform_input=transform_input)
    kmodel = inference_view(_keras(size, transform_input=transform_input))
    x = _batch(size)
    with torch.no_grad():
        ref = tmodel(torch.from_numpy(x)).numpy()
    out = np.asarray(kmodel(x.transpose(0, 2, 3, 1), training=False))
    assert ref.shape == out.shape == (2, 1000)
    assert _max_rel(ref, out) <= 1e-5
    # The option changes the network's input, so it must change the logits.
    with torch.no_grad():
        other = torch_twin(NAME, _state(), transform_input=not transform_input)(
            torch.from_numpy(x)
        ).numpy()
    assert _max_rel(ref, other) > 1e-3


def test_parity_without_aux_head() -> None:
    tmodel = torch_twin(NAME, _state_without_aux(), aux_logits=False)
    kmodel = _keras((79, 91), aux_logits=False)
    x = _batch((79, 91), seed=1)
    with torch.no_grad():
        ref = tmodel(torch.from_numpy(x)).numpy()
    assert _max_rel(ref, np.asarray(kmodel(x.transpose(0, 2, 3, 1), training=False))) <= 1e-5


def test_aux_head_parity() -> None:
    """The aux head, training-free: torch ``AuxLogits`` vs the Keras twin's aux output, both
    fed the same Mixed_6e map. 347x323 gives Mixed_6e 20x18, so the 5x5/3 pool yields 6x5
    and conv1 a 2x1 map: the final adaptive (1, 1) pool really averages."""
    import keras

    kmodel = keras_twin(NAME, _state(), input_size=(347, 323))
    assert "AuxLogits.size_guard" not in {layer.name for layer in kmodel.layers}
    source = kmodel.get_layer("Mixed_6e").output
    assert tuple(source.shape) == (None, 20, 18, 768)
    aux = keras.Model(source, kmodel.outputs[1])
    # Mixed_6e's output is a concatenation of ReLUs: non-negative.
    feats = np.abs(np.random.default_rng(3).standard_normal((2, 768, 20, 18))).astype(np.float32)
    tmodel = torch_twin(NAME, _state())
    with torch.no_grad():
        ref = tmodel.AuxLogits(torch.from_numpy(feats)).numpy()
    out = np.asarray(aux(feats.transpose(0, 2, 3, 1), training=False))
    assert ref.shape == out.shape == (2, 1000)
    assert _max_rel(ref, out) <= 1e-5


# --- realistic init and exact mapping ---------------------------------------------------


def test_realistic_state_calibrates_the_aux_head() -> None:
    state = _state()
    # The calibration pass runs the model in eval mode (plain logits, no aux head); the
    # family's init hook feeds Mixed_6e's features to AuxLogits so its BNs are calibrated too.
    for bn in ("AuxLogits.conv0.bn", "AuxLogits.conv1.bn", "Mixed_6e.branch1x1.bn"):
        assert np.abs(state[f"{bn}.running_mean"]).max() > 0.05
        assert np.abs(state[f"{bn}.running_var"] - 1.0).max() > 0.05
        assert int(state[f"{bn}.num_batches_tracked"]) > 0
    # Positive shifts keep most ReLUs on, so float32 rounding is not amplified layer by layer.
    for key in state:
        if key.endswith("bn.bias"):
            ratio = state[key] / state[key.replace(".bias", ".weight")]
            assert ratio.min() >= 0.5 - 1e-6 and ratio.max() <= 1.5 + 1e-6
