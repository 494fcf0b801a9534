"""MobileNetV3-Large latency at batch 1 and 8 (torch eager, Keras, onnxruntime on both
float32 exports and on the int8 export), and the export time and peak memory of both twins.

Every export runs ``codenn export`` in a fresh process (its own wall time and peak RSS);
latencies are medians of ``--repeat`` runs after one warm-up, in this process, on seeded
synthetic images at 224x224 and seeded realistic weights.

    python benchmarks/bench_mobilenet.py --repeat 20
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_precision import export  # noqa: E402  (benchmarks/ is not a package)

MODEL = "mobilenet_v3_large"


def median_ms(fn: Callable[[], Any], repeat: int) -> float:
    """Median wall time of ``fn`` over ``repeat`` calls after one warm-up."""
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def runners(folder: Path) -> dict[str, Callable[[np.ndarray], Any]]:
    """name -> callable on an NCHW batch, for every runtime measured."""
    import onnxruntime as ort
    import torch

    from codenn_convert.twins import build as twins
    from codenn_convert.twins.init import realistic_state

    state = realistic_state(MODEL, seed=0)
    tmodel = twins.torch_twin(MODEL, state)
    kmodel = twins.keras_twin(MODEL, state, input_size=(224, 224))
    sessions = {f"ort {f.stem}": ort.InferenceSession(str(f))
                for f in sorted(folder.glob("*.onnx"))}

    def torch_run(x: np.ndarray) -> Any:
        with torch.no_grad():
            return tmodel(torch.from_numpy(x))

    out: dict[str, Callable[[np.ndarray], Any]] = {
        "torch eager": torch_run,
        "keras (TF, model(x))": lambda x: kmodel(x.transpose(0, 2, 3, 1), training=False),
    }
    for name, sess in sessions.items():
        out[name] = lambda x, s=sess: s.run(None, {"input": x})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args(argv)
    from codenn_convert.export.calibration import synthetic_images

    with tempfile.TemporaryDirectory(prefix="codenn-bench-mobilenet-") as tmp:
        folder = Path(tmp)
        print("| export | s | peak GB |\n|---|---:|---:|")
        for framework, precision in (("torch", "fp32"), ("keras", "fp32"), ("torch", "int8"),
                                     ("keras", "int8")):
            out = folder / f"{framework}-{precision}.onnx"
            wall, peak = export(MODEL, framework, precision, out)
            print(f"| {framework} {precision} | {wall:.1f} | {peak:.2f} |", flush=True)
        print("\n| runtime | batch 1 ms | batch 8 ms |\n|---|---:|---:|")
        batches = {n: synthetic_images(n, (224, 224), seed=12345) for n in (1, 8)}
        for name, run in runners(folder).items():
            ms = [median_ms(lambda r=run, x=batches[n]: r(x), args.repeat) for n in (1, 8)]
            print(f"| {name} | {ms[0]:.1f} | {ms[1]:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
