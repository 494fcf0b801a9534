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
from codenn_convert.errors import UsageError
from codenn_convert.report.render import to_html, to_json, to_junit, to_markdown
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
    with atomic_output(path) as tmp:
        tmp.write_text(to_json(report))
    return Path(path)


def write_reports(report: dict[str, Any], out_dir: str | os.PathLike[str]) -> list[Path]:
    """Write every report form under ``out_dir`` (each file atomically)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    renders = {"parity.md": to_markdown, "parity.html": to_html, "junit.xml": to_junit}
    written = [write_json(report, out / "parity.json")]
    for name, render in renders.items():
        text = render(report)
        with atomic_output(out / name) as tmp:
            tmp.write_text(text, encoding="utf-8")
        written.append(out / name)
    return written


def read_json_report(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A ``verify --json`` / ``parity.json`` file, checked to be a report; one-line errors."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"report not found: {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"{path} is not a JSON report: {str(exc)[:120]}") from None
    needed = schema()["$defs"]["model"]["required"]
    models = data.get("models") if isinstance(data, dict) else None
    if (not isinstance(models, list) or not isinstance(data.get("environment"), dict)
            or not all(isinstance(m, dict) and all(k in m for k in needed) for m in models)):
        raise UsageError(f"{path} is not a codenn report (no environment/models entries)")
    return data


def merge_reports(paths: Sequence[str | os.PathLike[str]]) -> dict[str, Any]:
    """One report from several (e.g. CI shards): their model entries in the order given,
    and one environment that hides no difference between them (:func:`merge_environments`)."""
    if not paths:
        raise UsageError("--from-json needs at least one JSON report file")
    shards = [read_json_report(p) for p in paths]
    return {"environment": merge_environments([s["environment"] for s in shards]),
            "models": [m for shard in shards for m in shard["models"]]}


def merge_environments(envs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The shards' environments as one: a value they share is kept; differing versions,
    CPUs or platforms are listed ``"2.13.0 | 2.12.0"`` (a job on another stack must show);
    ``time`` is the latest; ``shards`` counts them."""
    if len(envs) == 1:
        return dict(envs[0])
    merged: dict[str, Any] = {}
    for key in dict.fromkeys(k for env in envs for k in env):
        values = list(dict.fromkeys(json.dumps(env.get(key)) for env in envs))
        if len(values) == 1:
            merged[key] = envs[0].get(key)
        elif key == "time":
            merged[key] = max(str(env.get(key)) for env in envs)
        else:  # a count (cpu_count) too: the schema's strings hold every value
            shown = [json.loads(v) for v in values]
            merged[key] = " | ".join("not installed" if v is None else str(v) for v in shown)
    merged["shards"] = len(envs)
    return merged
