"""The parity-matrix workflow users copy: its models exist, and its own shell steps, run here
for one model of its matrix, verify, check the golden file and publish one report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from codenn_convert.registry import list_models
from tests.conftest import ROOT

WORKFLOW = ROOT / ".github" / "workflows" / "parity-matrix.yml"
MODEL = "resnet18"  # the cheapest model of the matrix


def _jobs() -> dict[str, Any]:
    return yaml.safe_load(WORKFLOW.read_text())["jobs"]


def _run_steps(job: str, cwd: Path) -> list[str]:
    """Each ``run:`` step of ``job`` but the installs, in bash as GitHub runs it; the names."""
    ran = []
    for step in _jobs()[job]["steps"]:
        if "run" not in step or step["name"].startswith("Install"):
            continue
        if "hashFiles" in str(step.get("if", "")):  # the golden file's step, if one exists
            assert (cwd / "golden" / f"{MODEL}.npz").is_file(), "no golden file recorded"
        cmd = step["run"].replace("${{ matrix.model }}", MODEL)
        path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
        proc = subprocess.run(["bash", "-eo", "pipefail", "-c", cmd], cwd=cwd, text=True,
                              capture_output=True, timeout=900,
                              env={**os.environ, "GITHUB_STEP_SUMMARY": str(cwd / "summary"),
                                   "GITHUB_OUTPUT": str(cwd / "output"), "PATH": path})
        assert proc.returncode == 0, f"{step['name']}: {proc.stdout[-2000:]}{proc.stderr[-2000:]}"
        ran.append(step["name"])
    return ran


def test_matrix_models_are_registered(tmp_path: Path) -> None:
    # The matrix is the list the models job writes with `codenn list --json`.
    assert _jobs()["verify"]["strategy"]["matrix"]["model"] == (
        "${{ fromJSON(needs.models.outputs.list) }}")
    assert _run_steps("models", tmp_path) == ["List the models"]
    key, _, value = (tmp_path / "output").read_text().strip().partition("=")
    models = json.loads(value)
    assert key == "list"
    assert MODEL in models and set(models) <= set(list_models())
    assert models == list_models()  # every registered model: a new family needs no edit


def test_workflow_steps_run_as_written(tmp_path: Path) -> None:
    # The steps call .venv/bin/codenn, as `make setup` leaves it.
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    (tmp_path / ".venv" / "bin" / "codenn").symlink_to(Path(sys.executable).parent / "codenn")
    assert len(_run_steps("verify", tmp_path)) == 2  # verify, then check
    assert (tmp_path / "shards" / f"{MODEL}.json").is_file()
    assert (tmp_path / "onnx" / f"{MODEL}.torch.onnx").is_file()
    _run_steps("report", tmp_path)
    summary = (tmp_path / "summary").read_text()
    assert f"| {MODEL} " in summary and "fail" not in summary.split("Environment")[0]
    assert sorted(p.name for p in (tmp_path / "reports").iterdir()) == [
        "junit.xml", "parity.html", "parity.json", "parity.md"]
