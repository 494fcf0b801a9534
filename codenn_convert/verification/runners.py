"""Runtimes as runners: one interface, so adding a runtime is one class and one
registration (:func:`runtime`) beside it.

A runner has a ``name``, runs NCHW float32 batches to logits, and may offer a probe of its
layer outputs for localisation (:class:`codenn_convert.verification.probes.Probe`, imported
only when asked for: the runtimes do not depend on the diagnostic layer). The comparison
engine (:func:`codenn_convert.verification.engine.compare_runners`) only sees this
interface, in the manner of Polygraphy's runners and ``Comparator.run(runners, data_loader)``.

Frameworks are imported inside the runners that need them: the ONNX and golden runners
never import torch or TensorFlow, which keeps ``codenn check`` light.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from codenn_convert.errors import CheckpointError, UsageError
from codenn_convert.export.onnx_export import export_keras_model, export_torch_onnx
from codenn_convert.export.precision import convert_precision, detect_precision
from codenn_convert.twins.build import inference_view
from codenn_convert.verification.ort import onnx_input_layout, onnx_session, run_onnx

if TYPE_CHECKING:  # the diagnostic layer is imported only when a probe is asked for
    from codenn_convert.verification.matching import MappedLayer
    from codenn_convert.verification.probes import Probe

#: Runtime name prefix of a user-given ONNX file: ``onnx:<file name>``.
ONNX_FILE_PREFIX = "onnx:"


@dataclass(frozen=True)
class Twins:
    """What our runtimes are built from: both twins of ``model``, with their weights, and a
    folder for the files a runtime exports."""

    model: str
    torch_model: Any
    keras_model: Any
    input_size: tuple[int, int]
    out_dir: Path


#: Builds one of our runtimes from the twins.
RuntimeFactory = Callable[[Twins], "Runner"]
_RUNTIMES: dict[str, RuntimeFactory] = {}
#: Our runtimes by name, in registration order: each is registered beside its runner class
#: (:func:`runtime`). ``codenn verify --runtimes`` and the verifier read this table.
RUNTIMES: Mapping[str, RuntimeFactory] = MappingProxyType(_RUNTIMES)


def runtime(name: str) -> Callable[[RuntimeFactory], RuntimeFactory]:
    """Decorator: register ``name``'s factory; a name registered twice is an error."""
    def register(factory: RuntimeFactory) -> RuntimeFactory:
        if name in _RUNTIMES:
            raise ValueError(f"runtime {name!r} is already registered")
        _RUNTIMES[name] = factory
        return factory
    return register


class Runner(Protocol):
    """One runtime: ``run`` maps NCHW batches to logits; ``probe`` sees its layers."""

    name: str
    #: Label of the work :meth:`prepare` does (an export), timed on its own; None: nothing.
    prepare_label: str | None
    #: fp32, or fp16/int8 for a reduced-precision runtime (judged by lossy criteria).
    precision: str
    #: The runner a reduced-precision one was converted from (only compared with that
    #: one); None: compared with every float32 runner.
    reference: str | None

    def prepare(self) -> None: ...

    def run(self, batches: Sequence[np.ndarray]) -> list[np.ndarray]: ...

    def probe(self, layers: Sequence[MappedLayer]) -> Probe | None: ...


class TorchRunner:
    """A torch model in eval mode; ``float64`` runs a double-precision copy (the oracle)."""

    precision = "fp32"
    reference: str | None = None

    def __init__(self, model: Any, *, name: str = "torch", float64: bool = False) -> None:
        self.name, self.model, self.float64 = name, model, float64
        self.prepare_label: str | None = None

    def prepare(self) -> None:
        pass

    def run(self, batches: Sequence[np.ndarray]) -> list[np.ndarray]:
        import copy

        import torch

        # The copy lives for this call only: a float64 VGG-19 is 1.1 GB.
        model = copy.deepcopy(self.model).double() if self.float64 else self.model
        dtype = np.float64 if self.float64 else np.float32
        with torch.no_grad():
            return [model(torch.from_numpy(np.ascontiguousarray(x, dtype))).numpy()
                    for x in batches]

    def probe(self, layers: Sequence[MappedLayer]) -> Probe | None:
        from codenn_convert.verification.probes import TorchProbe

        return None if self.float64 else TorchProbe(self.model, layers)


@runtime("torch")
def _torch_runtime(twins: Twins) -> Runner:
    return TorchRunner(twins.torch_model)


class KerasRunner:
    """A Keras twin, fed NHWC (the same tensor, transposed), in inference mode."""

    precision = "fp32"
    reference: str | None = None

    def __init__(self, model: Any, *, name: str = "keras") -> None:
        self.name, self.model = name, model
        self.prepare_label: str | None = None

    def prepare(self) -> None:
        pass

    def run(self, batches: Sequence[np.ndarray]) -> list[np.ndarray]:
        view = inference_view(self.model)
        return [np.asarray(view(x.transpose(0, 2, 3, 1), training=False)) for x in batches]

    def probe(self, layers: Sequence[MappedLayer]) -> Probe | None:
        from codenn_convert.verification.probes import KerasProbe

        return KerasProbe(self.model, layers)


@runtime("keras")
def _keras_runtime(twins: Twins) -> Runner:
    return KerasRunner(twins.keras_model)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


class OnnxRunner:
    """An ONNX file in onnxruntime, NCHW or NHWC input (told apart by its input shape).

    ``export`` (our own exports) writes the file in :meth:`prepare`; a given file is opened
    and its interface checked by :meth:`check`, before any model work.
    """

    def __init__(self, path: str | os.PathLike[str], *, name: str, input_size: tuple[int, int],
                 export: Callable[[Path], Any] | None = None, precision: str | None = "fp32",
                 reference: str | None = None) -> None:
        self.path, self.name, self.input_size = Path(path), name, input_size
        self.export = export
        self.prepare_label = f"export {name}" if export is not None else None
        #: None: detected from the file's graph in :meth:`check` (a user's file).
        self.precision: str = precision or ""
        self.reference = reference
        self._session: Any = None

    def check(self) -> None:
        """Open the file and check that it takes a 4-d image of ``input_size``."""
        if not self.path.is_file():
            raise UsageError(f"ONNX file not found: {self.path}")
        try:
            self._session = onnx_session(self.path)
        except Exception as exc:  # noqa: BLE001 - ORT raises its own types for a bad file
            raise CheckpointError(f"{self.path} is not a loadable ONNX model: "
                                  f"{_first_line(exc)}") from None
        try:
            self.layout = onnx_input_layout(self._session.get_inputs()[0].shape, self.input_size)
        except UsageError as exc:
            raise UsageError(f"{self.path}: {exc}") from None
        if not self.precision:
            self.precision = detect_precision(self.path)

    def prepare(self) -> None:
        if self.export is not None:
            self.export(self.path)

    def run(self, batches: Sequence[np.ndarray]) -> list[np.ndarray]:
        if self._session is None:
            self.check()
        first = [self._session.get_outputs()[0].name]
        try:
            return [run_onnx(self._session, first, x, self.layout)[0] for x in batches]
        finally:
            self._session = None  # the probe opens its own sessions; free this one

    def probe(self, layers: Sequence[MappedLayer]) -> Probe | None:
        from codenn_convert.verification.probes import OnnxProbe

        return OnnxProbe(self.path, layers, input_size=self.input_size)


@runtime("onnx-torch")
def _onnx_torch_runtime(t: Twins) -> Runner:
    """The torch twin exported by torch's dynamo exporter."""
    return OnnxRunner(t.out_dir / f"{t.model}.torch.onnx", name="onnx-torch",
                      input_size=t.input_size, export=lambda p: export_torch_onnx(
                          t.torch_model, p, input_size=t.input_size))


@runtime("onnx-keras")
def _onnx_keras_runtime(t: Twins) -> Runner:
    """The Keras twin exported through tf2onnx."""
    return OnnxRunner(t.out_dir / f"{t.model}.keras.onnx", name="onnx-keras",
                      input_size=t.input_size,
                      export=lambda p: export_keras_model(t.keras_model, p))


class StoredRunner:
    """Outputs recorded earlier (a golden file): returned for exactly the stored inputs."""

    precision = "fp32"
    reference: str | None = None

    def __init__(self, name: str, inputs: Sequence[np.ndarray], outputs: Sequence[np.ndarray]
                 ) -> None:
        self.name, self.inputs, self.outputs = name, list(inputs), list(outputs)
        self.prepare_label: str | None = None

    def prepare(self) -> None:
        pass

    def run(self, batches: Sequence[np.ndarray]) -> list[np.ndarray]:
        found = []
        for x in batches:
            k = next((i for i, s in enumerate(self.inputs)
                      if s.shape == x.shape and np.array_equal(s, x)), None)
            if k is None:
                raise UsageError(f"{self.name}: no stored output for this input")
            found.append(self.outputs[k])
        return found

    def probe(self, layers: Sequence[MappedLayer]) -> Probe | None:
        return None


def user_onnx_runners(files: Sequence[str | os.PathLike[str]], input_size: tuple[int, int]
                      ) -> list[OnnxRunner]:
    """Runners ``onnx:<file name>`` for given ONNX files, each opened and checked now."""
    runners: dict[str, OnnxRunner] = {}
    for f in files:
        name = ONNX_FILE_PREFIX + Path(f).name
        if name in runners:
            raise UsageError(f"two ONNX files are named {Path(f).name}; their runtimes would "
                             f"share the name {name}")
        runners[name] = OnnxRunner(f, name=name, input_size=input_size, precision=None)
    for runner in runners.values():
        runner.check()
    return list(runners.values())


def lossy_runner(source: OnnxRunner, precision: str, calibration: Any = None) -> OnnxRunner:
    """``<source>-<precision>``: the source runner's float32 file converted to fp16/int8
    (:func:`codenn_convert.export.precision.convert_precision`) beside it, once the source has
    exported it; compared with its source only. int8 needs ``calibration``."""
    return OnnxRunner(
        source.path.with_suffix(f".{precision}.onnx"), name=f"{source.name}-{precision}",
        input_size=source.input_size, precision=precision, reference=source.name,
        export=lambda p: convert_precision(source.path, p, precision,  # type: ignore[arg-type]
                                           calibration))
