"""The depthwise-conv layer rule and the shared Keras activations (Hardswish, Hardsigmoid,
ReLU6), which every depthwise family (MobileNet, EfficientNet, ConvNeXt) builds on."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from codenn_convert.errors import CheckpointError
from codenn_convert.models.common import keras_layers as kl
from codenn_convert.twins import mapper, rules
from tests.conftest import max_rel


class DepthwiseNet(nn.Module):
    """Depthwise 3x2 conv with multiplier 2 and *unequal* strides (nobuco#33), then a
    pointwise conv: the depthwise output channel order must survive into the 1x1."""

    def __init__(self) -> None:
        super().__init__()
        self.dw = nn.Conv2d(3, 6, kernel_size=(3, 2), stride=(2, 1), padding=(1, 0), groups=3)
        self.pw = nn.Conv2d(6, 4, kernel_size=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw(self.dw(x))


def depthwise_keras(size: tuple[int, int]) -> keras.Model:
    inp = keras.Input((*size, 3))
    x = kl.depthwise_conv2d(inp, (3, 2), stride=(2, 1), padding=(1, 0), depth_multiplier=2,
                            name="dw")
    return keras.Model(inp, keras.layers.Conv2D(4, 1, use_bias=False, name="pw")(x))


@pytest.fixture(scope="module")
def pair() -> tuple[DepthwiseNet, keras.Model, dict[str, np.ndarray]]:
    torch.manual_seed(0)
    net = DepthwiseNet().eval()
    state = {k: v.numpy().copy() for k, v in net.state_dict().items()}
    return net, depthwise_keras((7, 5)), state


def test_keras_type_picks_the_depthwise_rule(pair) -> None:  # type: ignore[no-untyped-def]
    _, k, _ = pair
    assert [(p.name, p.kind) for p in mapper.plan_keras_model(k)] == [
        ("dw", "depthwise_conv"), ("pw", "conv")]


def test_torch_groups_pick_the_rule_not_shapes() -> None:
    kinds = {
        "depthwise": nn.Conv2d(4, 8, 3, groups=4),
        # Not depthwise: its own rule (split, g convs, concat; see docs/autotwin.md).
        "grouped": nn.Conv2d(4, 8, 3, groups=2),
        "plain": nn.Conv2d(4, 8, 3),
        "one_channel": nn.Conv2d(1, 8, 3),  # a conv (its kernel looks like a depthwise one)
    }
    found = {k: rules.torch_rule(k, m).name for k, m in kinds.items()}  # type: ignore[union-attr]
    assert found == {"depthwise": "depthwise_conv", "grouped": "grouped_conv", "plain": "conv",
                     "one_channel": "conv"}


def test_mapped_depthwise_computes_the_same(pair) -> None:  # type: ignore[no-untyped-def]
    net, k, state = pair
    weights, _ = mapper.torch_to_keras(state, mapper.plan_keras_model(k), "dw")
    mapper.set_keras_weights(k, weights)
    x = np.random.default_rng(1).standard_normal((2, 3, 7, 5)).astype(np.float32)
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    got = np.asarray(k(x.transpose(0, 2, 3, 1))).transpose(0, 3, 1, 2)
    assert got.shape == want.shape == (2, 4, 4, 4)
    assert max_rel(got, want) < 1e-5


def test_round_trip_is_bit_identical(pair) -> None:  # type: ignore[no-untyped-def]
    _, k, state = pair
    plan = mapper.plan_keras_model(k)
    weights, _ = mapper.torch_to_keras(state, plan, "dw")
    back = mapper.keras_to_torch(weights, plan, "dw")
    assert back.keys() == state.keys()
    for key, value in state.items():
        assert back[key].dtype == value.dtype and np.array_equal(back[key], value), key


@settings(max_examples=30, deadline=None)
@given(c=st.integers(1, 5), m=st.integers(1, 3), kh=st.integers(1, 4), kw=st.integers(1, 4))
def test_depthwise_rule_is_an_inverse_permutation(c: int, m: int, kh: int, kw: int) -> None:
    rng = np.random.default_rng(c * 1000 + m * 100 + kh * 10 + kw)
    rule = rules.RULES["depthwise_conv"]
    plan = mapper.LayerPlan("dw", "depthwise_conv", ((kh, kw, c, m), (c * m,)))
    assert rule.torch_shapes(plan) == [("weight", (c * m, 1, kh, kw)), ("bias", (c * m,))]
    weight = rng.standard_normal((c * m, 1, kh, kw)).astype(np.float32)
    bias = rng.standard_normal(c * m).astype(np.float32)
    kernel, b = rule.to_keras(plan, [weight, bias])
    assert kernel.shape == (kh, kw, c, m) and np.array_equal(b, bias)
    # Keras filter j of input channel ch is torch output channel ch * m + j.
    y, x, ch, j = kh - 1, 0, c - 1, m - 1
    assert kernel[y, x, ch, j] == weight[ch * m + j, 0, y, x]
    w2, b2 = rule.to_torch(plan, [kernel, b])
    assert np.array_equal(w2, weight) and np.array_equal(b2, bias)


def test_conv_layout_weight_is_a_shape_error(pair) -> None:  # type: ignore[no-untyped-def]
    _, k, state = pair
    bad = {**state, "dw.weight": np.zeros((6, 3, 3, 2), np.float32)}  # a dense conv's layout
    with pytest.raises(CheckpointError, match=r"dw\.weight: expected \(6, 1, 3, 2\), "
                                              r"found \(6, 3, 3, 2\)"):
        mapper.torch_to_keras(bad, mapper.plan_keras_model(k), "dw")
    kernel = np.zeros((3, 2, 3, 3), np.float32)  # multiplier 3 where the twin has 2
    weights = {"dw": [kernel, np.zeros(6, np.float32)], "pw": [np.zeros((1, 1, 6, 4))]}
    with pytest.raises(CheckpointError, match=r"dw variable 0: expected \(3, 2, 3, 2\)"):
        mapper.keras_to_torch(weights, mapper.plan_keras_model(k), "dw")


def test_seeded_init_is_he_scaled_and_repeatable() -> None:
    def init(seed: int) -> torch.Tensor:
        conv = nn.Conv2d(64, 64, 3, groups=64)
        rule = rules.torch_rule("dw", conv)
        assert rule is not None and rule.init is not None
        with torch.no_grad():
            rule.init(conv, torch.Generator().manual_seed(seed))
        return conv.weight.detach().clone()

    a, b = init(3), init(3)
    assert torch.equal(a, b) and not torch.equal(a, init(4))
    assert abs(float(a.std()) / (2 / 9) ** 0.5 - 1) < 0.1  # fan_in = 3 * 3, not 64 * 9


def test_a_second_plain_conv_rule_is_refused() -> None:
    plain = rules.RULES["conv"]
    clone = rules.LayerRule("conv2", plain.torch_type, None, plain.torch_shapes,
                            plain.to_keras, plain.to_torch)
    with pytest.raises(ValueError, match="torch.nn.Conv2d already has the layer rule 'conv'"):
        rules._register(clone)
    assert "conv2" not in rules.RULES


def test_activations_compute_torch_formulas_around_the_kinks() -> None:
    """Hardsigmoid/Hardswish/ReLU6 against torch on values at and around -3, 0, 3 and 6
    (the kinks), plus a spread: bit-equal, since both compute the same float32 ops."""
    kinks = np.array([-3.0, 3.0, 6.0], np.float32)
    # Next to 0 the neighbours are denormals, which TF flushes to zero: +-1e-7 instead.
    near = np.concatenate([np.nextafter(kinks, np.float32(-np.inf)), kinks,
                           np.nextafter(kinks, np.float32(np.inf)),
                           np.float32([-1e-7, 0.0, 1e-7])])
    spread = np.random.default_rng(0).uniform(-8, 8, 4093).astype(np.float32)
    x = np.concatenate([near, np.linspace(-3.5, 3.5, 701, dtype=np.float32), spread])
    xt = torch.from_numpy(x)
    torch_fns = {"Hardsigmoid": nn.Hardsigmoid(), "Hardswish": nn.Hardswish(),
                 "ReLU6": nn.ReLU6()}
    for kind, fn in torch_fns.items():
        want = fn(xt).numpy()
        got = np.asarray(kl.ACTIVATIONS[kind](f"act_{kind}")(x.reshape(1, 1, -1, 1))).ravel()
        assert np.array_equal(got, want), (kind, np.abs(got - want).max())
    assert np.asarray(kl.HardSigmoid()(np.float32([-3.0, 3.0]))).tolist() == [0.0, 1.0]
