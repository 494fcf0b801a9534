"""LiteRT (.tflite) exports: time, peak memory and size per precision; latency against
onnxruntime and torch eager.

    python benchmarks/bench_tflite.py                      # resnet50 and vgg19
    python benchmarks/bench_tflite.py resnet18 --size 64 --repeat 3 --json out.json

Each export is ``codenn export MODEL -o X.tflite --precision P`` in a fresh process: its wall
time and peak RSS (from ``wait4``) include importing TensorFlow and building the twin. The
weights' size (float32) is printed beside it, the measure "a few times the weights" is
judged by. Latency is the median of ``--repeat`` runs after one warm-up, at batch 1 and 8,
on synthetic photo-like inputs: LiteRT with its default CPU delegate (XNNPACK, all cores),
onnxruntime on our torch export (fp32, and int8 from ``export --precision int8``), torch
eager (fp32). Prints a Markdown table (the README's) and optionally writes JSON.
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

PRECISIONS = ("fp32", "fp16", "int8")
BATCHES = (1, 8)


def _measured(cmd: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one child process; it must succeed."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stderr.read().decode()[-2000:]}")
    return wall, usage.ru_maxrss / 1024


def _export(model: str, out: Path, size: list[str], *extra: str) -> tuple[float, float]:
    return _measured([sys.executable, "-m", "codenn_convert", "export", model, *size, "-o",
                      str(out), *extra])


def _median_ms(fn: Callable[[], Any], repeat: int) -> float:
    fn()  # warm-up: allocation, delegate preparation, first-run caches
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def _litert(path: Path, x: np.ndarray) -> Callable[[], Any]:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path), num_threads=os.cpu_count())
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    it.resize_tensor_input(inp["index"], [len(x), *x.shape[2:], 3])
    it.allocate_tensors()
    feed = np.ascontiguousarray(x.transpose(0, 2, 3, 1))

    def run() -> Any:
        it.set_tensor(inp["index"], feed)
        it.invoke()
        return it.get_tensor(out["index"])

    return run


def _ort(path: Path, x: np.ndarray) -> Callable[[], Any]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda: session.run(None, {"input": x})


def _torch(model: str, x: np.ndarray) -> Callable[[], Any]:
    import torch

    from codenn_convert.twins.init import realistic_model

    net = realistic_model(model, 0)
    t = torch.from_numpy(x)

    def run() -> Any:
        with torch.no_grad():
            return net(t)

    return run


def bench(model: str, size: tuple[int, int], repeat: int, tmp: Path) -> dict[str, Any]:
    from codenn_convert.export.calibration import synthetic_images
    from codenn_convert.registry import get_spec

    size_args = ["--input-size", str(size[0]), str(size[1])]
    row: dict[str, Any] = {"model": model, "weights_mb": get_spec(model).num_params * 4 / 1e6,
                           "export": {}, "latency_ms": {}}
    for p in PRECISIONS:
        out = tmp / f"{model}.{p}.tflite"
        wall, rss = _export(model, out, size_args, "--precision", p)
        row["export"][p] = {"seconds": wall, "peak_rss_mb": rss,
                            "file_mb": out.stat().st_size / 1e6}
        print(f"{model} {p}: {wall:.1f} s, {rss:.0f} MB peak, {out.stat().st_size / 1e6:.1f} MB",
              file=sys.stderr)
    for p in ("fp32", "int8"):
        _export(model, tmp / f"{model}.{p}.onnx", size_args, "--precision", p)
    for n in BATCHES:
        x = synthetic_images(n, size, seed=1)
        runs = {f"litert {p}": _litert(tmp / f"{model}.{p}.tflite", x) for p in ("fp32", "int8")}
        runs |= {f"ort {p}": _ort(tmp / f"{model}.{p}.onnx", x) for p in ("fp32", "int8")}
        runs["torch fp32"] = _torch(model, x)
        row["latency_ms"][str(n)] = {k: _median_ms(fn, repeat) for k, fn in runs.items()}
        print(f"{model} batch {n}: {row['latency_ms'][str(n)]}", file=sys.stderr)
    return row


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| model | weights MB | precision | file MB | export s | export peak MB | "
             "LiteRT b1 ms | LiteRT b8 ms | ORT b1 ms | ORT b8 ms | torch b1 ms | "
             "torch b8 ms |", "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        for p in PRECISIONS:
            e, lat = r["export"][p], r["latency_ms"]

            def ms(key: str, n: int, lat: dict[str, Any] = lat) -> str:
                v = lat[str(n)].get(key)
                return "–" if v is None else f"{v:.0f}"

            lines.append(
                f"| {r['model']} | {r['weights_mb']:.0f} | {p} | {e['file_mb']:.1f} | "
                f"{e['seconds']:.0f} | {e['peak_rss_mb']:.0f} | {ms(f'litert {p}', 1)} | "
                f"{ms(f'litert {p}', 8)} | {ms(f'ort {p}', 1)} | {ms(f'ort {p}', 8)} | "
                f"{ms(f'torch {p}', 1)} | {ms(f'torch {p}', 8)} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="*", default=["resnet50", "vgg19"])
    ap.add_argument("--size", type=int, default=None, help="square input size (default: "
                    "the model's)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    from codenn_convert.registry import get_spec

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-tflite-") as tmp:
        for m in args.models:
            size = (args.size, args.size) if args.size else get_spec(m).input_size
            rows.append(bench(m, size, args.repeat, Path(tmp)))
            for f in Path(tmp).iterdir():
                f.unlink()
    print(table(rows))
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
