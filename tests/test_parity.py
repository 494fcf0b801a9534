"""Full-size four-runtime parity, once per family (marked ``parity``: slow).

Every registered model is held to the same contract at a small size (tests/test_models.py);
here one model of each family runs at its full input size: the family's default model, else
its first registered. keras.applications variants differ from their family's twin only in
builder options (BN eps, padding, in-model preprocessing); those are checked at small sizes by
the contract and against keras.applications' own models (tests/test_keras_applications.py and
the family files), so a second full-size run per family would repeat the same kernels.
Select with ``pytest -m parity``; ``make test`` runs them too.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from codenn_convert.registry import get_spec, list_models
from codenn_convert.verification import seeded_batch, verify
from tests.conftest import check_onnx_interface, run_cli_here

pytestmark = pytest.mark.parity


def one_per_family() -> list[str]:
    """A model per family: the default, else the first registered."""
    chosen: dict[str, str] = {}
    for name in list_models():
        family = get_spec(name).family
        if family not in chosen or (get_spec(name).default
                                    and not get_spec(chosen[family]).default):
            chosen[family] = name
    return list(chosen.values())


def test_one_per_family_covers_every_family() -> None:
    families = {get_spec(n).family for n in list_models()}
    chosen = one_per_family()
    assert sorted(get_spec(n).family for n in chosen) == sorted(families)


@pytest.mark.parametrize("name", one_per_family())
def test_every_model_passes_all_six_pairs_at_full_size(name: str, tmp_path: Path) -> None:
    result = verify(name, batch=2, seed=0, work_dir=tmp_path)
    assert result.input_shape == [2, 3, *get_spec(name).input_size]
    assert len(result.pairs) == 6
    for pair in result.pairs:
        assert pair.passed and pair.max_rel <= 1e-5, pair
    assert result.passed
    # The float64 oracle: every runtime is within float32 rounding of the exact result.
    assert set(result.error_vs_float64) == {"torch", "keras", "onnx-torch", "onnx-keras"}
    for runtime, err in result.error_vs_float64.items():
        assert err is not None and err <= 1e-5, (runtime, err)
    # Both exports have the documented interface (the model contract, tests/test_models.py).
    for fw in ("torch", "keras"):
        check_onnx_interface(tmp_path / f"{name}.{fw}.onnx", get_spec(name).input_size,
                             get_spec(name).builder_kwargs.get("num_classes", 1000))


def test_resnet50_odd_non_square_size_through_the_cli(tmp_path: Path) -> None:
    """Padding bugs hide at 224x224 and show at odd, non-square sizes: verify and export
    both take ``--input-size``, and the exported graph computes what the verifier checked."""
    js, kept = tmp_path / "r.json", tmp_path / "onnx"
    proc = run_cli_here("verify", "resnet50", "--input-size", "197", "251", "--seed", "1",
                   "--json", str(js), "--keep-onnx", str(kept))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (m,) = json.loads(js.read_text())["models"]
    assert m["input_shape"] == [2, 3, 197, 251] and len(m["pairs"]) == 6
    assert all(p["passed"] and p["max_rel"] <= 1e-5 for p in m["pairs"])

    out = tmp_path / "r.keras.onnx"
    proc = run_cli_here("export", "resnet50", "--framework", "keras", "--input-size", "197", "251",
                   "--seed", "1", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    x = seeded_batch(3, (197, 251), seed=7)
    exported = ort.InferenceSession(str(out)).run(None, {"input": x})[0]
    verified = ort.InferenceSession(str(kept / "resnet50.torch.onnx")).run(None, {"input": x})[0]
    assert exported.shape == (3, 1000)
    assert float(np.abs(exported - verified).max() / np.abs(verified).max()) <= 1e-5
