"""Layer rules: one per layer type, registered where it is defined (onnx2torch's
``@add_converter`` is the model).

A rule owns everything the toolkit knows about one layer type:

* the torch module type it matches and the Keras layer type it builds from (dotted names,
  resolved only when a model of that framework is in hand, so this module stays light);
* the weight transform both ways (``to_keras``, ``to_torch``: pure permutations/reshapes, so
  a round trip is bit-identical) and the torch keys and shapes of a layer from its Keras
  variables (``torch_shapes``, in Keras variable order: the shape check);
* torch-only buffers (``extra_keys``, BatchNorm's ``num_batches_tracked``);
* seeded realistic weights (``init``) and whether the layer keeps running statistics that
  a calibration pass sets (``running_stats``);
* whether exporters may fold the layer into the one feeding it (``folds_into_source``:
  BatchNorm after a conv), which localisation needs to find its output in a graph;
* optionally ``torch_match(module) -> bool``: a rule for a *configuration* of a torch type
  (a ``Conv2d`` whose ``groups`` equals its input channels is a depthwise conv). Such rules
  are tried before the type's plain rule. The Keras side never needs one: Keras has a layer
  type per operation (``DepthwiseConv2D``), and the mapper reads the Keras twin.

A new layer type is one decorated class::

    @layer_rule("layer_norm", torch="torch.nn.LayerNorm", keras="keras.layers.LayerNormalization")
    class LayerNormRule:
        def torch_shapes(plan): ...
        def to_keras(plan, arrays): ...
        def to_torch(plan, arrays): ...

Registering a name or a framework type twice raises (a torch type may carry several rules
that each have a ``torch_match``, plus one without); a layer with no rule is a one-line
:class:`UnknownLayerError` naming its path and type (:func:`keras_rule`, :func:`torch_rule`).
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np

from codenn_convert.errors import CheckpointError
from codenn_convert.interface import NUM_BATCHES_TRACKED

Shapes = list[tuple[str, tuple[int, ...]]]


class UnknownLayerError(CheckpointError):
    """A weighted layer whose type has no rule: the model cannot be mapped or initialised."""


@dataclass(frozen=True)
class LayerPlan:
    """One weighted Keras layer and how its variables map to torch keys."""

    name: str  # Keras layer name
    kind: str  # the rule's name (a key of RULES)
    keras_shapes: tuple[tuple[int, ...], ...]
    flatten_hwc: tuple[int, int, int] | None = None  # only for "dense_after_flatten"

    @property
    def prefix(self) -> str:
        """The torch module path: our twins name each Keras layer after it."""
        return self.name

    def key(self, suffix: str) -> str:
        """The torch key of one of the layer's tensors (``suffix`` "" names the layer's
        own path: a bare parameter, see the ``parameter`` rule)."""
        return f"{self.prefix}.{suffix}" if suffix else self.prefix


@dataclass(frozen=True)
class LayerRule:
    """How one layer type maps between the twins (see the module docstring)."""

    name: str
    torch_type: str | None
    keras_type: str | None
    torch_shapes: Callable[[LayerPlan], Shapes]
    to_keras: Callable[[LayerPlan, list[np.ndarray]], list[np.ndarray]]
    to_torch: Callable[[LayerPlan, list[np.ndarray]], list[np.ndarray]]
    extra_keys: tuple[str, ...] = ()
    init: Callable[[Any, Any], None] | None = None
    running_stats: bool = False
    folds_into_source: bool = False
    #: The rule a layer of this type takes when a Flatten of a spatial map feeds it.
    after_flatten: str | None = None
    #: For a rule that covers only some configurations of ``torch_type`` (see module doc).
    torch_match: Callable[[Any], bool] | None = None


_RULES: dict[str, LayerRule] = {}
#: Every registered rule by name (read-only view).
RULES: Mapping[str, LayerRule] = MappingProxyType(_RULES)
_BY_CLASS: dict[str, dict[type, LayerRule]] = {}


def layer_rule(name: str, *, torch: str | None, keras: str | None, extra_keys: tuple[str, ...] = (),
               running_stats: bool = False, folds_into_source: bool = False,
               after_flatten: str | None = None) -> Callable[[type], type]:
    """Class decorator: register the rule ``name`` whose functions the class defines
    (``torch_shapes``, ``to_keras``, ``to_torch``, optionally ``init``)."""

    def register(cls: type) -> type:
        body = vars(cls)
        rule = LayerRule(name, torch, keras, body["torch_shapes"], body["to_keras"],
                         body["to_torch"], extra_keys, body.get("init"), running_stats,
                         folds_into_source, after_flatten, body.get("torch_match"))
        _register(rule)
        return cls

    return register


def _register(rule: LayerRule) -> None:
    if rule.name in _RULES:
        raise ValueError(f"layer rule {rule.name!r} is already registered")
    for attr in ("torch_type", "keras_type"):
        ref = getattr(rule, attr)
        # A torch rule for one configuration (torch_match) shares its type with the others.
        other = next((r.name for r in _RULES.values() if ref and getattr(r, attr) == ref
                      and not (attr == "torch_type" and (rule.torch_match or r.torch_match))),
                     None)
        if other is not None:
            raise ValueError(f"{ref} already has the layer rule {other!r}; cannot add "
                             f"{rule.name!r}")
    _RULES[rule.name] = rule
    _BY_CLASS.clear()  # rebuilt on the next lookup


def _resolve(ref: str) -> type | None:
    module, _, attr = ref.rpartition(".")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError):
        return None


def _by_class(framework: str) -> dict[type, list[LayerRule]]:
    """Framework class -> its rules, those with a ``torch_match`` first."""
    if framework not in _BY_CLASS:
        table: dict[type, list[LayerRule]] = {}
        for rule in sorted(_RULES.values(), key=lambda r: r.torch_match is None):
            ref = rule.torch_type if framework == "torch" else rule.keras_type
            cls = _resolve(ref) if ref else None
            if cls is not None:
                table.setdefault(cls, []).append(rule)
        _BY_CLASS[framework] = table
    return _BY_CLASS[framework]


def _lookup(obj: Any, framework: str) -> LayerRule | None:
    """The rule of ``obj``'s class or, for a subclass, of its nearest registered base; of a
    class's rules the first whose ``torch_match`` accepts ``obj`` (or that has none)."""
    table = _by_class(framework)
    for cls in type(obj).__mro__:
        for rule in table.get(cls, ()):
            if framework != "torch" or rule.torch_match is None or rule.torch_match(obj):
                return rule
    return None


def _unknown(path: str, obj: Any, framework: str) -> UnknownLayerError:
    cls = type(obj).__name__
    return UnknownLayerError(
        f"no weight-mapping rule for {framework} layer {path!r} of type {cls}; known rules: "
        f"{', '.join(_RULES)} (a new layer type needs a @layer_rule)")


def keras_rule(layer: Any, *, required: bool = True) -> LayerRule | None:
    """The rule of a Keras layer; an :class:`UnknownLayerError` if it has none (``required``)."""
    rule = _lookup(layer, "keras")
    if rule is None and required:
        raise _unknown(layer.name, layer, "Keras")
    return rule


def torch_rule(path: str, module: Any, *, required: bool = True) -> LayerRule | None:
    """The rule of a torch module at ``path``; an :class:`UnknownLayerError` if it has none."""
    rule = _lookup(module, "torch")
    if rule is None and required:
        raise _unknown(path, module, "torch")
    return rule


# --------------------------------------------------------------------------- the rules


def _he_init(module: Any, gen: Any) -> None:
    """He-scaled weights (std = sqrt(2 / fan_in)), small but non-zero biases."""
    fan_in = module.weight[0].numel()
    module.weight.normal_(0.0, math.sqrt(2.0 / fan_in), generator=gen)
    if module.bias is not None:
        module.bias.normal_(0.0, 0.05, generator=gen)


def _kernel_and_bias(torch_kernel: tuple[int, ...], p: LayerPlan) -> Shapes:
    out: Shapes = [("weight", torch_kernel)]
    return out + [("bias", p.keras_shapes[1])] if len(p.keras_shapes) > 1 else out


@layer_rule("conv", torch="torch.nn.Conv2d", keras="keras.layers.Conv2D")
class ConvRule:
    """Conv2d weight ``(O, I, kH, kW)`` <-> Conv2D kernel ``(kH, kW, I, O)``; bias as-is."""

    def torch_shapes(p: LayerPlan) -> Shapes:
        kh, kw, i, o = p.keras_shapes[0]
        return _kernel_and_bias((o, i, kh, kw), p)

    def to_keras(p: LayerPlan, ws: list[np.ndarray]) -> list[np.ndarray]:
        return [np.ascontiguousarray(ws[0].transpose(2, 3, 1, 0)), *ws[1:]]  # OIHW -> HWIO

    def to_torch(p: LayerPlan, ws: list[np.ndarray]) -> list[np.ndarray]:
        return [np.ascontiguousarray(ws[0].transpose(3, 2, 0, 1)), *ws[1:]]  # HWIO -> OIHW

    init = _he_init


@layer_rule("depthwise_conv", torch="torch.nn.Conv2d", keras="keras.layers.DepthwiseConv2D")
class DepthwiseConvRule:
    """A depthwise ``Conv2d`` (``groups == in_channels``, ``out_channels = C * m``): weight
    ``(C*m, 1, kH, kW)`` <-> DepthwiseConv2D kernel ``(kH, kW, C, m)``; bias ``(C*m,)`` as-is.

    Output channel ``c*m + j`` is filter ``j`` of input channel ``c`` in both frameworks
    (torch's groups take contiguous output blocks; TF's depthwise conv writes
    ``out[..., c*m + j]``), so the map is a reshape and a transpose. Which layers are
    depthwise comes from the twins (Keras layer type, torch ``groups``), never from shapes:
    at ``C = 1`` a depthwise kernel has a conv's shape.
    """

    def torch_match(module: Any) -> bool:
        return int(module.groups) > 1 and module.groups == module.in_channels

    def torch_shapes(p: LayerPlan) -> Shapes:
        kh, kw, c, m = p.keras_shapes[0]
        return _kernel_and_bias((c * m, 1, kh, kw), p)

    def to_keras(p: LayerPlan, ws: list[np.ndarray]) -> list[np.ndarray]:
        kh, kw, c, m = p.keras_shapes[0]
        kernel = ws[0].reshape(c, m, kh, kw).transpose(2, 3, 0, 1)  # (C*m,1,kh,kw)->(kh,kw,C,m)
        return [np.ascontiguousarray(kernel), *ws[1:]]

    def to_torch(p: LayerPlan, ws: list[np.ndarray]) -> list[np.ndarray]:
        kh, kw, c, m = ws[0].shape
        weight = ws[0].transpose(2, 3, 0, 1).reshape(c * m, 1, kh, kw)
        return [np.ascontiguousarray(weight), *ws[1:]]

    init = _he_init  # fan_in = kh * kw: one input channel per filter


@layer_rule("grouped_conv", torch="torch.nn.Conv2d",
            keras="codenn_convert.twins.fx_layers.GroupedConv2D")
class GroupedConvRule:
    """A grouped, not depthwise ``Conv2d`` (``1 < groups < in_channels``): weight
    ``(O, I/g, kH, kW)`` <-> g kernels ``(kH, kW, I/g, O/g)`` (group i takes output rows
    ``i*O/g ...``, as torch's groups do) and the bias ``(O,)`` as-is."""

    def torch_match(module: Any) -> bool:
        return 1 < int(module.groups) < int(module.in_channels)

    def torch_shapes(p: LayerPlan) -> Shapes:
        g = sum(len(s) == 4 for s in p.keras_shapes)
        kh, kw, i, o = p.keras_shapes[0]
        out: Shapes = [("weight", (o * g, i, kh, kw))]
        return out + [("bias", p.keras_shapes[g])] if len(p.keras_shapes) > g else out

    def to_keras(p: LayerPlan, ws: list[np.ndarray]) -> list[np.ndarray]:
        g = sum(len(s) == 4 for s in p.keras_shapes)
        blocks = np.split(ws[0], g, axis=0)
        return [np.ascontiguousarray(b.transpose(2, 3, 1, 0)) for b in blocks] + ws[1:]

    def to_torch(p: LayerPlan, ws: list[np.ndarray]) -> list[np.ndarray]:
        g = sum(np.ndim(w) == 4 for w in ws)
        weight = np.concatenate([w.transpose(3, 2, 0, 1) for w in ws[:g]], axis=0)
        return [np.ascontiguousarray(weight), *ws[g:]]

    init = _he_init


@layer_rule("parameter", torch=None, keras="codenn_convert.twins.fx_layers.TorchParameter")
class ParameterRule:
    """A bare parameter an op uses (``x * self.gamma``) in a generated twin: the Keras layer
    is named by the parameter's own path and keeps torch's shape, so the map is the
    identity."""

    def torch_shapes(p: LayerPlan) -> Shapes:
        return [("", p.keras_shapes[0])]

    def to_keras(p: LayerPlan, ws: list[np.ndarray]) -> list[np.ndarray]:
        return [np.ascontiguousarray(w) for w in ws]

    to_torch = to_keras


@layer_rule("dense", torch="torch.nn.Linear", keras="keras.layers.Dense",
            after_flatten="dense_after_flatten")
class DenseRule:
    """Linear weight ``(out, in)`` <-> Dense kernel ``(in, out)``: a transpose."""

    def torch_shapes(p: LayerPlan) -> Shapes:
        i, o = p.keras_shapes[0]
        return _kernel_and_bias((o, i), p)

    def to_keras(p: LayerPlan, ws: list[np.ndarray]) -> list[np.ndarray]:
        return [np.ascontiguousarray(ws[0].T), *ws[1:]]

    def to_torch(p: LayerPlan, ws: list[np.ndarray]) -> list[np.ndarray]:
        return [np.ascontiguousarray(ws[0].T), *ws[1:]]

    init = _he_init


@layer_rule("dense_after_flatten", torch=None, keras=None)
class DenseAfterFlattenRule:
    """The first Dense after a Flatten of an H,W,C map: torch flattens C,H,W, Keras H,W,C,
    so the kernel's rows are reordered (chosen by the mapper, see ``after_flatten``)."""

    torch_shapes = DenseRule.torch_shapes

    def to_keras(p: LayerPlan, ws: list[np.ndarray]) -> list[np.ndarray]:
        h, w, c = p.flatten_hwc  # type: ignore[misc]
        out = ws[0].shape[0]
        # torch columns run over (C, H, W); Keras rows over (H, W, C).
        kernel = ws[0].reshape(out, c, h, w).transpose(2, 3, 1, 0).reshape(h * w * c, out)
        return [np.ascontiguousarray(kernel), *ws[1:]]

    def to_torch(p: LayerPlan, ws: list[np.ndarray]) -> list[np.ndarray]:
        h, w, c = p.flatten_hwc  # type: ignore[misc]
        out = ws[0].shape[1]
        weight = ws[0].reshape(h, w, c, out).transpose(3, 2, 0, 1).reshape(out, c * h * w)
        return [np.ascontiguousarray(weight), *ws[1:]]


@layer_rule("batchnorm", torch="torch.nn.BatchNorm2d", keras="keras.layers.BatchNormalization",
            extra_keys=(NUM_BATCHES_TRACKED,), running_stats=True, folds_into_source=True)
class BatchNormRule:
    """gamma/beta/moving_mean/moving_variance are weight/bias/running_mean/running_var
    as-is; ``num_batches_tracked`` exists only in torch."""

    def torch_shapes(p: LayerPlan) -> Shapes:
        names = ("weight", "bias", "running_mean", "running_var")
        return list(zip(names, p.keras_shapes, strict=True))

    def to_keras(p: LayerPlan, ws: list[np.ndarray]) -> list[np.ndarray]:
        return list(ws)

    to_torch = to_keras

    def init(module: Any, gen: Any) -> None:
        """gamma in [0.5, 1.5], beta ~ N(0, 0.2); running statistics are calibrated."""
        module.weight.uniform_(0.5, 1.5, generator=gen)
        module.bias.normal_(0.0, 0.2, generator=gen)


@layer_rule("layer_norm", torch="torch.nn.LayerNorm", keras="keras.layers.LayerNormalization")
class LayerNormRule:
    """LayerNorm over channels: weight/bias <-> gamma/beta as-is, shape ``(C,)``. Covers
    ``nn.LayerNorm`` on a channels-last tensor and torchvision's channels-first
    ``LayerNorm2d`` (a subclass) alike: on the Keras side both are
    ``LayerNormalization(axis=-1)`` on NHWC."""

    def torch_shapes(p: LayerPlan) -> Shapes:
        return list(zip(("weight", "bias"), p.keras_shapes, strict=False))

    def to_keras(p: LayerPlan, ws: list[np.ndarray]) -> list[np.ndarray]:
        return list(ws)

    to_torch = to_keras

    def init(module: Any, gen: Any) -> None:
        """gamma in [0.5, 1.5], beta ~ N(0, 0.2), as a trained norm's are far from 1/0."""
        if module.weight is not None:
            module.weight.uniform_(0.5, 1.5, generator=gen)
        if module.bias is not None:
            module.bias.normal_(0.0, 0.2, generator=gen)


@layer_rule("layer_scale", torch="codenn_convert.models.common.torch_layers.ScaledResidual",
            keras="codenn_convert.models.common.keras_layers.ScaledResidual")
class LayerScaleRule:
    """A block's layer scale: torch ``<block>.layer_scale`` ``(C, 1, 1)`` <-> the Keras
    ``ScaledResidual`` weight ``(C,)``, a reshape."""

    def torch_shapes(p: LayerPlan) -> Shapes:
        (c,) = p.keras_shapes[0]
        return [("layer_scale", (c, 1, 1))]

    def to_keras(p: LayerPlan, ws: list[np.ndarray]) -> list[np.ndarray]:
        return [np.ascontiguousarray(ws[0].reshape(-1))]

    def to_torch(p: LayerPlan, ws: list[np.ndarray]) -> list[np.ndarray]:
        return [np.ascontiguousarray(ws[0].reshape(-1, 1, 1))]

    def init(module: Any, gen: Any) -> None:
        """Trained ConvNeXt scales start at 1e-6 and end mostly in (0, 1); U(0.05, 0.5)
        keeps every block's branch visible without letting 36 blocks blow up."""
        module.layer_scale.uniform_(0.05, 0.5, generator=gen)


@layer_rule("normalization", torch="codenn_convert.models.common.torch_layers.KerasNormalization",
            keras="keras.layers.Normalization")
class NormalizationRule:
    """Keras' in-model ``Normalization``: mean, variance ``(C,)`` and the int ``count``
    (weights in Keras files) <-> the torch module's buffers of the same names, as-is."""

    def torch_shapes(p: LayerPlan) -> Shapes:
        return list(zip(("mean", "variance", "count"), p.keras_shapes, strict=True))

    def to_keras(p: LayerPlan, ws: list[np.ndarray]) -> list[np.ndarray]:
        return list(ws)

    def to_torch(p: LayerPlan, ws: list[np.ndarray]) -> list[np.ndarray]:
        return [*ws[:2], np.asarray(ws[2], dtype=np.int64)]  # Keras may hold count as int32

    def init(module: Any, gen: Any) -> None:
        """Statistics of the seeded inputs after keras.applications' ``Rescaling(1/255)``:
        the verifier feeds N(0, 1) batches, which then have mean ~0 and variance ~255^-2.
        (ImageNet's pixel statistics would squash those inputs to a near-constant map.)"""
        module.mean.uniform_(-0.1 / 255, 0.1 / 255, generator=gen)
        module.variance.uniform_(0.8 / 255**2, 1.2 / 255**2, generator=gen)
        module.count.fill_(1_281_167)
