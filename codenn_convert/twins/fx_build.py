"""A Keras twin generated from a torch module's graph: :func:`keras_twin_of`.

The module is traced for one input size (:mod:`codenn_convert.twins.fx_trace`), then each
node becomes Keras layers: modules through the module rules
(:mod:`codenn_convert.twins.fx_modules`; weighted ones build their layer rule's Keras type,
named by the module path, as our hand-written twins are), functions and methods through the
op rules (:mod:`codenn_convert.twins.fx_ops`), with each tensor's layout tracked
(:mod:`codenn_convert.twins.fx_layout`). Weights then map through the same layer rules as
every twin's (:mod:`codenn_convert.twins.mapper`), both ways.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

import numpy as np

from codenn_convert.twins import mapper
from codenn_convert.twins.fx_layout import NHWC, Context, ParamRef, Value, identity_perm
from codenn_convert.twins.fx_modules import find_module_rule
from codenn_convert.twins.fx_ops import Args, find_op_rule, op_name
from codenn_convert.twins.fx_trace import TRACE_BATCH, Traced, TwinError, describe, trace

#: Ops whose rule may take a parameter alone (a view of it keeps its state_dict key).
PARAM_OPS = frozenset({"view", "unsqueeze", "squeeze"})


def keras_twin_of(module: Any, input_size: tuple[int, int] = (224, 224), *,
                  weights: bool = True, name: str | None = None) -> Any:
    """The Keras twin of a torch CNN (NCHW ``[N, 3, H, W]`` in, built for ``input_size``),
    generated from its graph, with the module's weights mapped in (``weights``).

    Keras layers are named by torch module paths, so everything that reads a twin works on
    it: the mapper (both ways), ONNX export, the verifier's layer localisation. What cannot
    be twinned is a one-line :class:`TwinError` naming the node, its op or module type and
    its module path.
    """
    size = (int(input_size[0]), int(input_size[1]))
    model = build_keras(trace(module, size), name=name)
    plan = mapper.plan_keras_model(model)
    unused = _unused_weights(module, plan)
    if unused:
        model, plan = _with_training_heads(module, size, name, unused)
    if weights:
        mapped, _ = mapper.torch_to_keras(state_arrays(module), plan,
                                          name or type(module).__name__)
        mapper.set_keras_weights(model, mapped)
    return model


def _unused_weights(module: Any, plan: list[mapper.LayerPlan]) -> list[str]:
    return sorted(module.state_dict().keys() - mapper.expected_torch_state(plan).keys())


def _with_training_heads(module: Any, size: tuple[int, int], name: str | None,
                         unused: list[str]) -> tuple[Any, list[mapper.LayerPlan]]:
    """Weights the eval graph never uses may be a training-only head (InceptionV3's
    ``AuxLogits``, GoogLeNet's): traced again with only the top module in training mode
    (so no child's training behaviour, e.g. dropout, enters), the heads become extra
    outputs after the logits, as in our hand-written twins. Otherwise a one-line error."""
    error = TwinError(
        f"{len(unused)} weights of modules the eval-mode graph never calls cannot be "
        f"twinned (a training-only branch?): {', '.join(unused[:4])}"
        + (f" (+{len(unused) - 4} more)" if len(unused) > 4 else ""))
    try:
        model = build_keras(trace(module, size, top_training=True), name=name)
    except TwinError:
        raise error from None
    plan = mapper.plan_keras_model(model)
    if len(model.outputs) < 2 or _unused_weights(module, plan):
        raise error
    return model, plan


def build_keras(traced: Traced, name: str | None = None,
                shared: Mapping[str, Any] | None = None) -> Any:
    """The functional Keras model of a traced graph (zero weights), or one calling the
    ``shared`` weighted layers (by path) where it would build new ones."""
    import keras

    _, channels, h, w = traced.input_shape
    inputs = keras.Input((h, w, channels), name="input")
    ctx = Context(traced.root, shared=shared)
    params = _state_keys(traced.root)
    env: dict[Any, Any] = {}
    outputs = None
    for node in traced.graph.nodes:
        ctx.node = node
        node.meta["batch"] = TRACE_BATCH
        if node.op == "placeholder":
            if any(isinstance(v, Value) for v in env.values()):
                raise TwinError(f"the module takes more than one input ({node.name})")
            env[node] = Value(inputs, NHWC)
        elif node.op == "get_attr":
            env[node] = _attribute(traced.root, node, params)
        elif node.op == "output":
            outputs = _outputs(ctx, _load(node.args[0], env))
        else:
            env[node] = _call(ctx, node, _load(node.args, env), _load(node.kwargs, env))
    # Keras maps a functional graph recursively, one frame per layer in a chain: deep nets
    # (EfficientNetV2-L, ~1,000 layers deep) pass Python's default limit (as keras_efficientnet).
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 20_000))
    return keras.Model(inputs, outputs, name=name or type(traced.root).__name__)


def _state_keys(root: Any) -> set[str]:
    return set(root.state_dict().keys())


def _attribute(root: Any, node: Any, params: set[str]) -> Any:
    """A parameter or persistent buffer (a :class:`ParamRef`: its key must map), else a
    constant."""
    value = node.meta.get("value")
    if value is None:
        value = root
        for part in node.target.split("."):
            value = getattr(value, part)
    if node.target in params:
        owner, _, attr = node.target.rpartition(".")
        return ParamRef(node.target, owner, attr, tuple(value.shape))
    return value


def _load(arg: Any, env: dict[Any, Any]) -> Any:
    import torch.fx

    return torch.fx.node.map_arg(arg, lambda n: env[n]) if not isinstance(arg, tuple) \
        else tuple(_load(a, env) for a in arg)


def _tensors(args: Any) -> list[Any]:
    """The Values and ParamRefs anywhere in (nested) arguments."""
    if isinstance(args, Value | ParamRef):
        return [args]
    if isinstance(args, list | tuple):
        return [t for a in args for t in _tensors(a)]
    if isinstance(args, dict):
        return [t for a in args.values() for t in _tensors(a)]
    return []


def _call(ctx: Context, node: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """One call node: static (no input tensor: its concrete value) or through its rule."""
    found = _tensors((args, kwargs))
    if not found:
        return node.meta["value"]
    if node.op == "call_module":
        module = ctx.root.get_submodule(node.target)
        rule = find_module_rule(module)
        if rule is None:
            raise TwinError(f"cannot twin node {node.name}: no rule for {describe(node)}")
        if len(args) != 1 or kwargs or not isinstance(args[0], Value):
            raise TwinError(f"cannot twin node {node.name}: {describe(node)} takes one tensor")
        return _guarded(ctx, node, lambda: rule(ctx, module, args[0]))
    if isinstance(node.target, type) and issubclass(node.target, tuple):
        return (*args, *kwargs.values())  # a named tuple of outputs (InceptionOutputs)
    name = op_name(node)
    rule = find_op_rule(name)
    if rule is None:
        raise TwinError(f"cannot twin node {node.name}: no rule for {describe(node)}")
    if not any(isinstance(t, Value) for t in found) and name not in PARAM_OPS:
        raise TwinError(f"cannot twin node {node.name}: {describe(node)} on the parameter "
                        f"{found[0].key} alone has no rule")
    return _guarded(ctx, node, lambda: rule(ctx, Args(args, kwargs)))


def _guarded(ctx: Context, node: Any, fn: Any) -> Any:
    """Run a rule; a use its rule does not cover (arguments of an unexpected kind) is a
    one-line error naming the node."""
    try:
        return fn()
    except TwinError:
        raise
    except (AttributeError, TypeError, ValueError, IndexError, KeyError) as exc:
        raise TwinError(f"cannot twin node {node.name} ({describe(node)}): unsupported use "
                        f"({type(exc).__name__}: {exc})") from None


def _outputs(ctx: Context, result: Any) -> list[Any]:
    """The model's outputs in torch's own layout (logits first)."""
    values = _tensors(result)
    if not values or not all(isinstance(v, Value) for v in values):
        raise TwinError("the module's output is not a tensor computed from its input")
    return [identity_perm(ctx, v).keras for v in values]


def state_arrays(module: Any) -> dict[str, np.ndarray]:
    """A module's state as numpy arrays (torch layout)."""
    return {k: v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()}
