"""The verifier's comparison semantics and its end-to-end result on a small input."""

from __future__ import annotations

import numpy as np
import pytest

from codenn_convert.errors import UsageError
from codenn_convert.verification import RUNTIMES, compare, seeded_batch, verify


def test_identical_outputs_pass_exactly() -> None:
    a = np.random.default_rng(0).standard_normal((4, 10)).astype(np.float32)
    r = compare(a, a.copy(), rtol=1e-5)
    assert r.passed and r.max_abs == 0 and r.max_rel == 0 and r.top1 == 1 and r.top5 == 1
    assert r.cosine == pytest.approx(1.0)


def test_max_rel_is_relative_to_the_largest_reference_value() -> None:
    a = np.array([[10.0, 1e-3, -2.0]])
    b = a + np.array([[0.0, 1e-3, 0.0]])  # 100% off on a tiny logit, 1e-4 of the largest
    r = compare(a, b, rtol=1e-5)
    assert r.max_abs == pytest.approx(1e-3) and r.max_rel == pytest.approx(1e-4)
    assert not r.passed
    assert compare(a, b, rtol=2e-4).passed


def test_nonfinite_positions_must_match() -> None:
    a = np.array([[1.0, np.nan, np.inf, 3.0]])
    # Issue 9: NaN/Inf never agree, not even at the same places; the rest is still measured.
    same = compare(a, a.copy(), rtol=1e-5)
    assert not same.passed and same.nonfinite_match and same.max_rel == 0
    assert same.cosine is None and same.top1 is None and same.nonfinite == ["a", "b"]
    moved = np.array([[np.nan, 1.0, np.inf, 3.0]])
    r = compare(a, moved, rtol=1e-5)
    assert not r.passed and not r.nonfinite_match and r.max_rel == float("inf")
    flipped = np.array([[1.0, np.nan, -np.inf, 3.0]])
    assert not compare(a, flipped, rtol=1e-5).nonfinite_match


def test_topk_agreement_counts_samples() -> None:
    a = np.array([[5.0, 4, 3, 2, 1, 0], [0, 1, 2, 3, 4, 5]])
    b = a.copy()
    b[1] = [5, 1, 2, 3, 4, 0]  # sample 1: top-1 and the top-5 set both change
    r = compare(a, b, rtol=1.0)
    assert r.top1 == 0.5 and r.top5 == 0.5


def test_shape_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="output shapes differ"):
        compare(np.zeros((2, 3)), np.zeros((2, 4)), rtol=1e-5)


def test_seeded_batch_is_deterministic_and_normal() -> None:
    x = seeded_batch(2, (31, 17), seed=5)
    assert x.shape == (2, 3, 31, 17) and x.dtype == np.float32
    assert np.array_equal(x, seeded_batch(2, (31, 17), seed=5))
    assert not np.array_equal(x, seeded_batch(2, (31, 17), seed=6))
    assert abs(float(x.mean())) < 0.1 and 0.9 < float(x.std()) < 1.1


def test_bad_arguments() -> None:
    with pytest.raises(UsageError):
        verify("alexnet", runtimes=("torch",))
    with pytest.raises(UsageError, match="minimum"):
        verify("alexnet", input_size=(40, 40))


def test_alexnet_all_six_pairs_at_an_odd_size() -> None:
    r = verify("alexnet", batch=2, seed=3, input_size=(71, 103))
    assert [(p.a, p.b) for p in r.pairs] == [
        (a, b) for i, a in enumerate(RUNTIMES) for b in RUNTIMES[i + 1:]]
    for p in r.pairs:
        assert p.passed and p.max_rel <= 1e-5 and p.top1 == 1.0, p
    assert r.passed and r.input_shape == [2, 3, 71, 103]


def test_builder_options_reach_both_twins_and_the_report(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """InceptionV3's transform_input reaches every runtime: verify passes with it on, it is
    recorded, and exported graphs with it on agree with each other but not with it off."""
    import onnxruntime as ort

    from codenn_convert.export.onnx_export import export_onnx

    on = verify("inception_v3", input_size=(75, 75), seed=2,
                options={"transform_input": True}, runtimes=("torch", "keras", "onnx-keras"))
    assert on.passed and on.options == {"transform_input": True}
    assert on.to_dict()["options"] == {"transform_input": True}

    x = seeded_batch(2, (75, 75), seed=4)
    logits = {}
    for fw, opts in (("torch", {"transform_input": True}), ("keras", {"transform_input": True}),
                     ("torch", {})):
        path = tmp_path / f"{fw}{len(opts)}.onnx"
        export_onnx("inception_v3", fw, path, input_size=(75, 75), options=opts)  # type: ignore[arg-type]
        logits[(fw, bool(opts))] = ort.InferenceSession(str(path)).run(None, {"input": x})[0]
    ref = logits[("torch", True)]
    scale = np.abs(ref).max()
    assert np.abs(logits[("keras", True)] - ref).max() / scale <= 1e-5
    assert np.abs(logits[("torch", False)] - ref).max() / scale > 1e-3
