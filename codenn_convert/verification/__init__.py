"""Parity verification: runners on shared inputs, every pair compared, faults localised.

Each part lives in the module of its job: :mod:`.options` (what to verify), :mod:`.run` (the
orchestration: twins, runners, golden file), :mod:`.engine` (running and comparing),
:mod:`.results` (the result model), :mod:`.metrics` and :mod:`.lossy` (the numbers),
:mod:`.runners`, :mod:`.inputs`, :mod:`.localise` (the first divergent layer),
:mod:`.golden` (record and replay).

The verifier's public names are importable from here too. They are resolved on first use
(PEP 562), so importing one module of this package never imports the others.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "compare_runners": "engine", "pair_order": "engine",
    "NORMAL_INPUTS": "inputs", "seeded_batch": "inputs",
    "LayerError": "layers",
    "compare": "metrics",
    "RUNTIMES": "options", "VerifyOptions": "options",
    "ModelResult": "results", "PairResult": "results",
    "verify": "run", "verify_inputs": "run", "verify_many": "run",
    "ONNX_FILE_PREFIX": "runners",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
