"""codenn-convert: exact CNN checkpoint conversion between PyTorch, Keras 3 and ONNX.

The public API is imported lazily so that ``import codenn_convert`` (and ``codenn --help``)
never pulls in torch or TensorFlow.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_API = {
    "convert_checkpoint": "codenn_convert.convert",
    "export_onnx": "codenn_convert.export.onnx_export",
    "verify": "codenn_convert.verification.run",
    "list_models": "codenn_convert.registry",
    "get_model": "codenn_convert.registry",
    "get_spec": "codenn_convert.registry",
    "resolve_model": "codenn_convert.registry",
    "keras_twin_of": "codenn_convert.twins.fx_build",
}

__all__ = sorted(_API)


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'codenn_convert' has no attribute {name!r}")
