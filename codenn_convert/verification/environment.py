"""The environment a run happened in (versions, CPU, time), recorded in golden files and
shown in reports. Read from package metadata, so no framework is imported."""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import os
import platform
from typing import Any

_PACKAGES = ("torch", "tensorflow", "keras", "onnx", "onnxruntime", "tf2onnx", "numpy")


_DISTS = {"tensorflow": ("tensorflow-cpu", "tensorflow")}


def _version(pkg: str) -> str | None:
    for dist in _DISTS.get(pkg, (pkg,)):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def environment() -> dict[str, Any]:
    """Versions, CPU and time; read from package metadata, so no framework is imported."""
    return {
        "python": platform.python_version(),
        **{pkg: _version(pkg) for pkg in _PACKAGES},
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "time": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
