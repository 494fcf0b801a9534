"""``codenn report --from-json``: the report of CI shards equals the report of one run."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from codenn_convert import report as rep
from codenn_convert.verification import VerifyOptions, verify_many
from tests.conftest import run_cli_here

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
        proc = run_cli_here("verify", name, *ARGS, "--json", str(shards[-1]))
        assert proc.returncode == 0, proc.stdout + proc.stderr
    merged = tmp_path / "merged"
    proc = run_cli_here("report", "--from-json", *map(str, shards), "-o", str(merged))
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
        proc = run_cli_here("report", "--from-json", str(tmp_path / name), "-o",
                            str(tmp_path / "o"))
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and needle in lines[0], proc.stderr
    assert not (tmp_path / "o").exists()


def test_shards_from_different_stacks_show_it(tmp_path: Path) -> None:
    import jsonschema

    from codenn_convert.verification import ModelResult

    entries = [ModelResult(model=m, input_shape=[2, 3, 64, 64], seed=0, rtol=1e-5,
                           inputs="normal(0,1)").to_dict() for m in MODELS]
    env = rep.environment()
    other = {**env, "torch": "2.12.0", "cpu_count": 64, "time": "2099-01-01T00:00:00+00:00"}
    shards = []
    for k, (entry, e) in enumerate(zip(entries, (env, other), strict=True)):
        shards.append(tmp_path / f"{k}.json")
        shards[-1].write_text(json.dumps({"environment": e, "models": [entry]}))
    merged = rep.merge_reports(shards)
    jsonschema.validate(merged, rep.schema(), cls=jsonschema.Draft202012Validator)
    got = merged["environment"]
    assert got["torch"] == f"{env['torch']} | 2.12.0"
    assert got["cpu_count"] == f"{env['cpu_count']} | 64"
    assert got["time"] == "2099-01-01T00:00:00+00:00" and got["shards"] == 2
    assert got["numpy"] == env["numpy"]  # shared values stay as they are
    assert rep.merge_reports(shards[:1])["environment"] == env  # one file: unchanged
    proc = run_cli_here("report", "--from-json", *map(str, shards), "-o", str(tmp_path / "o"))
    md = (tmp_path / "o" / "parity.md").read_text()
    assert f"torch {env['torch']} | 2.12.0" in md and "shards 2" in md, proc.stderr
