"""``report --from-json`` on shards that are anyone's files: duplicates refused, Markdown
escaped like HTML and JUnit, and a large shard costs about its own size in memory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from codenn_convert import report as rep
from tests.conftest import cli_peak_rss, run_cli_here

HOSTILE = "<script>alert(1)</script>"
IMG = '<img src=x onerror="alert(2)">'


def _entry(model: str = "resnet18", inputs: str = "normal(0,1)", **extra: Any) -> dict:
    from codenn_convert.verification import ModelResult
    from codenn_convert.verification.metrics import compare

    a = np.random.default_rng(0).standard_normal((2, 1000))
    pairs = [compare(a, a + 1e-7, rtol=1e-5, names=n)
             for n in (("torch", "keras"), ("torch", "onnx-torch"), ("keras", "onnx-torch"))]
    entry = ModelResult(model=model, input_shape=[2, 3, 64, 64], seed=0, rtol=1e-5,
                        inputs=inputs, pairs=pairs).to_dict()
    return {**entry, **extra}


def _shard(path: Path, *entries: dict) -> Path:
    path.write_text(json.dumps({"environment": rep.environment(), "models": list(entries)}))
    return path


def test_the_same_model_in_two_shards_is_refused(tmp_path: Path) -> None:
    a = _shard(tmp_path / "a.json", _entry())
    b = _shard(tmp_path / "b.json", _entry())
    other = _shard(tmp_path / "c.json", _entry(inputs="npy:mine.npy"))
    proc = run_cli_here("report", "--from-json", str(a), str(b), "-o", str(tmp_path / "out"))
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "a.json" in lines[0] and "b.json" in lines[0] and "resnet18" in lines[0]
    assert not (tmp_path / "out").exists()
    # Another input of the same model is another check: both rows stay.
    proc = run_cli_here("report", "--from-json", str(a), str(other), "-o", str(tmp_path / "ok"))
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads((tmp_path / "ok" / "parity.json").read_text())["models"]) == 2


def test_markdown_escapes_what_a_shard_says(tmp_path: Path) -> None:
    bad = _entry(model=HOSTILE, inputs=f"image:{IMG}.png", error=f"boom {IMG} | x",
                 reason=f"because {HOSTILE}", passed=False)
    bad["pairs"][0].update(passed=False, first_divergent_layer=f"`{HOSTILE}`",
                           b=f"onnx:{IMG}.onnx")
    shard = _shard(tmp_path / "hostile.json", bad)
    out = tmp_path / "out"
    proc = run_cli_here("report", "--from-json", str(shard), "-o", str(out))
    assert proc.returncode == 1, proc.stderr
    for name in ("parity.md", "parity.html", "junit.xml"):
        text = (out / name).read_text()
        assert "<script>" not in text and "<img" not in text, name
    md = (out / "parity.md").read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in md and "&lt;img src=x" in md
    rows = [ln for ln in md.splitlines() if ln.startswith("| &lt;script")]
    # Every row keeps its 10 cells: a pipe in the text cannot add one.
    assert rows and all(len(ln.replace("\\|", "").split("|")) == 12 for ln in rows), rows


def test_a_large_shard_costs_about_its_own_size(tmp_path: Path) -> None:
    one = json.dumps(_entry(), indent=2)
    n = 60_000_000 // len(one)  # a 60 MB shard (the cost is per byte; 200 MB takes longer)
    big = tmp_path / "big.json"
    with big.open("w") as f:
        f.write('{"environment": ' + json.dumps(rep.environment()) + ', "models": [\n')
        f.write(",\n".join(one.replace('"normal(0,1)"', f'"npy:batch{k}.npy"')
                           for k in range(n)))
        f.write("\n]}\n")
    size = big.stat().st_size
    small = _shard(tmp_path / "small.json", _entry())
    proc, base = cli_peak_rss(["report", "--from-json", str(small), "-o", str(tmp_path / "s")])
    assert proc.returncode == 0, proc.stderr
    proc, peak = cli_peak_rss(["report", "--from-json", str(big), "-o", str(tmp_path / "b")])
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads((tmp_path / "b" / "parity.json").read_text())["models"]) == n
    # Parsed once into shared keys and values, rendered in streams: measured 2.1x the
    # file at 240 MB (506 MB peak), start-up included; 3.8 GB for 200 MB before.
    assert peak - base < 2.5 * size, (peak - base) / size
