"""ONNX export of both twins with one interface.

Both files take ``input`` (float32, NCHW ``[N, 3, H, W]``, dynamic ``N``) and give ``logits``
(``[N, classes]``), so they are drop-in replacements for each other.

* torch: ``torch.onnx.export(..., dynamo=True)`` (needs onnxscript).
* Keras: tf2onnx through :mod:`codenn_convert.onnx_keras`, which converts a weight-free graph
  and binds the weights afterwards, so memory follows the graph rather than the weights.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from codenn_convert.checkpoint import atomic_output
from codenn_convert.errors import UsageError
from codenn_convert.interface import DEFAULT_OPSET, INPUT_NAME, OUTPUT_NAME
from codenn_convert.registry import Framework

__all__ = ["DEFAULT_OPSET", "INPUT_NAME", "OUTPUT_NAME", "export_keras_model", "export_onnx",
           "export_torch_onnx"]


def export_torch_onnx(
    model: Any, path: str | os.PathLike[str], *, input_size: tuple[int, int],
    opset: int = DEFAULT_OPSET,
) -> Path:
    """Export a torch twin (eval mode) with the dynamo exporter and a dynamic batch."""
    import logging

    import onnx
    import torch

    # The exporter logs a warning per missing torchvision op; we never use torchvision.
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    model = model.eval()
    # Batch 2 in the example: torch.export specialises a dimension traced with size 1.
    example = torch.zeros(2, 3, *input_size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model, (example,), dynamo=True, input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME], dynamic_shapes=({0: torch.export.Dim("batch")},),
            opset_version=opset, verbose=False,
        )
    path = Path(path)
    with atomic_output(path) as tmp:
        program.save(str(tmp))
        onnx.checker.check_model(str(tmp))
    return path


def export_keras_model(
    model: Any, path: str | os.PathLike[str], *, opset: int = DEFAULT_OPSET
) -> Path:
    """Export a Keras twin through tf2onnx (low-memory path)."""
    from codenn_convert.onnx_keras import export_keras_onnx

    return export_keras_onnx(model, path, opset=opset)


def export_onnx(
    model: str,
    framework: Framework,
    output: str | os.PathLike[str],
    *,
    weights: str | os.PathLike[str] | None = None,
    input_size: tuple[int, int] | None = None,
    opset: int = DEFAULT_OPSET,
    seed: int = 0,
    options: Mapping[str, Any] | None = None,
    allow_nonfinite: bool = False,
) -> Path:
    """Export the ``framework`` twin of ``model`` to ``output``.

    ``weights`` may be a torch- or Keras-layout checkpoint; without it the seeded realistic
    random weights are used. ``options`` go to the twin builders (e.g. InceptionV3's
    ``transform_input``). Weights with NaN/Inf values are refused unless ``allow_nonfinite``.
    """
    from codenn_convert import twins
    from codenn_convert.checkpoint import ensure_writable, refuse_nonfinite
    from codenn_convert.init import realistic_state
    from codenn_convert.sources import read_source

    size = twins.default_input_size(model, input_size)
    if framework not in ("torch", "keras"):
        raise UsageError(f"unknown framework {framework!r}; use torch or keras")
    if not str(output).endswith(".onnx"):
        raise UsageError(f"output must be an .onnx file, got {output}")
    ensure_writable(output)
    opts = dict(options or {})
    # A checkpoint may determine options (num_classes, aux_logits): read it before building.
    source = read_source(model, weights, opts) if weights is not None else None
    opts = source.options if source is not None else opts
    keras_model = twins.get_model(model, "keras", input_size=size, **opts) if (
        framework == "keras" or source is not None) else None
    state = (
        twins.state_from_source(model, source, keras_model)
        if source is not None else realistic_state(model, seed, **opts)
    )
    if weights is not None and not allow_nonfinite:
        refuse_nonfinite(state, weights)
    if framework == "torch":
        return export_torch_onnx(
            twins.torch_twin(model, state, **opts), output, input_size=size, opset=opset
        )
    twins.set_torch_state(keras_model, state, model)
    return export_keras_model(keras_model, output, opset=opset)
