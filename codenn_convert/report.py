"""Render verification results. Formatting only: nothing here runs a model.

The one report object is ``{"environment": {...}, "models": [ModelResult.to_dict(), ...]}``;
JSON and Markdown are renderings of it (see docs in README.md for the schema).
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import os
import platform
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from codenn_convert.checkpoint import atomic_output
from codenn_convert.verify import ModelResult

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


def build_report(results: Sequence[ModelResult]) -> dict[str, Any]:
    """The single report object every format renders."""
    return {"environment": environment(), "models": [r.to_dict() for r in results]}


def report_passed(report: dict[str, Any]) -> bool:
    return all(m["passed"] for m in report["models"]) and bool(report["models"])


def _fmt(v: float) -> str:
    return "inf" if v == float("inf") else f"{v:.2e}"


def to_markdown(report: dict[str, Any]) -> str:
    """A short summary, fit for a CI job summary."""
    ok = report_passed(report)
    lines = [
        f"# codenn-convert parity: {'PASS' if ok else 'FAIL'}",
        "",
        "| model | input | pair | max abs | max rel | cosine | top-1 | top-5 | status |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for m in report["models"]:
        shape = "x".join(str(d) for d in m["input_shape"])
        if m["error"]:
            lines.append(f"| {m['model']} | {shape} | - | - | - | - | - | - | ERROR: {m['error']} |")
        for p in m["pairs"]:
            status = "pass" if p["passed"] else "**FAIL**"
            if p.get("first_divergent_layer"):
                status += f" (first divergent layer: `{p['first_divergent_layer']}`)"
            lines.append(
                f"| {m['model']} | {shape} | {p['a']} vs {p['b']} | {_fmt(p['max_abs'])} | "
                f"{_fmt(p['max_rel'])} | {p['cosine']:.8f} | {p['top1']:.2f} | {p['top5']:.2f} "
                f"| {status} |"
            )
    env = report["environment"]
    lines += ["", "Tolerance: max rel <= rtol (1e-5 for float32) relative to the largest "
              "reference logit.", "",
              "Environment: " + ", ".join(f"{k} {v}" for k, v in env.items() if v is not None)]
    return "\n".join(lines) + "\n"


def write_json(report: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(report, indent=2, allow_nan=True) + "\n")
    return Path(path)


def write_reports(report: dict[str, Any], out_dir: str | os.PathLike[str]) -> list[Path]:
    """Write every report form under ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = [write_json(report, out / "parity.json")]
    with atomic_output(out / "parity.md") as tmp:
        tmp.write_text(to_markdown(report))
    written.append(out / "parity.md")
    return written


def dump(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=2)


if __name__ == "__main__":  # pragma: no cover - convenience: re-render a JSON report
    print(to_markdown(json.loads(Path(sys.argv[1]).read_text())))
