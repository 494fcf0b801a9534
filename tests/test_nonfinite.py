"""Issue 9 section 1: non-finite numbers never pass.

One NaN (or Inf) weight makes every logit NaN in every runtime; the runtimes then "agree"
perfectly. That must fail every pair, name the runtimes and the first layer where the
non-finite values appear, list the corrupted tensors, and never show cosine 1.0.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from codenn_convert.checkpoints import files as checkpoint
from codenn_convert.twins.init import realistic_state
from codenn_convert.verification.metrics import compare
from tests.conftest import run_cli_here

SIZE = ("64", "64")
BAD = "layer2.0.conv1"


def test_nan_against_finite_never_shows_cosine_one() -> None:
    a = np.random.default_rng(0).standard_normal((2, 10)).astype(np.float32)
    b = a.copy()
    b[0, 3] = np.nan
    r = compare(a, b, rtol=1e-5)
    assert not r.passed and r.cosine is None and r.top1 is None and r.top5 is None
    assert r.nonfinite == ["b"] and r.max_rel == float("inf")
    both = np.full_like(a, np.nan)
    r = compare(both, both.copy(), rtol=1e-5)
    assert not r.passed and r.nonfinite_match and r.cosine is None
    assert r.max_rel is None and r.p99_rel is None  # nothing finite to measure


@pytest.fixture(scope="module")
def corrupted(module_tmp: Path) -> dict[str, Path]:
    d = module_tmp
    state = realistic_state("resnet18", seed=0)
    for name, value in (("nan", np.nan), ("inf", np.inf)):
        bad = {k: v.copy() for k, v in state.items()}
        bad[f"{BAD}.weight"][3, 1, 0, 0] = value
        checkpoint.save_torch_state(bad, d / f"{name}.safetensors")
    return {p.stem: p for p in d.iterdir()}


@pytest.mark.parametrize(("kind", "runtimes"), [("nan", "torch,keras,onnx-torch,onnx-keras"),
                                                ("inf", "torch,keras")])
def test_one_bad_weight_fails_through_the_cli(corrupted: dict[str, Path], tmp_path: Path,
                                              kind: str, runtimes: str) -> None:
    js = tmp_path / "v.json"
    proc = run_cli_here("verify", "resnet18", "--weights", str(corrupted[kind]), "--input-size",
                   *SIZE, "--runtimes", runtimes, "--json", str(js))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "cosine 1.0" not in proc.stdout and "1.000000" not in proc.stdout
    (m,) = json.loads(js.read_text())["models"]
    names = runtimes.split(",")
    assert not m["passed"] and len(m["pairs"]) == len(names) * (len(names) - 1) // 2
    for p in m["pairs"]:
        assert not p["passed"] and p["cosine"] is None and p["top1"] is None
    # Which tensors, how many values; which runtimes, from which layer.
    assert m["nonfinite_weights"] == [{"tensor": f"{BAD}.weight", "count": 1}]
    assert set(m["nonfinite_outputs"]) == set(names)
    assert m["nonfinite_outputs"]["torch"] == BAD and m["nonfinite_outputs"]["keras"] == BAD
    assert "non-finite outputs in torch" in m["reason"] and f"{BAD}.weight" in m["reason"]
    assert f"{BAD}.weight" in proc.stderr

    out = tmp_path / "reports"
    proc = run_cli_here("report", "--from-json", str(js), "-o", str(out))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    suite = ET.parse(out / "junit.xml").getroot().find("testsuite")
    assert suite is not None and int(suite.get("failures", "0")) == len(m["pairs"])
    failure = suite.find("testcase/failure")
    assert failure is not None and "non-finite outputs in" in failure.get("message", "")
    assert "cosine: n/a" in (failure.text or "")
    assert "**FAIL**" in (out / "parity.md").read_text()
