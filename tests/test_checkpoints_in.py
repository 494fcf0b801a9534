"""Torch files as people save them, through the CLI: wrappers, precision, fine-tuned heads,
``codenn identify`` and two-argument ``convert``."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import pytest
import torch

from codenn_convert.checkpoints import files as checkpoint
from codenn_convert.checkpoints import filters, sources
from codenn_convert.twins.init import realistic_state
from tests.conftest import run_cli_here


def _notes(proc: subprocess.CompletedProcess[str]) -> list[str]:
    return [ln[len("note: "):] for ln in proc.stderr.splitlines() if ln.startswith("note: ")]


def _one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture(scope="module")
def r18() -> dict[str, np.ndarray]:
    """A fine-tuned-looking ResNet-18: 10 classes."""
    return realistic_state("resnet18", seed=3, num_classes=10)


def _tensors(state: dict[str, np.ndarray], prefix: str = "") -> dict[str, torch.Tensor]:
    return {prefix + k: torch.from_numpy(v) for k, v in state.items()}


def _same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    """Bit-identical, dtype included."""
    assert sorted(a) == sorted(b)  # safetensors stores its own order
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        assert np.array_equal(np.atleast_1d(a[k]).view(np.uint8),
                              np.atleast_1d(b[k]).view(np.uint8)), k


WRAPPERS: dict[str, tuple[Any, list[str]]] = {
    "ddp": (lambda s: _tensors(s, "module."), ["stripped prefix 'module.' from 122 keys"]),
    "compile": (lambda s: _tensors(s, "_orig_mod."),
                ["stripped prefix '_orig_mod.' from 122 keys"]),
    "compiled_ddp": (lambda s: _tensors(s, "module._orig_mod."),
                     ["stripped prefix 'module.' from 122 keys",
                      "stripped prefix '_orig_mod.' from 122 keys"]),
    "lightning": (lambda s: {"epoch": 7, "global_step": 70, "pytorch-lightning_version": "2.4",
                             "state_dict": _tensors(s, "model."), "optimizer_states": [{}]},
                  ["took the weights from the checkpoint's 'state_dict' entry (ignored epoch, "
                   "global_step, optimizer_states, pytorch-lightning_version)",
                   "stripped prefix 'model.' from 122 keys"]),
    "training": (lambda s: {"model": _tensors(s), "optimizer": {"lr": 0.1}, "epoch": 3},
                 ["took the weights from the checkpoint's 'model' entry (ignored epoch, "
                  "optimizer)"]),
    "ema": (lambda s: {"ema": _tensors(s, "net."), "step": 5},
            ["took the weights from the checkpoint's 'ema' entry (ignored step)",
             "stripped prefix 'net.' from 122 keys"]),
}


@pytest.mark.parametrize("wrapper", WRAPPERS)
def test_wrapped_checkpoints_convert_with_one_note_per_step(
    r18: dict[str, np.ndarray], tmp_path: Path, wrapper: str
) -> None:
    wrap, expected = WRAPPERS[wrapper]
    src, dst = tmp_path / f"{wrapper}.pth", tmp_path / "out.safetensors"
    torch.save(wrap(r18), src)
    proc = run_cli_here("convert", "resnet18", str(src), str(dst))
    assert proc.returncode == 0, proc.stderr
    assert _notes(proc) == [*expected, "inferred num_classes=10 from the checkpoint "
                                       "(fc.weight (10, 512))"]
    _same(r18, checkpoint.load_torch_state(dst))


def test_a_common_prefix_is_stripped_only_when_that_matches_the_model(
        r18: dict[str, np.ndarray]) -> None:
    ctx = filters.FilterContext(candidates=(frozenset(r18),))
    odd = {f"backbone.{k}": v for k, v in r18.items()}
    assert filters.strip_common_prefix(odd, ctx).keys() == r18.keys()
    deeper = {f"a.b.{k}": v for k, v in r18.items()}  # one prefix only, never two
    assert filters.strip_common_prefix(deeper, ctx) is deeper and not ctx.notes[1:]


def _mixed_precision(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """float16 convs, bfloat16 BatchNorms, float64 head, int64 counters."""
    out = {}
    for k, v in state.items():
        if k.startswith("fc."):
            out[k] = v.astype(np.float64) * (1 + 1e-12)  # not representable in float32
        elif ".bn" in k or k.startswith("bn1.") or "downsample.1" in k:
            out[k] = v if v.dtype == np.int64 else v.astype(ml_dtypes.bfloat16)
        else:
            out[k] = v.astype(np.float16)
    return out


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_precision_round_trip_is_bit_identical_dtype_included(
    r18: dict[str, np.ndarray], tmp_path: Path, suffix: str
) -> None:
    state = _mixed_precision(r18)
    src, h5, back = tmp_path / f"src{suffix}", tmp_path / "k.weights.h5", tmp_path / f"b{suffix}"
    checkpoint.save_torch_state(state, src)
    proc = run_cli_here("convert", str(src), str(h5))  # two arguments: identified
    assert proc.returncode == 0, proc.stderr
    notes = _notes(proc)
    assert notes[0] == "identified resnet18 (num_classes=10)"
    for kind in ("float16", "bfloat16"):
        count = sum(filters.dtype_name(v) == kind for v in state.values())
        assert any(n.startswith(f"widened {count} {kind} tensors exactly") for n in notes)
    rounding = [n for n in notes if n.startswith("rounded 2 float64 tensors to float32")]
    assert rounding and "exact only to float32" in rounding[0], notes
    assert sources.read_source_dtypes(h5)["layer1.0.conv1.weight"] == "float16"
    proc = run_cli_here("convert", "resnet18", str(h5), str(back))
    assert proc.returncode == 0, proc.stderr
    got = checkpoint.load_torch_state(back)
    exact = {k: v for k, v in state.items() if not k.startswith("fc.")}
    _same(exact, {k: got[k] for k in exact})
    for k in ("fc.weight", "fc.bias"):  # float64: the dtype returns, exact to float32
        assert got[k].dtype == np.float64
        assert np.array_equal(got[k], state[k].astype(np.float32).astype(np.float64))
        assert not np.array_equal(got[k], state[k])


def test_inferred_head_explicit_agreeing_and_contradicting_options(
    r18: dict[str, np.ndarray], tmp_path: Path
) -> None:
    src = tmp_path / "ft.safetensors"
    checkpoint.save_torch_state(r18, src)
    agree = run_cli_here("convert", "resnet18", str(src), str(tmp_path / "a.weights.h5"),
                    "--option", "num_classes=10")
    assert agree.returncode == 0 and not _notes(agree), agree.stderr
    _one_line_error(run_cli_here("convert", "resnet18", str(src), str(tmp_path / "b.weights.h5"),
                            "--option", "num_classes=5"),
                    "option num_classes=5 contradicts the checkpoint (fc.weight (10, 512): "
                    "num_classes=10)")
    onnx_file = tmp_path / "ft.onnx"
    proc = run_cli_here("export", "resnet18", "--weights", str(tmp_path / "a.weights.h5"),
                   "--input-size", "32", "32", "-o", str(onnx_file))
    assert proc.returncode == 0, proc.stderr
    assert "inferred num_classes=10 from the checkpoint (fc.weight (10, 512))" in _notes(proc)
    import onnxruntime as ort

    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32), dtype=np.float32)
    logits = ort.InferenceSession(str(onnx_file)).run(None, {"input": x})[0]
    assert logits.shape == (2, 10)


def _zeros(name: str, **options: Any) -> dict[str, np.ndarray]:
    return {k: np.zeros(s, np.float32) for k, s in sources.expected_shapes(name, options).items()
            if not k.endswith("num_batches_tracked")}


def test_identify_one_several_and_none(r18: dict[str, np.ndarray], tmp_path: Path) -> None:
    one = tmp_path / "one.pth"
    torch.save({"state_dict": _tensors(r18, "module.")}, one)
    proc = run_cli_here("identify", str(one))
    assert proc.returncode == 0 and proc.stdout.split("\n")[0] == "resnet18 (num_classes=10)"

    several = tmp_path / "noaux.safetensors"  # torchvision without aux = keras.applications'
    checkpoint.save_torch_state(_zeros("inception_v3", aux_logits=False), several)
    proc = run_cli_here("identify", str(several))
    assert proc.returncode == 0
    assert proc.stdout.split() == ["inception_v3", "(aux_logits=false)", "keras_inception_v3"]
    _one_line_error(run_cli_here("convert", str(several), str(tmp_path / "x.weights.h5")),
                    "matches several models: inception_v3 (aux_logits=false), "
                    "keras_inception_v3; name one")

    none = tmp_path / "none.safetensors"
    broken = {k: v for k, v in r18.items() if not k.startswith("layer4.1.bn2")}
    checkpoint.save_torch_state(broken, none)
    _one_line_error(run_cli_here("identify", str(none)),
                    "matches no registered model; nearest: resnet18 (num_classes=10) with 4 "
                    "mismatches: missing layer4.1.bn2.weight; missing layer4.1.bn2.bias")
