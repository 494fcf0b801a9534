"""Keras twins generated from a torch module's graph (docs/autotwin.md), on CNNs the project
has never seen (tests/heldout/), through the CLI with ``file.py:function``.

The oracle over every registered model (generated twin == hand-written twin) runs inside the
contract test (tests/test_models.py, helper tests/autotwin_oracle.py), where both twins are
built anyway.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from codenn_convert.errors import UsageError
from codenn_convert.registry import get_model, resolve_model
from codenn_convert.twins.fx_build import keras_twin_of
from codenn_convert.twins.fx_trace import TwinError
from codenn_convert.twins.init import realistic_model
from codenn_convert.twins.mapper import plan_keras_model
from codenn_convert.twins.rules import RULES, LayerPlan
from tests.conftest import ROOT, max_rel, run_cli_here

HELDOUT = ROOT / "tests" / "heldout"
SIZE = ("--input-size", "32", "32")


def _logits(module: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return module(torch.from_numpy(x)).numpy()


@pytest.mark.parametrize("ref", ["regnetish.py:regnetish", "mixnet.py:mixnet"])
def test_heldout_cnn_through_the_cli(ref: str, tmp_path: Path) -> None:
    """Convert both ways bit-exactly, verify (all pairs), and the Keras twin's ONNX export
    gives the torch module's own logits within 1e-5 of the largest."""
    import onnxruntime as ort

    ref = str(HELDOUT / ref)
    name = resolve_model(ref, (32, 32))
    module = realistic_model(name)
    state = {k: v.detach().clone() for k, v in module.state_dict().items()}
    src, h5, back = tmp_path / "w.pt", tmp_path / "w.weights.h5", tmp_path / "back.pt"
    torch.save(state, src)

    for a, b in ((src, h5), (h5, back)):
        proc = run_cli_here("convert", ref, str(a), str(b), *SIZE)
        assert proc.returncode == 0, proc.stderr
    returned = torch.load(back, weights_only=True)
    assert list(returned) == list(state)
    for key, value in state.items():
        assert returned[key].dtype == value.dtype and torch.equal(returned[key], value), key

    out = tmp_path / "out"
    proc = run_cli_here("verify", ref, "--weights", str(h5), *SIZE, "--keep-onnx", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "fail" not in proc.stdout

    x = np.random.default_rng(3).standard_normal((2, 3, 32, 32)).astype(np.float32)
    session = ort.InferenceSession(str(out / f"{name}.keras.onnx"))
    onnx_logits = session.run(None, {"input": x})[0]
    ref_logits = _logits(module, x)
    assert np.abs(ref_logits).max() > 0.1
    assert max_rel(ref_logits, onnx_logits) <= 1e-5


def test_convnext_pattern_is_bookkeeping_and_maps_by_rule() -> None:
    """permute -> LayerNorm -> Linear -> GELU -> Linear -> layer scale -> permute back
    emits no transpose at all; the bare layer scale is a ``parameter`` layer named by its key;
    the Linear after a Flatten of a 2x2 map takes the first-dense-after-flatten rule."""
    import keras

    module = get_model(resolve_model(str(HELDOUT / "mixnet.py:mixnet")), "torch")
    twin = keras_twin_of(module, (16, 16))
    assert not [layer.name for layer in twin.layers if isinstance(layer, keras.layers.Permute)]
    plan = {p.name: p.kind for p in plan_keras_model(twin)}
    assert plan["blocks.0.gamma"] == "parameter" and plan["blocks.0.norm"] == "layer_norm"
    assert plan["head.2"] == "dense_after_flatten" and plan["blocks.0.dw"] == "depthwise_conv"
    x = np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype(np.float32)
    out = np.asarray(twin(x.transpose(0, 2, 3, 1)))
    assert max_rel(_logits(module.eval(), x), out) <= 1e-5


def test_grouped_conv_is_split_convs_with_exact_weights() -> None:
    """A grouped (not depthwise) conv: g plain convs on channel slices (never Keras'
    ``Conv2D(groups=g)``), the same outputs, and a bit-exact map both ways."""
    import keras

    torch.manual_seed(0)
    module = torch.nn.Sequential(
        torch.nn.Conv2d(3, 12, 1), torch.nn.Conv2d(12, 18, 3, stride=2, padding=1, groups=3),
        torch.nn.Flatten(), torch.nn.Linear(18 * 4 * 4, 5)).eval()
    twin = keras_twin_of(module, (7, 7))
    conv = twin.get_layer("1")
    assert type(conv).__name__ == "GroupedConv2D"
    assert not any(isinstance(la, keras.layers.Conv2D) and la.groups > 1 for la in twin.layers)
    x = np.random.default_rng(0).standard_normal((2, 3, 7, 7)).astype(np.float32)
    assert max_rel(_logits(module, x), np.asarray(twin(x.transpose(0, 2, 3, 1)))) <= 1e-5
    rule = RULES["grouped_conv"]
    plan = LayerPlan("1", "grouped_conv", tuple(tuple(v.shape) for v in conv.weights))
    weight, bias = module[1].weight.detach().numpy(), module[1].bias.detach().numpy()
    kernels = rule.to_keras(plan, [weight, bias])
    assert [k.shape for k in kernels[:3]] == [(3, 3, 4, 6)] * 3
    # group i owns output rows i*6 ... and input channels i*4 ...
    assert np.array_equal(kernels[1], weight[6:12].transpose(2, 3, 1, 0))
    back = rule.to_torch(plan, kernels)
    assert np.array_equal(back[0], weight) and np.array_equal(back[1], bias)
    assert rule.torch_shapes(plan) == [("weight", (18, 4, 3, 3)), ("bias", (18,))]


def test_untwinnable_modules_are_one_line_errors(tmp_path: Path) -> None:
    """An op without a rule: exit 2 naming the op and where it is, nothing written; data-
    dependent control flow: the same kind of error (exit code 2)."""
    out = tmp_path / "x.onnx"
    proc = run_cli_here("export", str(HELDOUT / "bad.py:sorting"), "--framework", "keras",
                   "-o", str(out), "--input-size", "8", "8")
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "'sort'" in lines[0] and "'block' (SortBlock)" in lines[0], lines
    assert not out.exists() and not list(tmp_path.iterdir())

    module = get_model(resolve_model(str(HELDOUT / "bad.py:branching")), "torch")
    with pytest.raises(TwinError, match="data-dependent control flow .*'block' \\(Gate\\)") as exc:
        keras_twin_of(module, (8, 8))
    assert exc.value.exit_code == 2


def test_model_reference_errors(tmp_path: Path) -> None:
    """A missing file or function, or a function that returns no module: usage errors."""
    with pytest.raises(UsageError, match="no such model file"):
        resolve_model(str(tmp_path / "nope.py:build"))
    with pytest.raises(UsageError, match="has no function 'nope'"):
        resolve_model(str(HELDOUT / "bad.py:nope"))
    (tmp_path / "notmodule.py").write_text("def build():\n    return 3\n")
    name = resolve_model(str(tmp_path / "notmodule.py:build"))
    with pytest.raises(UsageError, match="returned int, not a torch nn.Module"):
        get_model(name, "torch")


@pytest.mark.parametrize("size", [(13, 13), (16, 16)])
def test_shuffle_chunk_pools_and_reductions(size: tuple[int, int]) -> None:
    """The rest of the op vocabulary against torch, at an odd size (ceil_mode adds a
    partial window) and an even one."""
    module = get_model(resolve_model(str(HELDOUT / "opmix.py:opmix")), "torch").eval()
    twin = keras_twin_of(module, size)
    x = np.random.default_rng(0).standard_normal((2, 3, *size)).astype(np.float32)
    assert max_rel(_logits(module, x), np.asarray(twin(x.transpose(0, 2, 3, 1)))) <= 1e-5


class _FlatHead(torch.nn.Module):
    """A flatten feeding a Linear directly, through a ReLU, and through a LayerNorm and a
    BatchNorm1d (whose per-feature weights need torch's C,H,W order)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.norm, self.bn = torch.nn.LayerNorm(36), torch.nn.BatchNorm1d(36)
        self.fc1, self.fc2 = torch.nn.Linear(36, 3), torch.nn.Linear(36, 3)
        with torch.no_grad():
            for p in (self.norm.weight, self.bn.weight, self.bn.running_mean):
                p.uniform_(0.5, 1.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = torch.flatten(self.conv(x), 1)
        return self.fc1(torch.relu(f)) + self.fc2(self.bn(self.norm(f)))


def test_flatten_order_reaches_every_consumer_right() -> None:
    module = _FlatHead().eval()
    twin = keras_twin_of(module, (5, 5))
    plan = {p.name: p.kind for p in plan_keras_model(twin)}
    assert plan["fc1"] == "dense_after_flatten" and plan["fc2"] == "dense"
    x = np.random.default_rng(0).standard_normal((2, 3, 5, 5)).astype(np.float32)
    assert max_rel(_logits(module, x), np.asarray(twin(x.transpose(0, 2, 3, 1)))) <= 1e-5
