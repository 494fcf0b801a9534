"""The oracle of generated Keras twins: for a registered model, the twin generated from its
torch twin's graph (:func:`codenn_convert.keras_twin_of`) must have the hand-written Keras
twin's layer plan (the same weighted layer names, rules, shapes and flatten orders: so the
same bit-exact mapping, which the contract test proves for the hand-written twin) and give
its logits (float32 floor: the model's rtol of the largest logit).

Called from the contract test (tests/test_models.py), which has built both twins already.
The generated graph calls the hand-written twin's weighted layers (by path; each must be of
the type its rule builds), so nothing is allocated twice: its own weight mapping is what
the plan comparison proves equal, and the held-out tests (tests/test_autotwin.py) run it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from codenn_convert.registry import get_spec
from codenn_convert.twins.fx_build import build_keras, keras_twin_of
from codenn_convert.twins.fx_trace import TwinError, trace
from codenn_convert.twins.mapper import plan_keras_model
from codenn_convert.twins.rules import LayerPlan
from codenn_convert.verification.metrics import compare


def check_generated_twin(name: str, tmodel: Any, kmodel: Any, plan: list[LayerPlan],
                         x: np.ndarray, keras_logits: np.ndarray) -> float:
    """Assert the generated twin matches the hand-written one (``kmodel``, whose layer plan
    is ``plan``); return its max rel error."""
    size = tuple(x.shape[2:])
    if len(kmodel.outputs) > 1:
        # Training-only heads (InceptionV3's AuxLogits) are not in the eval graph, so a twin
        # generated from it cannot hold their weights: a one-line error, never a silently
        # partial mapping.
        with pytest.raises(TwinError, match="never calls .* training-only .*: AuxLogits"):
            keras_twin_of(tmodel, size)
        return 0.0
    shared = {layer.name: layer for layer in kmodel.layers if layer.weights}
    generated = build_keras(trace(tmodel, size), shared=shared)
    assert {p.name: p for p in plan_keras_model(generated)} == {p.name: p for p in plan}
    out = np.asarray(generated(x.transpose(0, 2, 3, 1), training=False))
    pair = compare(keras_logits, out, rtol=get_spec(name).rtol, names=("keras", "generated"))
    assert pair.passed, (pair.max_rel, get_spec(name).rtol)
    return float(pair.max_rel)
