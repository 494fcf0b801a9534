"""Trace a torch module with ``torch.fx`` for a fixed input size, running it as it goes.

A Keras twin is built for one spatial size, so shapes are constants: the tracer runs every
node on a concrete batch while it records it (``node.meta["value"]``), and ``x.shape``,
``x.size()``, ``x.dim()``, ``len(x)`` return real numbers instead of graph nodes. Code that
computes paddings from the input size (keras.applications' 'same' padding) therefore traces;
only control flow on the *data* is refused (``node.meta["dynamic"]``: the node depends on the
input's values, not just its shape).

Which modules stay leaves (one node each): torch.nn's own, as in ``torch.fx``, and modules
whose layer rule (:mod:`codenn_convert.twins.rules`) covers their ``forward``, e.g.
``KerasNormalization``. A subclass that overrides ``forward`` (a channels-first LayerNorm, a
'same'-padded conv) is traced through, and its functional calls on its own parameters are
matched to its rule by the op rules (:mod:`codenn_convert.twins.fx_ops`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from codenn_convert.errors import UsageError
from codenn_convert.twins.rules import _resolve, torch_rule

#: Tensor attributes and methods answered with numbers, never traced (shapes are constants).
SHAPE_ATTRS = frozenset({"shape", "ndim", "dtype", "device", "is_cuda"})
SHAPE_METHODS = frozenset({"size", "dim", "numel"})
#: Batch of the concrete run: 1 keeps memory low; the Keras model's batch stays dynamic.
TRACE_BATCH = 1


class TwinError(UsageError):
    """A module that cannot be twinned: names the node, its op or module type and path."""


@dataclass(frozen=True)
class Traced:
    """A traced graph, its root module and the concrete input it was run on."""

    graph: Any
    root: Any
    input_shape: tuple[int, ...]


def _fetch(root: Any, target: str) -> Any:
    obj = root
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _concrete(value: Any) -> Any:
    import torch.fx

    return torch.fx.node.map_aggregate(
        value, lambda a: a.node.meta["value"] if isinstance(a, torch.fx.Proxy) else a)


def _is_dynamic(args: Any) -> bool:
    import torch.fx

    found: list[bool] = []
    torch.fx.node.map_aggregate(args, lambda a: found.append(
        isinstance(a, torch.fx.Proxy) and a.node.meta.get("dynamic", False)))
    return any(found)


def _run(kind: str, target: Any, args: Any, kwargs: Any, root: Any) -> Any:
    """Run one node on concrete values (what torch itself computes)."""
    if kind == "call_module":
        return _fetch(root, target)(*args, **kwargs)
    if kind == "call_function":
        return target(*args, **kwargs)
    if kind == "call_method":
        return getattr(args[0], target)(*args[1:], **kwargs)
    if kind == "get_attr":
        return _fetch(root, target)
    raise TwinError(f"cannot run node kind {kind}")


def _rule_covers_forward(module: Any, path: str) -> bool:
    """True if ``module``'s layer rule is for a class whose ``forward`` it runs unchanged."""
    rule = torch_rule(path, module, required=False)
    if rule is None or rule.torch_type is None:
        return False
    base = _resolve(rule.torch_type)
    return base is not None and type(module).forward is base.forward


def _tracer_class() -> type:
    import torch
    import torch.fx
    from torch.fx._symbolic_trace import _maybe_revert_all_patches

    class ConcreteProxy(torch.fx.Proxy):
        def __getattr__(self, name: str) -> Any:
            if name in SHAPE_ATTRS:
                return getattr(self.node.meta["value"], name)
            return super().__getattr__(name)

        def __len__(self) -> int:
            return len(self.node.meta["value"])

    class ConcreteTracer(torch.fx.Tracer):
        def __init__(self, sample: Any) -> None:
            super().__init__()
            self.sample = sample

        def proxy(self, node: Any) -> Any:
            return ConcreteProxy(node, self)

        def is_leaf_module(self, m: Any, qualname: str) -> bool:
            return super().is_leaf_module(m, qualname) or (
                next(m.children(), None) is None and _rule_covers_forward(m, qualname))

        def create_proxy(self, kind: str, target: Any, args: Any, kwargs: Any,
                         name: str | None = None, type_expr: Any = None,
                         proxy_factory_fn: Any = None) -> Any:
            if kind == "placeholder":
                proxy = super().create_proxy(kind, target, args, kwargs, name, type_expr,
                                             proxy_factory_fn)
                proxy.node.meta.update(value=self.sample, dynamic=True)
                return proxy
            cargs, ckwargs = _concrete(args), _concrete(kwargs)
            # The concrete run must not be traced: torch.fx patches Module.__call__ and
            # __getattr__ while it traces, and undoing that for a moment is its own helper.
            with torch.no_grad(), _maybe_revert_all_patches():
                value = _run(kind, target, cargs, ckwargs, self.root)
            if kind == "call_method" and target in SHAPE_METHODS:
                return value  # a shape is a constant for a fixed input size
            proxy = super().create_proxy(kind, target, args, kwargs, name, type_expr,
                                         proxy_factory_fn)
            proxy.node.meta.update(value=value, dynamic=_is_dynamic((args, kwargs)),
                                   scope=(self.scope.module_path, self.scope.module_type))
            if kind == "call_module":
                proxy.node.meta["module_type"] = type(_fetch(self.root, target)).__name__
            return proxy

        def to_bool(self, obj: Any) -> bool:
            if obj.node.meta.get("dynamic"):
                raise TwinError(
                    f"data-dependent control flow at node {obj.node.name} ("
                    f"{describe(obj.node)}): torch.fx cannot trace it")
            return bool(obj.node.meta["value"])

        def iter(self, obj: Any) -> Any:
            return iter([obj[i] for i in range(len(obj.node.meta["value"]))])

    return ConcreteTracer


def describe(node: Any) -> str:
    """A node's op or module type and the module path it is in, for error messages."""
    path, kind = node.meta.get("scope", ("", None))
    if node.op == "call_module":
        return f"module {node.meta.get('module_type', '?')} at {node.target!r}"
    target = node.target
    op = target if isinstance(target, str) else getattr(target, "__name__", str(target))
    where = f"in module {path!r} ({getattr(kind, '__name__', kind)})" if path else \
        "in the top-level module"
    return f"op {op!r} {where}"


def trace(module: Any, input_size: tuple[int, int], channels: int = 3, *,
          top_training: bool = False) -> Traced:
    """Trace ``module`` (put in eval mode; only the module itself in training mode with
    ``top_training``) on a seeded ``[1, channels, H, W]`` batch."""
    import torch

    module.eval()
    module.training = top_training
    gen = torch.Generator().manual_seed(0)
    sample = torch.randn(TRACE_BATCH, channels, *input_size, generator=gen)
    tracer = _tracer_class()(sample)
    threads = torch.get_num_threads()
    # One batch-1 image per node: more threads only spin (DenseNet-169 at 29x29: 1.5 CPU-s
    # with 2 threads, 0.3 s with one).
    torch.set_num_threads(1)
    try:
        graph = tracer.trace(module)
    except TwinError:
        raise
    except torch.fx.proxy.TraceError as exc:
        raise TwinError(f"torch.fx cannot trace {type(module).__name__}: {exc}") from None
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:
        raise TwinError(f"{type(module).__name__} does not run at input size "
                        f"{input_size[0]}x{input_size[1]}: {type(exc).__name__}: {exc}"
                        ) from None
    finally:
        torch.set_num_threads(threads)
        module.eval()
    return Traced(graph, module, tuple(sample.shape))

