"""The layer rules that EfficientNet and ConvNeXt brought: LayerNorm (channels-first and
channels-last), layer scale, Keras' in-model Normalization; and the weight-free SiLU and
exact GELU. Each: picked by type, exact both ways, the two twins compute the same."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from typing import Any

import keras
import numpy as np
import pytest
import torch
from keras import layers

from codenn_convert.models.common import keras_layers as kl
from codenn_convert.models.common import torch_layers as tl
from codenn_convert.models.convnext.torch_convnext import CNBlock
from codenn_convert.twins import mapper
from codenn_convert.twins.rules import RULES, keras_rule, torch_rule

RNG = np.random.default_rng(0)


def _nchw(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def _keras_model(layer: Any, shape: tuple[int, ...]) -> keras.Model:
    inp = keras.Input(shape)
    return keras.Model(inp, layer(inp))


def _map_one(torch_module: Any, keras_model: keras.Model, name: str) -> None:
    """Map ``torch_module``'s state into ``keras_model`` by the rules, and check that the
    way back is bit-exact."""
    state = {f"{name}.{k}": v.detach().numpy() for k, v in torch_module.state_dict().items()}
    plan = mapper.plan_keras_model(keras_model)
    weights, _ = mapper.torch_to_keras(state, plan, "m")
    mapper.set_keras_weights(keras_model, weights)
    back = mapper.keras_to_torch(mapper.get_keras_weights(keras_model), plan, "m")
    assert sorted(back) == sorted(state)
    for key, value in state.items():
        assert back[key].dtype == value.dtype and np.array_equal(back[key], value), key


def test_rules_are_picked_by_type() -> None:
    assert torch_rule("n", torch.nn.LayerNorm(4)).name == "layer_norm"
    assert torch_rule("n", tl.LayerNorm2d(4)).name == "layer_norm"  # a subclass
    assert torch_rule("b", CNBlock(8, 1e-6, 0.0)).name == "layer_scale"
    assert torch_rule("p", tl.KerasNormalization(3)).name == "normalization"
    assert keras_rule(layers.LayerNormalization()).name == "layer_norm"
    assert keras_rule(kl.ScaledResidual()).name == "layer_scale"
    assert keras_rule(kl.SyncedNormalization()).name == "normalization"
    assert keras_rule(layers.Normalization()).name == "normalization"  # keras.applications'


@pytest.mark.parametrize("channels_first", [True, False])
def test_layer_norm_both_layouts(channels_first: bool) -> None:
    c, name = 6, "norm"
    module = tl.LayerNorm2d(c, eps=1e-6) if channels_first else torch.nn.LayerNorm(c, eps=1e-6)
    with torch.no_grad():
        RULES["layer_norm"].init(module, torch.Generator().manual_seed(0))
    gamma = module.weight.detach()
    assert float(gamma.min()) >= 0.5 and float(gamma.max()) <= 1.5
    model = _keras_model(layers.LayerNormalization(axis=-1, epsilon=1e-6, name=name),
                         (5, 7, c))
    _map_one(module, model, name)
    x = _nchw(2, c, 5, 7)
    nhwc = x.transpose(0, 2, 3, 1)
    with torch.no_grad():
        if channels_first:
            ref = module(torch.from_numpy(x)).numpy().transpose(0, 2, 3, 1)
        else:  # ConvNeXt's in-block norm runs on the permuted, channels-last tensor
            ref = module(torch.from_numpy(np.ascontiguousarray(nhwc))).numpy()
    out = np.asarray(model(nhwc))
    assert np.abs(out - ref).max() <= 1e-5 * np.abs(ref).max()


def test_layer_scale_is_a_reshape_and_the_block_output() -> None:
    c, name = 5, "features.1.0"
    block = tl.ScaledResidual(c, 1e-6)
    with torch.no_grad():
        RULES["layer_scale"].init(block, torch.Generator().manual_seed(0))
    assert tuple(block.layer_scale.shape) == (c, 1, 1)
    branch, residual = keras.Input((3, 4, c)), keras.Input((3, 4, c))
    model = keras.Model([branch, residual], kl.ScaledResidual(name=name)([branch, residual]))
    _map_one(block, model, name)
    assert model.get_layer(name).get_weights()[0].shape == (c,)
    assert np.array_equal(model.get_layer(name).get_weights()[0],
                          block.layer_scale.detach().numpy().reshape(c))
    b, r = _nchw(2, c, 3, 4), _nchw(2, c, 3, 4)
    ref = (block.layer_scale.detach() * torch.from_numpy(b) + torch.from_numpy(r)).numpy()
    out = np.asarray(model([b.transpose(0, 2, 3, 1), r.transpose(0, 2, 3, 1)]))
    assert np.array_equal(out.transpose(0, 3, 1, 2), ref)  # the same two float ops


def test_normalization_follows_set_weights() -> None:
    name = "normalization"
    module = tl.KerasNormalization(3)
    with torch.no_grad():
        RULES["normalization"].init(module, torch.Generator().manual_seed(0))
    model = _keras_model(kl.SyncedNormalization(axis=-1, name=name), (4, 5, 3))
    _map_one(module, model, name)
    assert module.count.dtype == torch.int64 and int(module.count) > 0
    x = np.abs(_nchw(2, 3, 4, 5))
    with torch.no_grad():
        ref = module(torch.from_numpy(x)).numpy()
    out = np.asarray(model(x.transpose(0, 2, 3, 1))).transpose(0, 3, 1, 2)
    assert np.abs(out - ref).max() <= 1e-6 * np.abs(ref).max()
    # Keras' own layer keeps computing with the constants of its last finalize_state().
    plain = _keras_model(layers.Normalization(axis=-1, name=name), (4, 5, 3))
    plain.get_layer(name).set_weights(model.get_layer(name).get_weights())
    stale = np.asarray(plain(x.transpose(0, 2, 3, 1))).transpose(0, 3, 1, 2)
    assert np.abs(stale - ref).max() > 0.1


@pytest.mark.parametrize(("kind", "torch_act"), [("SiLU", torch.nn.SiLU()),
                                                  ("GELU", torch.nn.GELU())])
def test_weight_free_activations_match_torch(kind: str, torch_act: Any) -> None:
    x = np.linspace(-6, 6, 2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 4, 5, 3)
    inp = keras.Input((4, 5, 3))
    out = np.asarray(keras.Model(inp, kl.activation(inp, kind, name="act"))(x))
    with torch.no_grad():
        ref = torch_act(torch.from_numpy(x)).numpy()
    assert np.abs(out - ref).max() <= 2e-7 * np.abs(ref).max()  # an ulp or two
    if kind == "GELU":  # exact, not the tanh approximation
        tanh = torch.nn.GELU(approximate="tanh")(torch.from_numpy(x)).numpy()
        assert np.abs(tanh - ref).max() > 1e-4
