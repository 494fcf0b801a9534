"""Tensors of a generated twin and their layouts (:mod:`codenn_convert.twins.fx_build`).

A torch value ``v`` is held as a Keras tensor ``k = v.permute(perm)``: an NCHW map is NHWC
(``perm = (0, 2, 3, 1)``), and ConvNeXt's ``x.permute(0, 2, 3, 1)`` only changes the
bookkeeping (the same NHWC tensor, now ``perm = (0, 1, 2, 3)``), never the data. A transpose
is emitted only where an op needs another layout (a conv needs NHWC, a LayerNorm or Linear
its torch axis last). ``flat`` marks torch's ``flatten`` of a map kept in Keras' H,W,C
order: a Linear takes it as it is (the mapper's first-dense-after-flatten rule), anything
else gets torch's C,H,W order first.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from codenn_convert.twins.fx_trace import TwinError

NHWC = (0, 2, 3, 1)


@dataclass(frozen=True)
class Value:
    """A Keras tensor holding a torch tensor ``v`` as ``v.permute(perm)``."""

    keras: Any
    perm: tuple[int, ...]
    flat: tuple[int, int, int] | None = None  # (H, W, C) of a flatten kept in HWC order

    @property
    def rank(self) -> int:
        return len(self.perm)


@dataclass(frozen=True)
class ParamRef:
    """A parameter (or persistent buffer) of the module, by its state_dict key, seen with
    torch shape ``shape`` (a view of it keeps the key)."""

    key: str
    owner: str  # the owning module's path
    attr: str
    shape: tuple[int, ...]


@dataclass
class Context:
    """What a rule needs while the Keras graph is built: the root module, the node, unique
    layer names, and the weighted Keras layers by module path (a module called twice
    shares its layer, as it shares its weights)."""

    root: Any
    node: Any = None
    used: set[str] = field(default_factory=set)
    weighted: dict[str, Any] = field(default_factory=dict)
    #: Built weighted layers to use instead of new ones, by path (the oracle test shares the
    #: hand-written twin's); each must be of the type the rule builds.
    shared: Mapping[str, Any] | None = None

    def name(self, base: str) -> str:
        """``base``, or ``base_<k>`` if taken (a weightless module called again)."""
        name, k = base, 1
        while name in self.used:
            name, k = f"{base}_{k}", k + 1
        self.used.add(name)
        return name

    def op_name(self, suffix: str = "") -> str:
        """A name for a layer of the current node (module path, else the FX node name)."""
        node = self.node
        base = node.target if node.op == "call_module" else node.name
        return self.name(f"{base}{suffix}")

    def module_layer(self, path: str, make: Callable[[], Any]) -> Any:
        """The one Keras layer of the weighted module at ``path`` (named by it)."""
        if path not in self.weighted:
            layer = make()
            if self.shared is not None:
                given = self.shared.get(path)
                if type(given) is not type(layer):
                    raise TwinError(f"the generated layer {path} is a {type(layer).__name__}, "
                                    f"the given one a {type(given).__name__}")
                layer = given
            self.used.add(path)
            self.weighted[path] = layer
        return self.weighted[path]

    def out_shape(self) -> tuple[int, ...]:
        """The torch shape of the current node's (concrete) output."""
        return tuple(self.node.meta["value"].shape)

    def fail(self, what: str) -> TwinError:
        return TwinError(f"cannot twin node {self.node.name} ({what})")


def _layers() -> Any:
    from keras import layers

    return layers


def to_perm(ctx: Context, v: Value, perm: tuple[int, ...]) -> Value:
    """``v`` with Keras axes holding torch axes ``perm`` (a transpose if needed)."""
    v = unflatten(ctx, v)
    if v.perm == tuple(perm):
        return v
    dims = [v.perm.index(t) for t in perm]
    if dims[0] != 0:
        raise ctx.fail("a layout that moves the batch axis")
    k = _layers().Permute(tuple(dims[1:]), name=ctx.op_name(".transpose"))(v.keras)
    return Value(k, tuple(perm))


def identity_perm(ctx: Context, v: Value) -> Value:
    """``v`` in torch's own axis order."""
    return to_perm(ctx, v, tuple(range(v.rank)))


def channels_last(ctx: Context, v: Value) -> Value:
    """``v`` with its last torch axis last, in torch's order (LayerNorm, BatchNorm1d; a
    Linear takes a flatten kept in H,W,C order itself, see ``fx_modules.dense``)."""
    v = unflatten(ctx, v)
    return v if v.perm[-1] == v.rank - 1 else identity_perm(ctx, v)


def nhwc(ctx: Context, v: Value) -> Value:
    """A rank-4 torch NCHW value as an NHWC Keras tensor (convs, pools, BatchNorm)."""
    if v.rank != 4:
        raise ctx.fail(f"a spatial op on a rank-{v.rank} tensor")
    return to_perm(ctx, v, NHWC)


def unflatten(ctx: Context, v: Value) -> Value:
    """A flatten kept in H,W,C order, put in torch's C,H,W order (a Linear never needs it)."""
    if v.flat is None:
        return v
    layers = _layers()
    h, w, c = v.flat
    k = layers.Reshape((h, w, c), name=ctx.op_name(".unflatten"))(v.keras)
    k = layers.Permute((3, 1, 2), name=ctx.op_name(".chw"))(k)
    k = layers.Reshape((c * h * w,), name=ctx.op_name(".flatten_chw"))(k)
    return Value(k, (0, 1))


def broadcast_layout(array: np.ndarray, v: Value) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(shape, perm) bringing a torch array that broadcasts against ``v`` to ``v``'s
    Keras layout: left-padded to ``v``'s rank, then transposed by ``v.perm``."""
    shape = (1,) * (v.rank - np.ndim(array)) + tuple(np.shape(array))
    return shape, v.perm


def constant_like(array: np.ndarray, v: Value) -> np.ndarray:
    """A torch constant as an operand of ``v`` in ``v``'s Keras layout."""
    shape, perm = broadcast_layout(array, v)
    return np.ascontiguousarray(np.reshape(array, shape).transpose(perm))


def with_keras(v: Value, k: Any) -> Value:
    """``v``'s layout for a new Keras tensor (element-wise ops keep it)."""
    return replace(v, keras=k)


def normal_dim(dim: int, rank: int) -> int:
    return dim + rank if dim < 0 else dim
