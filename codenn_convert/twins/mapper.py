"""Exact weight mapping between torch state_dicts and Keras layer weights.

The map is derived by rule, never written out per model:

* Keras layer names *are* torch module paths (``layer1.0.conv1``), so a Keras layer named
  ``N`` owns the torch keys ``N.weight``, ``N.bias`` and, for BatchNorm, the running stats.
* The layer's Keras class picks one rule from :data:`RULES` (conv, dense, batchnorm); a Dense
  fed straight by a ``Flatten`` of a spatial map gets the first-dense-after-flatten rule,
  which reorders torch's C,H,W flattening into Keras's H,W,C.

Every rule is a pure permutation/reshape, so a round trip is bit-identical.
All arrays here are numpy; torch-layout dicts map key -> array.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from codenn_convert.errors import CheckpointError, key_mismatch, shape_mismatch

TorchState = dict[str, np.ndarray]
KerasWeights = dict[str, list[np.ndarray]]

NUM_BATCHES_TRACKED = "num_batches_tracked"


def torch_path(keras_name: str) -> str:
    """The torch module path of a Keras layer. Our twins use the path itself as the name."""
    return keras_name


@dataclass(frozen=True)
class LayerPlan:
    """One weighted Keras layer and how its variables map to torch keys."""

    name: str  # Keras layer name
    kind: str  # key of RULES
    keras_shapes: tuple[tuple[int, ...], ...]
    flatten_hwc: tuple[int, int, int] | None = None  # only for "dense_after_flatten"

    @property
    def prefix(self) -> str:
        return torch_path(self.name)


@dataclass(frozen=True)
class Rule:
    """How one layer type maps. ``torch_shapes`` lists (suffix, shape) in Keras variable order."""

    torch_shapes: Callable[[LayerPlan], list[tuple[str, tuple[int, ...]]]]
    to_keras: Callable[[LayerPlan, list[np.ndarray]], list[np.ndarray]]
    to_torch: Callable[[LayerPlan, list[np.ndarray]], list[np.ndarray]]
    extra_keys: tuple[str, ...] = ()  # torch-only buffers (BatchNorm's num_batches_tracked)


def _conv_shapes(p: LayerPlan) -> list[tuple[str, tuple[int, ...]]]:
    kh, kw, i, o = p.keras_shapes[0]
    out = [("weight", (o, i, kh, kw))]
    return out + [("bias", p.keras_shapes[1])] if len(p.keras_shapes) > 1 else out


def _conv_to_keras(p: LayerPlan, ws: list[np.ndarray]) -> list[np.ndarray]:
    return [np.ascontiguousarray(ws[0].transpose(2, 3, 1, 0)), *ws[1:]]  # OIHW -> HWIO


def _conv_to_torch(p: LayerPlan, ws: list[np.ndarray]) -> list[np.ndarray]:
    return [np.ascontiguousarray(ws[0].transpose(3, 2, 0, 1)), *ws[1:]]  # HWIO -> OIHW


def _dense_shapes(p: LayerPlan) -> list[tuple[str, tuple[int, ...]]]:
    i, o = p.keras_shapes[0]
    out = [("weight", (o, i))]
    return out + [("bias", p.keras_shapes[1])] if len(p.keras_shapes) > 1 else out


def _dense_to_keras(p: LayerPlan, ws: list[np.ndarray]) -> list[np.ndarray]:
    return [np.ascontiguousarray(ws[0].T), *ws[1:]]


def _dense_to_torch(p: LayerPlan, ws: list[np.ndarray]) -> list[np.ndarray]:
    return [np.ascontiguousarray(ws[0].T), *ws[1:]]


def _flat_dense_to_keras(p: LayerPlan, ws: list[np.ndarray]) -> list[np.ndarray]:
    h, w, c = p.flatten_hwc  # type: ignore[misc]
    out = ws[0].shape[0]
    # torch columns run over (C, H, W); Keras rows over (H, W, C).
    kernel = ws[0].reshape(out, c, h, w).transpose(2, 3, 1, 0).reshape(h * w * c, out)
    return [np.ascontiguousarray(kernel), *ws[1:]]


def _flat_dense_to_torch(p: LayerPlan, ws: list[np.ndarray]) -> list[np.ndarray]:
    h, w, c = p.flatten_hwc  # type: ignore[misc]
    out = ws[0].shape[1]
    weight = ws[0].reshape(h, w, c, out).transpose(3, 2, 0, 1).reshape(out, c * h * w)
    return [np.ascontiguousarray(weight), *ws[1:]]


def _bn_shapes(p: LayerPlan) -> list[tuple[str, tuple[int, ...]]]:
    names = ("weight", "bias", "running_mean", "running_var")
    return list(zip(names, p.keras_shapes, strict=True))


def _identity(p: LayerPlan, ws: list[np.ndarray]) -> list[np.ndarray]:
    # gamma/beta/moving_mean/moving_variance are weight/bias/running_mean/running_var as-is.
    return list(ws)


RULES: dict[str, Rule] = {
    "conv": Rule(_conv_shapes, _conv_to_keras, _conv_to_torch),
    "dense": Rule(_dense_shapes, _dense_to_keras, _dense_to_torch),
    "dense_after_flatten": Rule(_dense_shapes, _flat_dense_to_keras, _flat_dense_to_torch),
    "batchnorm": Rule(_bn_shapes, _identity, _identity, extra_keys=(NUM_BATCHES_TRACKED,)),
}

# Keras class name -> rule name. Explicit, like onnx2torch's converter registry.
KERAS_LAYER_KINDS: dict[str, str] = {
    "Conv2D": "conv",
    "Dense": "dense",
    "BatchNormalization": "batchnorm",
}


def hwc_flatten_of(op: Any) -> tuple[int, int, int] | None:
    """(H, W, C) if ``op``'s output is a Flatten of an H,W,C map (H*W > 1).

    Element-wise, weightless layers after the Flatten (Dropout, ReLU) do not change the
    order, so the walk back passes through them.
    """
    while type(op).__name__ != "Flatten":
        nodes = getattr(op, "_inbound_nodes", [])
        if op.weights or not nodes or len(nodes[0].input_tensors) != 1:
            return None
        if tuple(op.input.shape) != tuple(op.output.shape):
            return None
        op = nodes[0].input_tensors[0]._keras_history.operation
    shape = tuple(op.input.shape[1:])
    if len(shape) != 3 or shape[0] * shape[1] == 1:
        return None  # a 1x1 map flattens identically in both orders
    return tuple(int(s) for s in shape)  # type: ignore[return-value]


def _flatten_source(layer: Any) -> tuple[int, int, int] | None:
    """(H, W, C) if ``layer`` is fed by a Flatten of an H,W,C map: the CHW->HWC rule."""
    node = layer._inbound_nodes[0]
    if len(node.input_tensors) != 1:
        return None
    return hwc_flatten_of(node.input_tensors[0]._keras_history.operation)


def plan_keras_model(model: Any) -> list[LayerPlan]:
    """Derive the layer plan of a functional Keras model from its layers' types and names."""
    plan = []
    for layer in model.layers:
        if not layer.weights:
            continue
        cls = type(layer).__name__
        kind = KERAS_LAYER_KINDS.get(cls)
        if kind is None:
            raise CheckpointError(
                f"no weight-mapping rule for Keras layer {layer.name!r} of type {cls}; "
                f"known types: {', '.join(KERAS_LAYER_KINDS)}"
            )
        hwc = _flatten_source(layer) if kind == "dense" else None
        plan.append(
            LayerPlan(
                name=layer.name,
                kind="dense_after_flatten" if hwc else kind,
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
            out[f"{p.prefix}.{suffix}"] = tuple(shape)
        for suffix in rule.extra_keys:
            out[f"{p.prefix}.{suffix}"] = ()
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
        src = [np.asarray(state[f"{p.prefix}.{s}"]) for s, _ in rule.torch_shapes(p)]
        weights[p.name] = rule.to_keras(p, src)
        for suffix in rule.extra_keys:
            key = f"{p.prefix}.{suffix}"
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
            state[f"{p.prefix}.{suffix}"] = arr
        for suffix in rule.extra_keys:
            state[f"{p.prefix}.{suffix}"] = np.asarray(tracked.get(p.name, 0), dtype=np.int64)
    return state


def get_keras_weights(model: Any) -> KerasWeights:
    """Weights of every weighted layer, keyed by layer name."""
    return {layer.name: layer.get_weights() for layer in model.layers if layer.weights}


def set_keras_weights(model: Any, weights: Mapping[str, list[np.ndarray]]) -> None:
    """Assign weights (already checked against the model's plan) layer by layer."""
    for name, arrays in weights.items():
        model.get_layer(name).set_weights(arrays)
