"""Build the torch and Keras twins of a model from one torch-layout state.

The torch-layout numpy state (key -> array) is the canonical in-memory form; everything else
is derived from it by :mod:`codenn_convert.twins.mapper`.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from codenn_convert.checkpoints.sources import read_source
from codenn_convert.interface import NUM_BATCHES_TRACKED
from codenn_convert.registry import get_model, get_spec
from codenn_convert.twins import mapper

TorchState = dict[str, np.ndarray]


def keras_plan(model: Any) -> list[mapper.LayerPlan]:
    """The layer plan of a built Keras twin."""
    return mapper.plan_keras_model(model)


def state_from_source(name: str, source: Any, keras_model: Any) -> TorchState:
    """The checked, float32 torch-layout state of a resolved
    :class:`codenn_convert.checkpoints.sources.Source`; ``keras_model`` (the Keras twin built
    with the source's options) supplies the layer plan."""
    plan = keras_plan(keras_model)
    if source.keras_weights is not None:
        return mapper.keras_to_torch(source.keras_weights, plan, name, source.tracked)
    mapper.check_torch_state(source.torch_state, plan, name)
    return source.torch_state


def load_state(
    name: str, path: str | os.PathLike[str], *, keras_model: Any | None = None,
    **options: Any,
) -> TorchState:
    """Read a checkpoint of either layout into a checked, float32 torch-layout state.

    The file goes through :func:`codenn_convert.checkpoints.sources.read_source` (wrappers,
    precision, keras.applications names, inferred options). ``keras_model`` (a built Keras twin)
    supplies the layer plan; one is built with the resolved options if missing.
    """
    source = read_source(name, path, options)
    kmodel = keras_model if keras_model is not None else get_model(
        name, "keras", **source.options)
    return state_from_source(name, source, kmodel)


def torch_key_order(name: str, state: TorchState, **options: Any) -> TorchState:
    """``state`` with its keys in the torch twin's (torchvision's) order.

    The mapper walks Keras layers, whose order can differ (ResNet's downsample, Inception's
    branches); strict loading does not care, but users diff files. The twin is built on the
    meta device: structure only, no memory.
    """
    import torch

    with torch.device("meta"):
        order = list(get_model(name, "torch", **options).state_dict())
    return {k: state[k] for k in order if k in state} | state


def torch_twin(name: str, state: TorchState, **kwargs: Any) -> Any:
    """The torch twin in eval mode with ``state`` loaded (``strict=True``)."""
    import torch

    model = get_model(name, "torch", **kwargs)
    tensors = {k: torch.from_numpy(np.array(v)) for k, v in state.items()}
    own = model.state_dict()
    for key in own.keys() - tensors.keys():
        if key.endswith("." + NUM_BATCHES_TRACKED):  # old checkpoints lack it; torch allows that
            tensors[key] = torch.zeros((), dtype=torch.int64)
    model.load_state_dict(tensors, strict=True)
    return model.eval()


def keras_twin(
    name: str, state: TorchState, *, input_size: tuple[int, int] | None = None, **kwargs: Any
) -> Any:
    """The Keras twin, built for ``input_size``, with ``state`` mapped in."""
    model = get_model(name, "keras", input_size=input_size, **kwargs)
    set_torch_state(model, state, name)
    return model


def set_torch_state(model: Any, state: TorchState, name: str
                    ) -> tuple[mapper.KerasWeights, dict[str, int]]:
    """Map a torch-layout ``state`` into the built Keras twin ``model`` (in place).

    The one place a torch state enters a Keras twin; returns the mapped Keras weights and
    the ``num_batches_tracked`` values the Keras file can carry.
    """
    weights, tracked = mapper.torch_to_keras(state, keras_plan(model), name)
    mapper.set_keras_weights(model, weights)
    return weights, tracked


def default_input_size(name: str, input_size: tuple[int, int] | None, batch: int = 2
                       ) -> tuple[int, int]:
    """``input_size`` checked against the model's minimum (and, at ``batch``, this machine's
    memory), or the model's default."""
    spec = get_spec(name)
    size = tuple(input_size) if input_size else spec.input_size
    spec.check_input_size(size, batch)  # type: ignore[arg-type]
    return size  # type: ignore[return-value]


def inference_view(model: Any) -> Any:
    """The logits-only view of a Keras twin.

    A Keras functional model cannot change its outputs with ``training``, so a twin with
    training-only heads (InceptionV3's aux logits) lists ``[logits, aux...]`` as outputs; the
    layers stay in the full model, so the mapper still covers their weights. Inference,
    export and verification use this view, which shares the same layers and weights.
    """
    if len(model.outputs) == 1:
        return model
    import keras

    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    return keras.Model(inputs, model.outputs[0], name=model.name)
