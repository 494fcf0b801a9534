"""The four report forms are renderings of one object: JSON (checked against its schema),
Markdown, self-contained HTML (table + per-layer plots) and JUnit XML."""

from __future__ import annotations

import base64
import json
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from codenn_convert import report as rep
from codenn_convert.verification import ModelResult, PairResult
from codenn_convert.verification.layers import LayerError
from tests.conftest import run_cli_here


def _pair(a: str, b: str, max_rel: float, *, layers: int = 0, first: str | None = None,
          rtol: float = 1e-5) -> PairResult:
    errs = [LayerError(f"features.{i}", 1e-7 * (i + 1)) for i in range(layers)]
    if first is not None:
        errs[3] = LayerError(first, 0.02)
    return PairResult(a=a, b=b, max_abs=max_rel * 10, max_rel=max_rel, cosine=0.999999,
                      top1=1.0, top5=1.0, passed=max_rel <= rtol, first_divergent_layer=first,
                      layers=errs)


@pytest.fixture()
def report() -> dict[str, Any]:
    ok = ModelResult("alexnet", [2, 3, 224, 224], 0, 1e-5, pairs=[
        _pair("torch", "keras", 1e-6, layers=21), _pair("torch", "onnx-torch", 2e-6)],
        seconds={"run torch": 0.5})
    bad = ModelResult("resnet50", [2, 3, 224, 224], 0, 1e-5, pairs=[
        _pair("torch", "keras", 3e-2, layers=12, first="layer1.0.conv2"),
        _pair("torch", "onnx:user.onnx", float("inf"))], seconds={"run torch": 1.5})
    photo = ModelResult("alexnet", [1, 3, 224, 224], 0, 1e-5, inputs="image:cat.jpg",
                        pairs=[_pair("torch", "keras", 1e-6)])
    broken = ModelResult("vgg19", [2, 3, 224, 224], 0, 1e-5,
                         error="RuntimeError: <script>alert(1)</script>")
    return rep.build_report([ok, bad, photo, broken])


def _validate(data: dict[str, Any]) -> None:
    jsonschema.Draft202012Validator.check_schema(rep.schema())
    jsonschema.validate(data, rep.schema(), cls=jsonschema.Draft202012Validator)


def test_json_is_strict_and_matches_the_schema(report: dict[str, Any]) -> None:
    text = rep.to_json(report)

    def no_constants(name: str) -> None:
        raise AssertionError(f"non-standard JSON constant {name}")

    data = json.loads(text, parse_constant=no_constants)
    _validate(data)
    env = data["environment"]
    for key in ("python", "torch", "tensorflow", "keras", "onnx", "onnxruntime", "tf2onnx",
                "numpy", "cpu", "time"):
        assert key in env
    user = data["models"][1]["pairs"][1]
    assert user["b"] == "onnx:user.onnx" and user["max_rel"] == "inf"
    first = data["models"][1]["pairs"][0]
    assert first["first_divergent_layer"] == "layer1.0.conv2"
    assert first["layers"][3] == {"name": "layer1.0.conv2", "max_rel": 0.02}
    assert [m["passed"] for m in data["models"]] == [True, False, True, False]
    assert rep.to_markdown(data) == rep.to_markdown(report)  # renders from the file too


@pytest.mark.parametrize(
    ("path", "value"),
    [(("models", 0, "pairs", 0, "a"), "tensorflow"),  # not a runtime name
     (("models", 0, "pairs", 0, "max_rel"), "big"),
     (("models", 0, "input_shape"), [3, 224, 224]),
     (("models", 0, "inputs"), "zeros")],
)
def test_schema_rejects_malformed_reports(report: dict[str, Any], path: tuple[Any, ...],
                                          value: Any) -> None:
    data = json.loads(rep.to_json(report))
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(jsonschema.ValidationError):
        _validate(data)


def test_schema_requires_the_pair_fields(report: dict[str, Any]) -> None:
    data = json.loads(rep.to_json(report))
    del data["models"][0]["pairs"][0]["first_divergent_layer"]
    with pytest.raises(jsonschema.ValidationError, match="first_divergent_layer"):
        _validate(data)


def test_markdown_is_a_short_summary(report: dict[str, Any]) -> None:
    md = rep.to_markdown(report)
    assert md.startswith("# codenn-convert parity: FAIL")
    assert "first divergent layer: `layer1.0.conv2`" in md
    assert "| alexnet (image:cat.jpg) | 1x3x224x224 | torch vs keras |" in md
    assert "| resnet50 | 2x3x224x224 | torch vs onnx:user.onnx | inf | inf |" in md
    assert "ERROR: RuntimeError" in md
    assert len(md.splitlines()) < 20


class _Page(HTMLParser):
    """Collects the cells of table#parity, the images and the environment rows."""

    def __init__(self) -> None:
        super().__init__()
        self.table: str | None = None
        self.rows: list[list[tuple[str, str]]] = []
        self.cell: list[str] | None = None
        self.cell_class = ""
        self.images: list[str] = []
        self.env: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "table":
            self.table = a.get("id")
        elif tag == "tr" and self.table == "parity":
            self.rows.append([])
        elif tag in ("td", "th") and self.table in ("parity", "environment"):
            self.cell, self.cell_class = [], a.get("class") or ""
        elif tag == "img":
            self.images.append(a.get("src") or "")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self.cell is not None:
            text = "".join(self.cell).strip()
            if self.table == "parity":
                self.rows[-1].append((self.cell_class, text))
            elif tag == "th":
                self.env.append(text)
            self.cell = None
        elif tag == "table":
            self.table = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self.cell is not None:
            self.cell.append(data)


def test_html_has_the_table_the_plots_and_the_environment(report: dict[str, Any]) -> None:
    html = rep.to_html(report)
    page = _Page()
    page.feed(html)
    header, *rows = page.rows
    assert [t for _, t in header] == ["model", "input", "torch vs keras", "torch vs onnx-torch",
                                      "torch vs onnx:user.onnx"]
    assert [r[0][1] for r in rows] == ["alexnet", "resnet50", "alexnet (image:cat.jpg)", "vgg19"]
    assert [c for c, _ in rows[0][2:]] == ["pass", "pass", "none"]
    assert [c for c, _ in rows[1][2:]] == ["fail", "none", "fail"]
    assert "at layer1.0.conv2" in rows[1][2][1] and rows[1][4][1] == "inf"
    assert rows[3][2][0] == "error"
    # One plot per model with per-layer errors (alexnet and resnet50), embedded as PNG.
    assert len(page.images) == 2
    for src in page.images:
        assert src.startswith("data:image/png;base64,")
        png = base64.b64decode(src.split(",", 1)[1])
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert {"python", "torch", "tensorflow", "onnxruntime", "cpu", "time"} <= set(page.env)
    # Self-contained and escaped.
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "http://" not in html and "https://" not in html


def test_junit_has_one_case_per_model_and_pair(report: dict[str, Any]) -> None:
    root = ET.fromstring(rep.to_junit(report))
    (suite,) = root.findall("testsuite")
    cases = suite.findall("testcase")
    assert [(c.get("classname"), c.get("name")) for c in cases] == [
        ("parity.alexnet", "torch vs keras"), ("parity.alexnet", "torch vs onnx-torch"),
        ("parity.resnet50", "torch vs keras"), ("parity.resnet50", "torch vs onnx:user.onnx"),
        ("parity.alexnet", "torch vs keras [image:cat.jpg]"), ("parity.vgg19", "run")]
    assert suite.get("tests") == "6" and suite.get("failures") == "2" and suite.get("errors") == "1"
    failure = cases[2].find("failure")
    assert failure is not None
    assert failure.get("message") == (
        "max_rel 3.00e-02 > rtol 1e-05; first divergent layer layer1.0.conv2")
    assert "max_abs: 3.00e-01" in (failure.text or "")
    assert cases[3].find("failure") is not None and cases[0].find("failure") is None
    error = cases[5].find("error")
    assert error is not None and "RuntimeError" in (error.get("message") or "")


def test_write_reports_writes_all_four(report: dict[str, Any], tmp_path: Path) -> None:
    paths = rep.write_reports(report, tmp_path / "out")
    assert [p.name for p in paths] == list(rep.REPORT_FILES)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(rep.REPORT_FILES)


def test_report_command_writes_the_four_forms(tmp_path: Path) -> None:
    out = tmp_path / "reports"
    proc = run_cli_here("report", "alexnet", "-o", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads((out / "parity.json").read_text())
    _validate(data)
    (m,) = data["models"]
    assert m["passed"] and m["input_shape"] == [2, 3, 224, 224] and len(m["pairs"]) == 6
    tk = next(p for p in m["pairs"] if (p["a"], p["b"]) == ("torch", "keras"))
    assert len(tk["layers"]) == 21 and tk["first_divergent_layer"] is None
    page = _Page()
    page.feed((out / "parity.html").read_text())
    assert len(page.images) == 1 and len(page.rows) == 2
    cases = ET.parse(out / "junit.xml").getroot().iter("testcase")
    assert sum(1 for _ in cases) == 6
    assert (out / "parity.md").read_text().startswith("# codenn-convert parity: PASS")
