"""What each deployment precision buys: file size, ORT latency and SQNR vs float32.

    python benchmarks/bench_precision.py                       # the default set, both frameworks
    python benchmarks/bench_precision.py resnet50 alexnet --framework torch --repeat 5

For every model x framework, ``codenn export --precision fp32|fp16|int8`` runs in a fresh
process (its wall time and peak RSS, from ``wait4``, are reported too: the Keras export must
stay low-memory at every precision). Each file is then timed in onnxruntime (CPU, default
threads; median of ``--repeat`` runs after one warm-up) at batch 1 and 8, and compared with
the float32 file of the same framework on batch 8:

* ``SQNR synth``: held-out synthetic photo-like images (another seed than the calibration
  batch; :func:`codenn_convert.export.precision.synthetic_images`), i.e. data like the calibration
  data, which is what a deployment calibrated on its own data sees;
* ``SQNR N(0,1)``: the verifier's default N(0, 1) inputs, unlike anything int8 was
  calibrated on, so a lower bound.

Prints a Markdown table (and ``--json PATH`` writes the rows, cosines included). "export peak
GB" is the largest single process of the export (a reduced-precision export runs its float32
step in a child process, which has exited before the conversion starts).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

PRECISIONS = ("fp32", "fp16", "int8")
DEFAULT_MODELS = ("alexnet", "vgg19", "resnet50", "inception_v3")
#: Seeds of the evaluation inputs: never the calibration seed (0, the export's --seed).
EVAL_SEED = 12345


@dataclass
class Row:
    """One exported file, measured."""

    model: str
    framework: str
    precision: str
    file_mb: float
    export_s: float
    export_peak_gb: float
    latency_b1_ms: float
    latency_b8_ms: float
    sqnr_synth_db: float | None
    sqnr_normal_db: float | None
    top1_synth: float | None
    top1_normal: float | None
    top5_synth: float | None
    top5_normal: float | None
    cosine_synth: float | None
    cosine_normal: float | None


def export(model: str, framework: str, precision: str, out: Path) -> tuple[float, float]:
    """Run ``codenn export`` in a fresh process; (wall seconds, peak RSS in GB)."""
    codenn = Path(sys.executable).with_name("codenn")
    cmd = [str(codenn), "export", model, "--framework", framework, "--precision", precision,
           "-o", str(out)]
    with tempfile.TemporaryFile("w+") as log:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=log, stderr=log)
        # wait4: this child's own peak RSS (RUSAGE_CHILDREN would be the max over all runs).
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        if os.waitstatus_to_exitcode(status) != 0:
            log.seek(0)
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{log.read()[-3000:]}")
    return wall, usage.ru_maxrss / 2**20


def latency_ms(session: Any, x: np.ndarray, repeat: int) -> float:
    """Median wall time of ``repeat`` runs after one warm-up."""
    session.run(None, {"input": x})
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        session.run(None, {"input": x})
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def measure(model: str, framework: str, files: dict[str, Path], repeat: int) -> list[Row]:
    """Size, latency and SQNR vs fp32 of the three files of one model x framework."""
    import onnxruntime as ort

    from codenn_convert.export.calibration import synthetic_images
    from codenn_convert.registry import get_spec
    from codenn_convert.verification.lossy import lossy_metrics

    size = get_spec(model).input_size
    inputs = {
        "synth": synthetic_images(8, size, seed=EVAL_SEED),
        "normal": np.random.default_rng(EVAL_SEED).standard_normal((8, 3, *size))
        .astype(np.float32),
    }
    ref: dict[str, np.ndarray] = {}
    rows = []
    for precision, path in files.items():
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        outs = {k: session.run(None, {"input": x})[0] for k, x in inputs.items()}
        if precision == "fp32":
            ref = outs
        metrics = {k: lossy_metrics(ref[k], outs[k]) if precision != "fp32" else None
                   for k in inputs}
        rows.append(Row(
            model, framework, precision, path.stat().st_size / 1e6, 0.0, 0.0,
            latency_ms(session, inputs["synth"][:1], repeat),
            latency_ms(session, inputs["synth"], repeat),
            *(m.sqnr_db if m else None for m in metrics.values()),
            *(m.top1 if m else None for m in metrics.values()),
            *(m.top5 if m else None for m in metrics.values()),
            *(m.cosine if m else None for m in metrics.values()),
        ))
        del session
    return rows


def _fmt(v: float | None, spec: str) -> str:
    return "–" if v is None else format(v, spec)


def table(rows: list[Row]) -> str:
    """The Markdown table of ``rows``."""
    lines = [
        "| model | from | precision | file MB | b1 ms | b8 ms | SQNR synth dB | top-1/top-5 "
        "synth | SQNR N(0,1) dB | top-1/top-5 N(0,1) | export s | export peak GB |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.model} | {r.framework} | {r.precision} | {r.file_mb:.1f} "
            f"| {r.latency_b1_ms:.1f} | {r.latency_b8_ms:.0f} | {_fmt(r.sqnr_synth_db, '.1f')} "
            f"| {_fmt(r.top1_synth, '.2f')} / {_fmt(r.top5_synth, '.2f')} "
            f"| {_fmt(r.sqnr_normal_db, '.1f')} "
            f"| {_fmt(r.top1_normal, '.2f')} / {_fmt(r.top5_normal, '.2f')} "
            f"| {r.export_s:.0f} | {r.export_peak_gb:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Export, measure, print the table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="*", default=list(DEFAULT_MODELS))
    ap.add_argument("--framework", choices=("torch", "keras"), action="append",
                    help="repeatable (default: both)")
    ap.add_argument("--repeat", type=int, default=5, help="timed runs per latency (median)")
    ap.add_argument("--json", type=Path, help="also write the rows here")
    args = ap.parse_args(argv)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bench_precision.") as tmp:
        for model in args.models:
            for framework in args.framework or ["torch", "keras"]:
                files, costs = {}, {}
                for precision in PRECISIONS:
                    files[precision] = Path(tmp) / f"{model}.{framework}.{precision}.onnx"
                    costs[precision] = export(model, framework, precision, files[precision])
                    print(f"{model} {framework} {precision}: export {costs[precision][0]:.0f} s,"
                          f" {costs[precision][1]:.2f} GB peak", file=sys.stderr)
                for row in measure(model, framework, files, args.repeat):
                    row.export_s, row.export_peak_gb = costs[row.precision]
                    rows.append(row)
                    print(table([row]).splitlines()[-1], file=sys.stderr)
                for f in files.values():
                    f.unlink()
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
