"""Exact weight mapping between torch state_dicts and Keras layer weights.

The map is derived by rule, never written out per model:

* Keras layer names *are* torch module paths (``layer1.0.conv1``), so a Keras layer named
  ``N`` owns the torch keys ``N.weight``, ``N.bias`` and, for BatchNorm, the running stats.
* The layer's type picks its rule from the registry of :mod:`codenn_convert.twins.rules`
  (conv, dense, batchnorm, ...); a Dense fed straight by a ``Flatten`` of a spatial map gets
  the first-dense-after-flatten rule, which reorders torch's C,H,W flattening into Keras's
  H,W,C.

Every rule is a pure permutation/reshape, so a round trip is bit-identical.
All arrays here are numpy; torch-layout dicts map key -> array.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from codenn_convert.errors import CheckpointError, key_mismatch, shape_mismatch
from codenn_convert.interface import NUM_BATCHES_TRACKED
from codenn_convert.twins.graph import KerasGraph
from codenn_convert.twins.rules import RULES, LayerPlan, keras_rule

__all__ = ["RULES", "KerasWeights", "LayerPlan", "TorchState", "check_keras_weights",
           "check_torch_state", "expected_torch_state", "get_keras_weights", "keras_to_torch",
           "plan_keras_model", "set_keras_weights", "torch_to_keras"]

TorchState = dict[str, np.ndarray]
KerasWeights = dict[str, list[np.ndarray]]


def plan_keras_model(model: Any) -> list[LayerPlan]:
    """Derive the layer plan of a functional Keras model from its layers' types and names.

    Each weighted layer's type picks its rule (:mod:`codenn_convert.twins.rules`; none is a
    one-line error naming the layer); a layer fed by a Flatten of a spatial map takes its
    rule's ``after_flatten`` variant (the first dense after a flatten).
    """
    graph: KerasGraph | None = None
    plan = []
    for layer in model.layers:
        if not layer.weights:
            continue
        rule = keras_rule(layer)
        hwc = None
        if rule.after_flatten is not None:
            graph = graph or KerasGraph(model)
            hwc = graph.fed_by_flatten(layer.name)
        plan.append(
            LayerPlan(
                name=layer.name,
                kind=rule.after_flatten if hwc else rule.name,  # type: ignore[arg-type]
                keras_shapes=tuple(tuple(int(d) for d in v.shape) for v in layer.weights),
                flatten_hwc=hwc,
            )
        )
    return plan


def expected_torch_state(plan: list[LayerPlan]) -> dict[str, tuple[int, ...]]:
    """Torch keys and shapes implied by the plan (including torch-only buffers)."""
    out: dict[str, tuple[int, ...]] = {}
    for p in plan:
        rule = RULES[p.kind]
        for suffix, shape in rule.torch_shapes(p):
            out[p.key(suffix)] = tuple(shape)
        for suffix in rule.extra_keys:
            out[p.key(suffix)] = ()
    return out


def check_torch_state(state: Mapping[str, Any], plan: list[LayerPlan], model: str) -> None:
    """Raise a one-line error naming missing/unexpected keys or the first wrong shape.

    ``num_batches_tracked`` may be absent (old checkpoints lack it; torch tolerates that).
    """
    expected = expected_torch_state(plan)
    optional = {k for k in expected if k.endswith("." + NUM_BATCHES_TRACKED)}
    missing = [k for k in expected if k not in state and k not in optional]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise key_mismatch(model, missing, unexpected)
    for key, shape in expected.items():
        if key in state and tuple(np.shape(state[key])) != shape:
            raise shape_mismatch(key, shape, tuple(np.shape(state[key])))


def check_keras_weights(
    weights: Mapping[str, list[Any]], plan: list[LayerPlan], model: str
) -> None:
    """Same check for Keras weights keyed by layer name (variables in Keras order)."""
    expected = {p.name: p.keras_shapes for p in plan}
    missing = [k for k in expected if k not in weights]
    unexpected = [k for k in weights if k not in expected]
    if missing or unexpected:
        raise key_mismatch(model, missing, unexpected)
    for name, shapes in expected.items():
        got = tuple(tuple(np.shape(w)) for w in weights[name])
        if len(got) != len(shapes):
            raise CheckpointError(
                f"layer {name}: expected {len(shapes)} variables, found {len(got)}"
            )
        for i, (want, have) in enumerate(zip(shapes, got, strict=True)):
            if want != have:
                raise shape_mismatch(f"{name} variable {i}", want, have)


def torch_to_keras(
    state: Mapping[str, np.ndarray], plan: list[LayerPlan], model: str
) -> tuple[KerasWeights, dict[str, int]]:
    """Map a torch-layout state to Keras weights. Returns (weights, num_batches_tracked)."""
    check_torch_state(state, plan, model)
    weights: KerasWeights = {}
    tracked: dict[str, int] = {}
    for p in plan:
        rule = RULES[p.kind]
        src = [np.asarray(state[p.key(s)]) for s, _ in rule.torch_shapes(p)]
        weights[p.name] = rule.to_keras(p, src)
        for suffix in rule.extra_keys:
            key = p.key(suffix)
            if key in state:
                tracked[p.name] = int(np.asarray(state[key]))
    return weights, tracked


def keras_to_torch(
    weights: Mapping[str, list[np.ndarray]],
    plan: list[LayerPlan],
    model: str,
    tracked: Mapping[str, int] | None = None,
) -> TorchState:
    """Map Keras weights to a torch state. ``num_batches_tracked`` comes from ``tracked``
    where the source carried it, else 0, so the result loads with ``strict=True``."""
    check_keras_weights(weights, plan, model)
    tracked = tracked or {}
    state: TorchState = {}
    for p in plan:
        rule = RULES[p.kind]
        arrays = rule.to_torch(p, [np.asarray(w) for w in weights[p.name]])
        for (suffix, _), arr in zip(rule.torch_shapes(p), arrays, strict=True):
            state[p.key(suffix)] = arr
        for suffix in rule.extra_keys:
            state[p.key(suffix)] = np.asarray(tracked.get(p.name, 0), dtype=np.int64)
    return state


def get_keras_weights(model: Any) -> KerasWeights:
    """Weights of every weighted layer, keyed by layer name."""
    return {layer.name: layer.get_weights() for layer in model.layers if layer.weights}


def set_keras_weights(model: Any, weights: Mapping[str, list[np.ndarray]]) -> None:
    """Assign weights (already checked against the model's plan) layer by layer."""
    for name, arrays in weights.items():
        model.get_layer(name).set_weights(arrays)
