"""Inference latency of EfficientNet-B0 and ConvNeXt-Tiny: torch eager, Keras, ONNX Runtime
on both fp32 exports and on the int8 export, at batch 1 and 8 (median of timed runs after
warm-up, one thread each so the numbers compare on a shared machine).

    python benchmarks/bench_efficientnet_convnext.py --models efficientnet_b0 convnext_tiny
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np


def _median_ms(run: Callable[[], object], repeat: int) -> float:
    """Median wall time of ``run()`` in ms, after one warm-up call."""
    run()  # warm-up (graph building, allocation)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def _runners(model: str, folder: Path, size: tuple[int, int]
             ) -> dict[str, Callable[[np.ndarray], object]]:
    """One callable per runtime, each computing the logits of an NCHW batch (the ONNX
    files take any batch size)."""
    import onnxruntime as ort
    import torch

    from codenn_convert import export_onnx
    from codenn_convert.twins.build import keras_twin, torch_twin
    from codenn_convert.twins.init import realistic_state

    state = realistic_state(model, seed=0)
    tmodel = torch_twin(model, state)
    kmodel = keras_twin(model, state, input_size=size)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    out: dict[str, Callable[[np.ndarray], object]] = {}

    def torch_run(x: np.ndarray) -> object:
        with torch.no_grad():
            return tmodel(torch.from_numpy(x))

    out["torch eager"] = torch_run
    out["keras"] = lambda x: kmodel(x.transpose(0, 2, 3, 1), training=False)
    for label, fw, precision in (("ort (torch export)", "torch", "fp32"),
                                 ("ort (keras export)", "keras", "fp32"),
                                 ("ort int8 (torch export)", "torch", "int8")):
        path = folder / f"{model}.{fw}.{precision}.onnx"
        export_onnx(model, fw, path, input_size=size, precision=precision)
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        out[label] = lambda x, s=sess, n=name: s.run(None, {n: x})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["efficientnet_b0", "convnext_tiny"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()

    import tensorflow as tf
    import torch

    torch.set_num_threads(1)
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from codenn_convert.registry import get_spec

    print("| model | runtime | " + " | ".join(f"batch {b} (ms)" for b in args.batches) + " |")
    print("|---|---|" + "---|" * len(args.batches))
    with tempfile.TemporaryDirectory(prefix="codenn-bench-") as tmp:
        for model in args.models:
            size = get_spec(model).input_size
            rows: dict[str, list[float]] = {}
            runners = _runners(model, Path(tmp), size)
            for batch in args.batches:
                x = np.random.default_rng(0).standard_normal((batch, 3, *size)).astype(
                    np.float32)
                for label, run in runners.items():
                    rows.setdefault(label, []).append(
                        _median_ms(lambda r=run, b=x: r(b), args.repeat))
                    print(f"{model} {label} batch {batch}: {rows[label][-1]:.1f} ms",
                          file=sys.stderr)
            for label, ms in rows.items():
                print(f"| `{model}` | {label} | " + " | ".join(f"{m:.1f}" for m in ms) + " |")


if __name__ == "__main__":
    main()
