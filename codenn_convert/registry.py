"""Model registry: one entry per model name, holding both twin builders and their metadata.

Builders are referenced as ``"module:function"`` strings and imported on demand, so that
listing models (``codenn list``) never imports torch or TensorFlow.
"""

from __future__ import annotations

import importlib
import inspect
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Literal

from codenn_convert.errors import UsageError

Framework = Literal["torch", "keras"]
FRAMEWORKS: tuple[Framework, ...] = ("torch", "keras")


@dataclass(frozen=True)
class ModelSpec:
    """Everything the CLI, tests and reports need to know about one model.

    ``torch_builder`` / ``keras_builder`` are ``"module:function"`` references. The Keras
    builder takes ``input_size=(H, W)`` because Keras models are built for a fixed spatial size.
    ``init_hooks`` name ``(torch_model, generator) -> None`` functions, applied in order, that
    adjust the generic realistic initialisation (e.g. small gamma on residual branches).
    ``keras_filter`` optionally names a ``(keras weights) -> keras weights | None`` function
    that renames a foreign Keras file's layers (e.g. keras.applications') to the twin's, or
    returns None when the names are not the ones it knows. ``torch_filters`` name the
    family's own ``(state, FilterContext) -> state`` steps for torch files, run after the
    common ones of :mod:`codenn_convert.checkpoints.filters` (wrapper prefixes).
    """

    name: str
    family: str
    torch_builder: str
    keras_builder: str
    input_size: tuple[int, int]
    min_input_size: tuple[int, int]
    num_params: int
    default: bool = False
    rtol: float = 1e-5
    builder_kwargs: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    init_hooks: tuple[str, ...] = ()
    keras_filter: str | None = None
    torch_filters: tuple[str, ...] = ()
    #: Modules with parameters of their own but no layer rule keep their own initialisation
    #: in the seeded weights (a user's model: a bare layer-scale parameter), not an error.
    free_parameters: bool = False

    def builder(self, framework: Framework) -> Callable[..., Any]:
        """Import and return the builder function for ``framework``."""
        if framework not in FRAMEWORKS:
            raise UsageError(f"unknown framework {framework!r}; expected one of {FRAMEWORKS}")
        return _resolve(self.torch_builder if framework == "torch" else self.keras_builder)

    def check_input_size(self, input_size: tuple[int, int], batch: int = 2) -> None:
        """Refuse inputs the network cannot process, or whose activations cannot fit in
        this machine's memory, before anything is built."""
        h, w = input_size
        mh, mw = self.min_input_size
        if h < mh or w < mw:
            raise UsageError(
                f"input size {h}x{w} is too small for {self.name}: the minimum is {mh}x{mw}"
            )
        need, have = activation_bytes(input_size, batch), _memory_bytes()
        if have and need > have:
            raise UsageError(
                f"input size {h}x{w} at batch {batch} needs about {need / 2**30:,.0f} GiB of "
                f"activations ({ACTIVATION_FLOATS_PER_PIXEL} float32 per input pixel, the "
                f"widest layers of these CNNs), more than this machine's {have / 2**30:.0f} "
                f"GiB of memory")


#: float32 values alive per input pixel in the widest layers: VGG's first block holds two
#: 64-channel full-resolution maps at once; ResNet and InceptionV3 hold fewer. A lower bound,
#: used only to refuse sizes that cannot possibly fit (``--input-size 100000 100000``).
ACTIVATION_FLOATS_PER_PIXEL = 128


def activation_bytes(input_size: tuple[int, int], batch: int) -> int:
    """A lower bound on the activation memory of one forward pass."""
    return batch * input_size[0] * input_size[1] * ACTIVATION_FLOATS_PER_PIXEL * 4


def _memory_bytes() -> int:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 0


_REGISTRY: dict[str, ModelSpec] = {}
_LOADED = False


def _resolve(ref: str) -> Callable[..., Any]:
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


def register_model(spec: ModelSpec) -> ModelSpec:
    """Add ``spec`` to the registry. Registering a name twice is a programming error."""
    if spec.name in _REGISTRY:
        raise ValueError(f"model {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def _ensure_loaded() -> None:
    # Importing the ``models`` package runs each family's registrations (light modules only).
    global _LOADED
    if not _LOADED:
        importlib.import_module("codenn_convert.models")
        _LOADED = True
    if not _REGISTRY:
        # Never a silent state: an empty registry would make every model "unknown".
        raise RuntimeError("no models are registered: the codenn_convert.models package "
                           "registered nothing (a broken installation?)")


def list_models(*, default_only: bool = False) -> list[str]:
    """Registered model names, in registration order."""
    _ensure_loaded()
    return [n for n, s in _REGISTRY.items() if s.default or not default_only]


def get_spec(name: str) -> ModelSpec:
    """The spec for ``name`` (a registered model, a user model resolved by
    :func:`resolve_model`, or a ``file.py:function`` reference, resolved now); a clear error
    naming the known models otherwise."""
    _ensure_loaded()
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name in _USER:
        return _USER[name]
    if is_model_reference(name):
        return _USER[resolve_model(name)]
    known = ", ".join(_REGISTRY)
    raise UsageError(f"unknown model {name!r}; known models: {known} (or your own torch "
                     "model as path/to/file.py:function or package.module:function)")


# ---------------------------------------------------------------- the user's own models

#: The Keras builder of every user model: the twin generated from the module's graph.
GENERATED_TWIN = "codenn_convert.twins.fx_build:keras_twin_of"
#: Input size of a user model when none is given (``--input-size``).
USER_INPUT_SIZE = (224, 224)
_USER: dict[str, ModelSpec] = {}
_USER_FUNCTIONS: dict[str, Callable[..., Any]] = {}


def is_model_reference(text: str) -> bool:
    """True for ``path/to/file.py:function`` and ``package.module:function``."""
    where, sep, fn = text.rpartition(":")
    return bool(sep and where and fn.isidentifier())


@dataclass(frozen=True)
class UserModelSpec(ModelSpec):
    """A user's own torch model: ``torch_builder`` is the reference (``file.py:function``
    or ``package.module:function``) of a function returning an ``nn.Module``; the Keras twin
    is generated from its graph (:data:`GENERATED_TWIN`). Importing it runs the user's code.
    The minimum input size is what the module itself accepts (a smaller one fails to trace,
    with the model's own error)."""

    def builder(self, framework: Framework) -> Callable[..., Any]:
        if framework not in FRAMEWORKS:
            raise UsageError(f"unknown framework {framework!r}; expected one of {FRAMEWORKS}")
        fn = _user_function(self.torch_builder)
        return _checked_module(fn, self.torch_builder) if framework == "torch" \
            else _generated_builder(fn, self.torch_builder, self.name)


def resolve_model(text: str, input_size: tuple[int, int] | None = None) -> str:
    """The model name to use for ``text``: a registered name as is; a
    ``file.py:function`` / ``package.module:function`` reference is imported (running the
    user's code) and registered as a user model under its function's name (``user_`` in
    front if a registered model has it), which is returned. ``input_size`` is a user
    model's default size (224x224 if None): its twin is built, and its seeded weights
    calibrated, at that size."""
    _ensure_loaded()
    if text in _REGISTRY or not is_model_reference(text):
        return text
    size = tuple(input_size) if input_size else USER_INPUT_SIZE
    for name, spec in _USER.items():
        if spec.torch_builder == text:
            _USER[name] = replace(spec, input_size=size)
            return name
    _user_function(text)  # a missing file or function is a usage error now
    base = text.rpartition(":")[2]
    name = f"user_{base}" if base in _REGISTRY else base
    k = 2
    while name in _USER:
        name, k = f"{base}_{k}", k + 1
    _USER[name] = UserModelSpec(name=name, family="user", torch_builder=text,
                                keras_builder=GENERATED_TWIN, input_size=size,  # type: ignore[arg-type]
                                min_input_size=(1, 1), num_params=0, free_parameters=True)
    return name


def _user_function(ref: str) -> Callable[..., Any]:
    """Import the function of ``ref`` (a file by path, or a module by name): user code."""
    if ref in _USER_FUNCTIONS:
        return _USER_FUNCTIONS[ref]
    where, _, fn_name = ref.rpartition(":")
    try:
        if where.endswith(".py") or os.sep in where or "/" in where:
            module = _import_file(where)
        else:
            module = importlib.import_module(where)
    except UsageError:
        raise
    except Exception as exc:  # the user's code, whatever it raises
        raise UsageError(f"importing {where} failed: {type(exc).__name__}: {exc}") from None
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise UsageError(f"{where} has no function {fn_name!r}")
    _USER_FUNCTIONS[ref] = fn
    return fn


def _import_file(path: str) -> Any:
    import hashlib
    import importlib.util
    import sys

    if not os.path.isfile(path):
        raise UsageError(f"no such model file: {path}")
    full = os.path.abspath(path)
    name = "codenn_user_" + hashlib.sha1(full.encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(name, full)
    if spec is None or spec.loader is None:
        raise UsageError(f"cannot import {path} as a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look the module up by name
    spec.loader.exec_module(module)
    return module


def _checked_module(fn: Callable[..., Any], ref: str) -> Callable[..., Any]:
    """``fn``, checked to return an ``nn.Module`` (same signature, for option checks)."""

    def build(**options: Any) -> Any:
        import torch

        module = fn(**options)
        if not isinstance(module, torch.nn.Module):
            raise UsageError(f"{ref} returned {type(module).__name__}, not a torch nn.Module")
        return module

    build.__signature__ = inspect.signature(fn)  # type: ignore[attr-defined]
    return build


def _generated_builder(fn: Callable[..., Any], ref: str, name: str) -> Callable[..., Any]:
    """A Keras builder ``(input_size, **options)``: the twin generated from ``fn``'s module."""
    module_of = _checked_module(fn, ref)

    def build(input_size: tuple[int, int] | None = None, **options: Any) -> Any:
        twin = _resolve(GENERATED_TWIN)
        return twin(module_of(**options), tuple(input_size or USER_INPUT_SIZE),
                    weights=False, name=name)

    params = list(inspect.signature(fn).parameters.values())
    build.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter("input_size", inspect.Parameter.KEYWORD_ONLY, default=None),
         *[p if p.kind == p.VAR_KEYWORD else p.replace(kind=p.KEYWORD_ONLY)
           for p in params if p.kind != p.VAR_POSITIONAL]])
    return build


def _option_value(text: str) -> bool | int | float | str:
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_options_text(items: Sequence[str]) -> dict[str, Any]:
    """``KEY=VALUE`` items as a dict of typed values, not yet checked against a model."""
    options: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"option {item!r} is not KEY=VALUE")
        options[key.strip().replace("-", "_")] = _option_value(value.strip())
    return options


def check_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` if both of ``name``'s builders accept them and the variant does not fix
    them otherwise; a one-line error if not."""
    spec = get_spec(name)
    if options:
        accepted = set.intersection(*(
            set(inspect.signature(spec.builder(fw)).parameters) - {"input_size"}
            for fw in FRAMEWORKS))
        unknown = sorted(options.keys() - accepted)
        if unknown:
            raise UsageError(f"unknown option(s) {', '.join(unknown)} for {name}; accepted: "
                             f"{', '.join(sorted(accepted)) or 'none'}")
        # The variant's own options (e.g. keras_resnet50's bn_eps) define it.
        fixed = sorted(k for k, v in options.items()
                       if k in spec.builder_kwargs and spec.builder_kwargs[k] != v)
        if fixed:
            raise UsageError(f"option(s) {', '.join(fixed)} are fixed by the variant {name} ("
                             + ", ".join(f"{k}={spec.builder_kwargs[k]}" for k in fixed) + ")")
    return options


def parse_options(name: str, items: Sequence[str]) -> dict[str, Any]:
    """Parse ``KEY=VALUE`` builder options (e.g. ``transform_input=true``) for both twins.

    Only keywords that *both* builders accept are allowed (``input_size`` is the verifier's),
    so an option can never change one twin and silently not the other.
    """
    return check_options(name, parse_options_text(items))


def get_model(
    name: str,
    framework: Framework,
    *,
    input_size: tuple[int, int] | None = None,
    **kwargs: Any,
) -> Any:
    """Build the ``framework`` twin of ``name`` (random, untrained weights).

    ``input_size`` only matters for Keras, whose models are built for a fixed spatial size.
    """
    spec = get_spec(name)
    options = {**spec.builder_kwargs, **kwargs}
    if framework == "keras":
        size = tuple(input_size or spec.input_size)
        spec.check_input_size(size)  # type: ignore[arg-type]
        return spec.builder("keras")(input_size=size, **options)
    return spec.builder("torch")(**options)
