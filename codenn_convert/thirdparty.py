"""Third-party chatter (Pillow's, torch's and onnxruntime's warnings) kept off stderr.

The CLI's promise is one line on stderr for a bad input; a library's warning printed beside
it (onnxruntime's coloured C++ log lines, Pillow's DecompressionBombWarning, torch's
pickle-protocol warning) breaks it. They are silenced unless ``codenn --debug`` is given,
which shows them as they come.
"""

from __future__ import annotations

import warnings

_STATE = {"quiet": False}
#: onnxruntime log severities: 2 warning (its default), 3 error.
_ORT_WARNING, _ORT_ERROR = 2, 3


def quiet(on: bool = True) -> None:
    """Silence (or, for ``--debug``, show) third-party warnings from here on."""
    _STATE["quiet"] = on
    if on:
        warnings.filterwarnings("ignore")
    else:
        warnings.resetwarnings()


def ort_severity() -> int:
    """The ``log_severity_level`` for onnxruntime sessions (errors only when quiet)."""
    return _ORT_ERROR if _STATE["quiet"] else _ORT_WARNING


def quiet_onnxruntime(ort: object) -> None:
    """Apply :func:`ort_severity` to onnxruntime's default logger (sessions made inside
    its quantizer use that one)."""
    ort.set_default_logger_severity(ort_severity())  # type: ignore[attr-defined]
