"""The contract every registered model keeps, at a small input size (timm's
tests/test_models.py is the model): a new family that registers its specs is tested here with
no edit. Family test files keep only what is special to the family.

For each model in :func:`list_models`, at its minimum input size:

* both twins build, with the keys, shapes and parameter count the spec states;
* torch -> Keras -> torch is bit-exact (dtypes, BatchNorm counters, strict loading);
* torch and Keras agree to the model's rtol on seeded N(0, 1) inputs;
* an input below the minimum size is refused with a one-line error.

Both ONNX exports of every registered model are checked for the documented interface
(:func:`tests.conftest.check_onnx_interface`) where they are made anyway: by the full-size
four-runtime parity of every model (tests/test_parity.py), so the contract exports nothing
of its own (an export costs more than all of the above together).
"""

from __future__ import annotations

import gc
from typing import Any

import numpy as np
import pytest
import torch

from codenn_convert.errors import UsageError
from codenn_convert.registry import get_model, get_spec, list_models
from codenn_convert.twins import mapper
from codenn_convert.twins.build import inference_view, set_torch_state, torch_twin
from codenn_convert.twins.init import realistic_model, small_calibration_size, torch_state_of
from codenn_convert.verification.metrics import compare
from tests.autotwin_oracle import check_generated_twin

MODELS = list_models()


def _logits(model: Any, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


@pytest.mark.parametrize("name", MODELS)
def test_model_contract(name: str) -> None:
    spec = get_spec(name)
    size = spec.min_input_size
    tmodel = realistic_model(name, calibration_size=small_calibration_size(name))
    state = torch_state_of(tmodel)
    assert sum(p.numel() for p in tmodel.parameters()) == spec.num_params

    # Both twins build; the Keras twin's plan implies exactly the torch twin's keys and shapes.
    kmodel = get_model(name, "keras", input_size=size)
    plan = mapper.plan_keras_model(kmodel)
    assert mapper.expected_torch_state(plan) == {k: v.shape for k, v in state.items()}
    assert int(sum(np.prod(v.shape) for v in kmodel.trainable_weights)) == spec.num_params

    # The round trip through the Keras twin's own variables is bit-exact.
    _, tracked = set_torch_state(kmodel, state, name)
    back = mapper.keras_to_torch(mapper.get_keras_weights(kmodel), plan, name, tracked)
    assert sorted(back) == sorted(state)
    for key, value in state.items():
        assert back[key].dtype == value.dtype and np.array_equal(back[key], value), key
        if key.endswith(".num_batches_tracked"):
            assert int(back[key]) > 0, key  # the realistic init sets every counter
    torch_twin(name, back)  # loads with strict=True
    del back

    # torch vs Keras on seeded N(0, 1) inputs.
    x = np.random.default_rng(1).standard_normal((2, 3, *size)).astype(np.float32)
    ref = _logits(tmodel, x)
    out = np.asarray(inference_view(kmodel)(x.transpose(0, 2, 3, 1), training=False))
    classes = ref.shape[1]
    assert ref.shape == out.shape == (2, classes)
    assert np.abs(ref).max() > 0.1  # realistic logits, not a collapsed output
    pair = compare(ref, out, rtol=spec.rtol, names=("torch", "keras"))
    assert pair.passed, (pair.max_rel, spec.rtol)

    # The Keras twin generated from the torch twin's graph is the hand-written one.
    check_generated_twin(name, tmodel, kmodel, plan, x, out)

    del tmodel, kmodel, state
    gc.collect()

    # One pixel below the minimum, in either dimension, is refused before anything is built.
    (mh, mw), (h, w) = size, spec.input_size
    for small in ((mh - 1, mw - 1), (mh - 1, w), (h, mw - 1)):
        with pytest.raises(UsageError, match=f"too small for {name}: the minimum is {mh}x{mw}"):
            get_model(name, "keras", input_size=small)
