"""The ``codenn`` command line (``codenn = "codenn_convert.cli:main"``): the typer app and
its commands in :mod:`.commands`, shared options in :mod:`.options`, what it prints in
:mod:`.output`.

``app`` and ``main`` are importable from here, resolved on first use (PEP 562), so that no
module of this package imports its package's ``__init__`` back.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["app", "main"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module(f"{__name__}.commands"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
