"""The report object and its files: built once from results, written as every form, read
back (``--from-json``) and merged from CI shards."""

from __future__ import annotations

import importlib.resources
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from codenn_convert.checkpoints.atomic import atomic_output
from codenn_convert.checkpoints.targets import check_directory
from codenn_convert.report.render import html_page, json_safe, to_junit, to_markdown
from codenn_convert.verification.environment import environment
from codenn_convert.verification.results import ModelResult

SCHEMA_FILE = "report.schema.json"


#: The four report files, in the order they are written.
REPORT_FILES = ("parity.json", "parity.md", "parity.html", "junit.xml")


def build_report(results: Sequence[ModelResult]) -> dict[str, Any]:
    """The single report object every format renders."""
    return {"environment": environment(), "models": [r.to_dict() for r in results]}


def schema() -> dict[str, Any]:
    """The JSON Schema of the report object (package data)."""
    text = importlib.resources.files("codenn_convert.report").joinpath(SCHEMA_FILE).read_text()
    return json.loads(text)


def write_json(report: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """The JSON form, streamed to the file (no second copy of a large report in memory)."""
    with atomic_output(path) as tmp, tmp.open("w", encoding="utf-8") as f:
        json.dump(json_safe(report), f, indent=2, allow_nan=False)
        f.write("\n")
    return Path(path)


def write_reports(report: dict[str, Any], out_dir: str | os.PathLike[str]) -> list[Path]:
    """Write every report form under ``out_dir`` (each file atomically)."""
    out = check_directory(out_dir, "report directory")
    out.mkdir(parents=True, exist_ok=True)
    renders = {"parity.md": to_markdown, "junit.xml": to_junit}
    written = [write_json(report, out / "parity.json")]
    for name, render in renders.items():
        text = render(report)
        with atomic_output(out / name) as tmp:
            tmp.write_text(text, encoding="utf-8")
        written.append(out / name)
    template, context = html_page(report)  # streamed: a large report's page is never a str
    with atomic_output(out / "parity.html") as tmp:
        template.stream(**context).dump(str(tmp), encoding="utf-8")
    written.insert(2, out / "parity.html")
    return written
