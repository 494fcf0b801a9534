"""Each mapper rule on a tiny model in both frameworks, round trips, and key/shape errors."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from codenn_convert.errors import CheckpointError
from codenn_convert.twins import mapper
from tests.conftest import max_rel


class TinyTorch(nn.Module):
    """conv -> BN -> ReLU -> flatten -> dense -> dense: one of each rule."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, kernel_size=(3, 2), bias=True)
        self.bn = nn.BatchNorm2d(4, eps=1e-5)
        self.fc1 = nn.Linear(4 * 4 * 5, 6)
        self.fc2 = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.conv(x)))  # N, 4, 4, 5 for a 6x6 input
        return self.fc2(torch.relu(self.fc1(torch.flatten(x, 1))))


def tiny_keras() -> keras.Model:
    inp = keras.Input((6, 6, 3), name="input")
    x = keras.layers.Conv2D(4, (3, 2), name="conv")(inp)
    x = keras.layers.BatchNormalization(epsilon=1e-5, name="bn")(x)
    x = keras.layers.ReLU(name="relu")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dropout(0.5, name="drop")(x)  # the flatten rule must look through it
    x = keras.layers.Dense(6, activation="relu", name="fc1")(x)
    return keras.Model(inp, keras.layers.Dense(3, name="fc2")(x))


@pytest.fixture(scope="module")
def tiny() -> tuple[TinyTorch, keras.Model, dict[str, np.ndarray]]:
    torch.manual_seed(0)
    t = TinyTorch()
    with torch.no_grad():  # non-trivial BN statistics, or a BN bug would stay invisible
        t.bn.weight.uniform_(0.5, 1.5)
        t.bn.bias.normal_(0, 0.3)
        t.bn.running_mean.normal_(0, 0.5)
        t.bn.running_var.uniform_(0.3, 3.0)
        t.bn.num_batches_tracked.fill_(17)
    t.eval()
    state = {k: v.numpy().copy() for k, v in t.state_dict().items()}
    return t, tiny_keras(), state


def test_plan_derives_one_rule_per_layer_type(tiny) -> None:  # type: ignore[no-untyped-def]
    _, k, _ = tiny
    kinds = {p.name: (p.kind, p.flatten_hwc) for p in mapper.plan_keras_model(k)}
    assert kinds == {
        "conv": ("conv", None),
        "bn": ("batchnorm", None),
        "fc1": ("dense_after_flatten", (4, 5, 4)),
        "fc2": ("dense", None),
    }


def test_mapped_weights_give_the_same_outputs(tiny) -> None:  # type: ignore[no-untyped-def]
    t, k, state = tiny
    weights, tracked = mapper.torch_to_keras(state, mapper.plan_keras_model(k), "tiny")
    mapper.set_keras_weights(k, weights)
    x = np.random.default_rng(1).standard_normal((3, 3, 6, 6)).astype(np.float32)
    with torch.no_grad():
        ref = t(torch.from_numpy(x)).numpy()
    got = np.asarray(k(x.transpose(0, 2, 3, 1), training=False))
    assert max_rel(ref, got) <= 1e-6
    assert tracked == {"bn": 17}


def test_flatten_rule_is_needed(tiny) -> None:  # type: ignore[no-untyped-def]
    """Without the CHW->HWC reorder the outputs differ: the rule is not a no-op."""
    t, k, state = tiny
    plan = [p if p.name != "fc1" else mapper.LayerPlan(p.name, "dense", p.keras_shapes)
            for p in mapper.plan_keras_model(k)]
    weights, _ = mapper.torch_to_keras(state, plan, "tiny")
    mapper.set_keras_weights(k, weights)
    x = np.random.default_rng(1).standard_normal((3, 3, 6, 6)).astype(np.float32)
    with torch.no_grad():
        ref = t(torch.from_numpy(x)).numpy()
    assert max_rel(ref, np.asarray(k(x.transpose(0, 2, 3, 1)))) > 1e-2


def test_round_trips_are_bit_identical(tiny) -> None:  # type: ignore[no-untyped-def]
    _, k, state = tiny
    plan = mapper.plan_keras_model(k)
    weights, tracked = mapper.torch_to_keras(state, plan, "tiny")
    back = mapper.keras_to_torch(weights, plan, "tiny", tracked)
    assert back.keys() == state.keys()
    for key in state:
        assert back[key].dtype == state[key].dtype
        assert np.array_equal(back[key], state[key]), key
    again, _ = mapper.torch_to_keras(back, plan, "tiny")
    for name in weights:
        assert all(np.array_equal(a, b) for a, b in zip(weights[name], again[name], strict=True))


def test_num_batches_tracked_defaults_to_zero(tiny) -> None:  # type: ignore[no-untyped-def]
    _, k, state = tiny
    plan = mapper.plan_keras_model(k)
    weights, _ = mapper.torch_to_keras(state, plan, "tiny")
    assert int(mapper.keras_to_torch(weights, plan, "tiny")["bn.num_batches_tracked"]) == 0


@settings(max_examples=30, deadline=None)
@given(
    o=st.integers(1, 5), i=st.integers(1, 5), kh=st.integers(1, 4), kw=st.integers(1, 4),
    h=st.integers(1, 4), w=st.integers(1, 4),
)
def test_rules_are_inverse_permutations(o: int, i: int, kh: int, kw: int, h: int, w: int) -> None:
    rng = np.random.default_rng(o * 1000 + i * 100 + kh * 10 + kw)
    conv = mapper.LayerPlan("c", "conv", ((kh, kw, i, o), (o,)))
    weight = rng.standard_normal((o, i, kh, kw)).astype(np.float32)
    kernel, _ = mapper.RULES["conv"].to_keras(conv, [weight, np.zeros(o, np.float32)])
    assert kernel.shape == (kh, kw, i, o)
    assert kernel[kh - 1, kw - 1, i - 1, o - 1] == weight[o - 1, i - 1, kh - 1, kw - 1]
    assert np.array_equal(mapper.RULES["conv"].to_torch(conv, [kernel])[0], weight)

    c = i
    flat = mapper.LayerPlan("d", "dense_after_flatten", ((h * w * c, o),), (h, w, c))
    dense_w = rng.standard_normal((o, c * h * w)).astype(np.float32)
    (k2,) = mapper.RULES["dense_after_flatten"].to_keras(flat, [dense_w])
    # Keras row (y, x, ch) must hold torch column (ch, y, x).
    y, x, ch = h - 1, 0, c - 1
    assert k2[(y * w + x) * c + ch, o - 1] == dense_w[o - 1, (ch * h + y) * w + x]
    assert np.array_equal(mapper.RULES["dense_after_flatten"].to_torch(flat, [k2])[0], dense_w)


def test_missing_and_unexpected_keys_are_named(tiny) -> None:  # type: ignore[no-untyped-def]
    _, k, state = tiny
    bad = {kk: v for kk, v in state.items() if kk != "fc2.bias"}
    bad["head.weight"] = np.zeros(3, np.float32)
    with pytest.raises(CheckpointError, match=r"missing keys: fc2\.bias.*unexpected keys: "
                                              r"head\.weight"):
        mapper.torch_to_keras(bad, mapper.plan_keras_model(k), "tiny")


def test_shape_mismatch_names_key_and_shapes(tiny) -> None:  # type: ignore[no-untyped-def]
    _, k, state = tiny
    bad = {**state, "conv.weight": np.zeros((4, 3, 3, 3), np.float32)}
    with pytest.raises(CheckpointError, match=r"conv\.weight: expected \(4, 3, 3, 2\), "
                                              r"found \(4, 3, 3, 3\)"):
        mapper.torch_to_keras(bad, mapper.plan_keras_model(k), "tiny")


def test_unknown_layer_type_is_a_clear_error() -> None:
    inp = keras.Input((4, 4, 3))
    m = keras.Model(inp, keras.layers.SeparableConv2D(2, 3, name="sep")(inp))
    with pytest.raises(CheckpointError, match="no weight-mapping rule.*SeparableConv2D"):
        mapper.plan_keras_model(m)
