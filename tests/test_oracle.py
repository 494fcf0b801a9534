"""The float64 oracle and the error histograms.

The torch twin run in float64 with the same weights is the exact result: rounding keeps
every runtime near it, a fault puts one side far from it. Every pair also carries the
distribution of its errors (decade bins) and their 99th percentile.
"""

from __future__ import annotations

from pathlib import Path

import jsonschema
import numpy as np
import pytest

from codenn_convert import report as rep
from codenn_convert.verification import ModelResult, verify
from codenn_convert.verification.metrics import compare
from codenn_convert.verification.results import HIST_EDGES
from tests.conftest import write_faulty_alexnet

SIZE = (64, 64)


def test_histogram_bins_and_p99_against_the_schema() -> None:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((4, 250))
    a[0, 0] = 10.0  # the scale: max|a| = 10
    rel = np.array([0.0, 5e-7, 5e-7, 3e-5, 2.0])  # relative errors planted at known places
    b = a.copy()
    b[1, :5] += rel * 10.0
    p = compare(a, b, rtol=1e-5, names=("torch", "keras"))
    h = p.histogram
    assert h["edges"] == [0.0, *HIST_EDGES, float("inf")]
    assert len(h["counts"]) == len(h["edges"]) - 1 and sum(h["counts"]) == a.size
    bins = dict(zip(h["edges"], h["counts"], strict=False))
    assert bins[1e-7] == 2 and bins[1e-5] == 1 and bins[1.0] == 1  # [1e-7,1e-6) etc.
    assert bins[0.0] == a.size - 4  # exact agreement and the sub-1e-10 rounding
    assert p.p99_rel == 0.0 and p.max_rel == pytest.approx(2.0)  # 99.6% agree exactly
    spread = compare(a, a + 10.0 * np.linspace(0, 1e-5, a.size).reshape(a.shape), rtol=1e-5)
    assert spread.p99_rel == pytest.approx(0.99e-5, rel=1e-3) and spread.passed
    data = rep.build_report([ModelResult("alexnet", [4, 3, 64, 64], 0, 1e-5, pairs=[p])])
    jsonschema.validate(__import__("json").loads(rep.to_json(data)), rep.schema(),
                        cls=jsonschema.Draft202012Validator)
    assert "▁" in rep.to_html(data) or "█" in rep.to_html(data)


@pytest.fixture(scope="module")
def faulty(module_tmp: Path) -> dict[str, Path]:
    write_faulty_alexnet(module_tmp, SIZE)
    return {p.name: p for p in module_tmp.iterdir()}


def test_clean_runtimes_sit_on_the_exact_result() -> None:
    r = verify("alexnet", input_size=SIZE, seed=1)
    assert r.passed and set(r.error_vs_float64) == {"torch", "keras", "onnx-torch",
                                                    "onnx-keras"}
    for runtime, err in r.error_vs_float64.items():
        assert err is not None and err <= 1e-5, (runtime, err)
    assert all(p.farther is None and p.p99_rel is not None for p in r.pairs)


def test_a_planted_fault_is_the_farther_side(faulty: dict[str, Path]) -> None:
    r = verify("alexnet", torch_weights=faulty["clean.safetensors"],
               keras_weights=faulty["bad.weights.h5"], onnx=[faulty["bad.onnx"]],
               runtimes=("torch", "keras"), input_size=SIZE, seed=1)
    dist = r.error_vs_float64
    assert dist["torch"] <= 1e-5  # the oracle has the torch side's (clean) weights
    assert dist["keras"] > 1e-4 and dist["onnx:bad.onnx"] > 1e-4  # 2% on one channel
    by_pair = {(p.a, p.b): p for p in r.pairs}
    assert by_pair[("torch", "keras")].farther == "keras"
    assert by_pair[("torch", "onnx:bad.onnx")].farther == "onnx:bad.onnx"
    # keras and bad.onnx carry the same fault: they agree, and a passing pair names no side.
    assert by_pair[("keras", "onnx:bad.onnx")].passed
    assert by_pair[("keras", "onnx:bad.onnx")].farther is None
    html = rep.to_html(rep.build_report([r]))
    assert "keras farther from float64" in html and "Distance to float64" in html
