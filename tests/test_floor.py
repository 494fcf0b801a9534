"""The verdict and the checkpoint's own float32 floor (codenn_convert.verification.floor).

An untrained keras.applications ResNet50 or InceptionV3 (Keras' own initialisers, BatchNorm
statistics from one batch) is badly conditioned: float32 rounding alone puts every runtime
~4e-5 from float64 at 64x64 (ResNet50) and 75x75 (InceptionV3), four times the 1e-5 rtol.
Judged at max(rtol, k x floor) they pass without --rtol, while a sign-flipped channel in one
conv of the Keras side still fails, named at its layer. Constant logits never pass.
"""

from __future__ import annotations

import gc
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from codenn_convert.verification import floor
from codenn_convert.verification.metrics import compare
from tests.conftest import run_cli_here
from tests.keras_apps import untrained_keras_application

#: keras.applications name -> (our model, the smallest size that shows the problem).
UNTRAINED = {"ResNet50": ("keras_resnet50", 64), "InceptionV3": ("keras_inception_v3", 75)}
#: The conv planted with a sign-flipped output channel, by both names.
FLIPPED_KERAS, FLIPPED_TORCH, CHANNEL = "conv3_block2_2_conv", "layer2.1.conv2", 5


def _save_untrained(app: str, folder: Path, *, flip: bool = False) -> Path:
    import keras

    _, size = UNTRAINED[app]
    model = untrained_keras_application(app, size)
    path = folder / f"{app}{'-flipped' if flip else ''}.weights.h5"
    if flip:
        layer = model.get_layer(FLIPPED_KERAS)
        kernel, *rest = layer.get_weights()
        kernel[..., CHANNEL] *= -1
        if rest:  # keras.applications' ResNet convs have a bias
            rest[0][CHANNEL] *= -1
        layer.set_weights([kernel, *rest])
    model.save_weights(str(path))
    del model
    keras.backend.clear_session()
    gc.collect()
    return path


def _verify(*argv: str) -> tuple[Any, dict[str, Any]]:
    proc = run_cli_here("verify", *argv, "--json", "-")
    report = json.loads(proc.stdout) if proc.stdout.strip() else {}
    return proc, report


def test_effective_tolerance_and_farther_side() -> None:
    assert floor.effective_rtol(1e-5, None) == 1e-5
    assert floor.effective_rtol(1e-5, 1e-7) == 1e-5  # well conditioned: rtol rules
    assert floor.effective_rtol(1e-5, 4e-5) == pytest.approx(floor.FLOOR_FACTOR * 4e-5)
    assert floor.effective_rtol(1e-5, float("inf")) == 1e-5
    # 1.80e-5 against 1.81e-5 is rounding: no side is named.
    assert floor.farther("torch", "keras", {"torch": 1.80e-5, "keras": 1.81e-5}) is None
    assert floor.farther("torch", "keras", {"torch": 1.8e-5, "keras": 3e-3}) == "keras"
    assert floor.farther("torch", "keras", {"torch": 3e-3, "keras": 1.8e-5}) == "torch"


def test_constant_logits_are_no_evidence() -> None:
    zeros = np.zeros((2, 10), np.float32)
    p = compare(zeros, zeros.copy(), rtol=1e-5, names=("torch", "keras"))
    assert not p.passed and p.degenerate == ["torch", "keras"] and p.max_rel == 0.0
    const = np.full((2, 10), 3.0, np.float32)
    assert not compare(const, const.copy(), rtol=1e-5).passed
    one_flat = np.random.default_rng(0).standard_normal((2, 10)).astype(np.float32)
    one_flat[1] = 0.5
    assert compare(one_flat, one_flat.copy(), rtol=1e-5).degenerate == ["a", "b"]
    fine = np.random.default_rng(1).standard_normal((2, 10)).astype(np.float32)
    assert compare(fine, fine.copy(), rtol=1e-5).passed
    assert not floor.degenerate(np.zeros((2, 1)))  # one class: nothing to rank


def test_zeroed_head_fails_with_its_reason(tmp_path: Path) -> None:
    from codenn_convert.checkpoints.files import save_torch_state
    from codenn_convert.twins.init import realistic_state

    state = realistic_state("resnet18", seed=0)
    state["fc.weight"][:] = 0
    state["fc.bias"][:] = 0
    ckpt = tmp_path / "zero-head.safetensors"
    save_torch_state(state, ckpt)
    proc, report = _verify("resnet18", "--weights", str(ckpt), "--input-size", "64", "64",
                           "--runtimes", "torch,keras")
    assert proc.returncode == 1, proc.stderr
    (m,) = report["models"]
    (p,) = m["pairs"]
    assert not p["passed"] and p["degenerate"] == ["torch", "keras"] and p["max_rel"] == 0
    assert "constant (degenerate) logits in keras, torch" in m["reason"]


@pytest.mark.parametrize("app", list(UNTRAINED))
def test_untrained_keras_applications_pass_at_their_floor(app: str, tmp_path: Path) -> None:
    name, size = UNTRAINED[app]
    weights = _save_untrained(app, tmp_path)
    proc, report = _verify(name, "--weights", str(weights), "--input-size", str(size),
                           str(size))
    (m,) = report["models"]
    rels = [p["max_rel"] for p in m["pairs"]]
    # The problem is there: every pair is beyond 1e-5, and so is every runtime's distance
    # to float64, the reference's included.
    assert min(rels) > m["rtol"] == 1e-5 and m["float32_floor"] > 2e-5
    assert min(m["error_vs_float64"].values()) > 2e-5
    assert proc.returncode == 0, proc.stderr
    assert len(m["pairs"]) == 6 and all(p["passed"] for p in m["pairs"])
    for p in m["pairs"]:
        assert p["tolerance"] == pytest.approx(floor.FLOOR_FACTOR * m["float32_floor"])
        assert p["max_rel"] <= 2 * m["float32_floor"]  # k = 4 leaves room over 2x
        assert p["farther"] is None
    assert "float32 floor" in proc.stderr and "tolerance" in proc.stderr


def test_sign_flipped_channel_still_fails_at_its_layer(tmp_path: Path) -> None:
    clean = _save_untrained("ResNet50", tmp_path)
    bad = _save_untrained("ResNet50", tmp_path, flip=True)
    proc, report = _verify("keras_resnet50", "--torch-weights", str(clean), "--keras-weights",
                           str(bad), "--input-size", "64", "64", "--runtimes", "torch,keras")
    assert proc.returncode == 1, proc.stderr
    (m,) = report["models"]
    (p,) = m["pairs"]
    assert not p["passed"] and p["max_rel"] > 100 * p["tolerance"]
    assert p["first_divergent_layer"] == FLIPPED_TORCH and p["farther"] == "keras"
    dist = m["error_vs_float64"]
    assert dist["keras"] > 100 * dist["torch"] and dist["torch"] == m["float32_floor"]


def test_an_explicit_rtol_is_held_exactly(tmp_path: Path) -> None:
    from tests.tiny_onnx import write_tiny_golden, write_tiny_onnx

    onnx = write_tiny_onnx(tmp_path / "tiny.onnx")
    golden = write_tiny_golden(tmp_path / "g.npz")
    proc = run_cli_here("check", str(onnx), "--golden", str(golden), "--json", "-")
    (m,) = json.loads(proc.stdout)["models"]
    assert proc.returncode == 0 and m["float32_floor"] > 0, proc.stderr
    # A demand below what float32 can give fails: the floor lifts only the default.
    proc = run_cli_here("check", str(onnx), "--golden", str(golden), "--rtol", "1e-12",
                        "--json", "-")
    (m,) = json.loads(proc.stdout)["models"]
    assert proc.returncode == 1 and m["pairs"][0]["tolerance"] == 1e-12, proc.stderr
