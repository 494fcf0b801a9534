"""Benchmark ``codenn check``: replaying a golden file in onnxruntime alone.

Records once (``codenn verify MODEL --runtimes torch,onnx-torch --save-golden``, keeping
the torch export), then times ``codenn check`` on that export in fresh processes (start-up
included, no torch or TensorFlow), reporting medians of wall time and peak RSS.

    python benchmarks/bench_check.py --model resnet50 --repeat 5
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import ENV, measure  # noqa: E402 - the shared process measurement


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    cli = [sys.executable, "-m", "codenn_convert"]
    with tempfile.TemporaryDirectory(prefix="codenn-bench-") as tmp:
        d = Path(tmp)
        golden = d / "g.npz"
        subprocess.run([*cli, "verify", args.model, "--runtimes", "torch,onnx-torch",
                        "--keep-onnx", str(d), "--save-golden", str(golden)],
                       env=ENV, check=True, stdout=subprocess.DEVNULL)
        onnx_file = d / f"{args.model}.torch.onnx"
        runs = [measure([*cli, "check", str(onnx_file), "--golden", str(golden)])
                for _ in range(args.repeat)]
        wall = statistics.median(r[0] for r in runs)
        rss = statistics.median(r[1] for r in runs)
        print(f"{args.model}: codenn check, golden {golden.stat().st_size / 1e6:.1f} MB, ONNX "
              f"{onnx_file.stat().st_size / 1e6:.0f} MB: median {wall:.2f} s wall, "
              f"{rss:.0f} MB peak RSS over {args.repeat} runs "
              f"(min {min(r[0] for r in runs):.2f} s, max {max(r[0] for r in runs):.2f} s)")


if __name__ == "__main__":
    main()
