"""Benchmark the user-facing operations: wall time and peak RSS, medians over repeats.

Each measurement runs the real CLI in a fresh process (so framework start-up is included
and memory is that process's own peak), and is repeated; medians are reported because this
machine is shared and noisy. ``startup`` is the cost of importing torch + TensorFlow alone,
so ``convert`` minus ``startup`` is the conversion's own cost.

    python benchmarks/bench.py --models alexnet resnet50 --repeat 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "TF_ENABLE_ONEDNN_OPTS": "0"}


def measure(cmd: list[str]) -> tuple[float, float]:
    """Run ``cmd``; return (wall seconds, peak RSS in MB) of that process alone."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode not in (0, 1):  # 1 = parity failure, still a measurement
        err = proc.stderr.read().decode() if proc.stderr else ""
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{err[-2000:]}")
    return wall, usage.ru_maxrss / 1024  # ru_maxrss is in KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["alexnet", "resnet50"])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip", nargs="*", default=[],
                        help="operations to skip: startup convert export verify")
    args = parser.parse_args()
    py = sys.executable
    cli = [py, "-m", "codenn_convert"]
    rows: list[tuple[str, str, float, float]] = []

    def bench(model: str, op: str, cmd: list[str]) -> None:
        runs = [measure(cmd) for _ in range(args.repeat)]
        wall = statistics.median(r[0] for r in runs)
        rss = statistics.median(r[1] for r in runs)
        rows.append((model, op, wall, rss))
        print(f"{model:10s} {op:28s} {wall:7.2f} s {rss:8.0f} MB", file=sys.stderr)

    if "startup" not in args.skip:
        bench("-", "startup (import torch+tf)", [py, "-c", "import torch, tensorflow, keras"])
    with tempfile.TemporaryDirectory(prefix="codenn-bench-") as tmp:
        d = Path(tmp)
        for model in args.models:
            pth, h5 = d / f"{model}.pth", d / f"{model}.weights.h5"
            subprocess.run([py, "-c", (
                "import torch; from codenn_convert.twins.init import realistic_state; "
                f"s = realistic_state({model!r}); "
                f"torch.save({{k: torch.from_numpy(v) for k, v in s.items()}}, {str(pth)!r})")],
                env=ENV, check=True)
            if "convert" not in args.skip:
                bench(model, "convert torch->keras", [*cli, "convert", model, str(pth), str(h5)])
                bench(model, "convert keras->torch",
                      [*cli, "convert", model, str(h5), str(d / f"{model}.back.pth")])
            if "export" not in args.skip:
                for fw in ("torch", "keras"):
                    bench(model, f"export {fw}", [*cli, "export", model, "--framework", fw,
                                                  "--weights", str(pth), "-o",
                                                  str(d / f"{model}.{fw}.onnx")])
            if "verify" not in args.skip:
                bench(model, "verify (4 runtimes, batch 2)",
                      [*cli, "verify", model, "--weights", str(pth)])

    print(f"\nMedian of {args.repeat} runs, each in a fresh process, on {os.cpu_count()} "
          "cores.\n")
    print("| model | operation | wall (s) | peak RSS (MB) |\n|---|---|---|---|")
    for model, op, wall, rss in rows:
        print(f"| {model} | {op} | {wall:.2f} | {rss:.0f} |")


if __name__ == "__main__":
    main()
