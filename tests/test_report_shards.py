"""``codenn report --from-json``: the report of CI shards equals the report of one run."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from codenn_convert import report as rep
from codenn_convert.verification import VerifyOptions, verify_many
from tests.conftest import run_cli

MODELS = ("alexnet", "resnet18")
ARGS = ("--input-size", "64", "64", "--runtimes", "torch,keras", "--seed", "3")


def _without_timings(models: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in m.items() if k != "seconds"} for m in models]


def _junit_cases(path: Path) -> list[tuple[str | None, str | None, bool]]:
    root = ET.parse(path).getroot()
    return [(c.get("classname"), c.get("name"), c.find("failure") is not None)
            for c in root.iter("testcase")]


def test_shards_reproduce_a_single_run(tmp_path: Path) -> None:
    shards = []
    for name in MODELS:  # one CI job per model
        shards.append(tmp_path / f"{name}.json")
        proc = run_cli("verify", name, *ARGS, "--json", str(shards[-1]))
        assert proc.returncode == 0, proc.stdout + proc.stderr
    merged = tmp_path / "merged"
    proc = run_cli("report", "--from-json", *map(str, shards), "-o", str(merged))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sorted(p.name for p in merged.iterdir()) == sorted(rep.REPORT_FILES)

    single = tmp_path / "single"
    config = VerifyOptions(input_size=(64, 64), runtimes=("torch", "keras"), seed=3)
    rep.write_reports(rep.build_report(verify_many(list(MODELS), config)), single)
    got = json.loads((merged / "parity.json").read_text())
    want = json.loads((single / "parity.json").read_text())
    assert _without_timings(got["models"]) == _without_timings(want["models"])
    assert _junit_cases(merged / "junit.xml") == _junit_cases(single / "junit.xml")
    table = [ln for ln in (merged / "parity.md").read_text().splitlines() if ln.startswith("|")]
    assert table == [ln for ln in (single / "parity.md").read_text().splitlines()
                     if ln.startswith("|")]


def test_from_json_errors(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "other.json").write_text(json.dumps({"models": [{"x": 1}]}))
    for name, needle in (("bad.json", "is not a JSON report"),
                         ("other.json", "is not a codenn report"),
                         ("missing.json", "report not found")):
        proc = run_cli("report", "--from-json", str(tmp_path / name), "-o", str(tmp_path / "o"))
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and needle in lines[0], proc.stderr
    assert not (tmp_path / "o").exists()
