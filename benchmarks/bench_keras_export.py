"""Time and peak memory of the Keras -> ONNX export, each run in a fresh process.

    python benchmarks/bench_keras_export.py vgg19 --repeat 3
    python benchmarks/bench_keras_export.py alexnet --baseline --verify
    python benchmarks/bench_keras_export.py keras:ResNet50 --baseline

``MODEL`` is a registry name (its Keras twin, with Keras's own random initialisation: the
cost does not depend on the values) or ``keras:<Name>`` for ``keras.applications.<Name>``
built with ``weights=None``. Every run is a new interpreter, so the numbers include importing
TensorFlow and building the model; the peak RSS of that one process comes from ``wait4``.
``--baseline`` also measures plain ``tf2onnx.convert.from_keras``, only for models under
``BASELINE_MAX_MB`` of weights: it needs ~50x the weights in memory. ``--verify`` runs one
more (untimed) process that compares onnxruntime with Keras on a random batch.
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Largest model (MB of weights) that plain from_keras may be run on: ResNet-50 (102 MB)
#: peaks at 7.5 GB, so VGG-19 (548 MB) would need well over 24 GB.
BASELINE_MAX_MB = 150.0
#: Exit code of a child that refuses the baseline.
REFUSED = 3


@dataclass
class Run:
    """One measured process."""

    wall_s: float
    peak_rss_mb: float
    phases: dict[str, Any]


def _build(model: str) -> Any:
    """The Keras model to export (logits-only view)."""
    if model.startswith("keras:"):
        import keras

        return getattr(keras.applications, model.split(":", 1)[1])(weights=None)
    from codenn_convert.registry import get_model
    from codenn_convert.twins.build import inference_view

    return inference_view(get_model(model, "keras"))


def _child(model: str, method: str, output: Path, opset: int) -> int:
    """Build ``model`` and export it with ``method``; print the phase times as JSON."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    t0 = time.perf_counter()
    import keras
    import tensorflow as tf

    t1 = time.perf_counter()
    kmodel = _build(model)
    weights_mb = _weights_mb(kmodel)
    t2 = time.perf_counter()
    if method == "ours":
        from codenn_convert.export.keras_onnx import export_keras_onnx

        export_keras_onnx(kmodel, output, opset=opset)
    elif method == "baseline":
        if weights_mb > BASELINE_MAX_MB:
            print(
                f"refusing plain tf2onnx.convert.from_keras on {model}: {weights_mb:.0f} MB of "
                f"weights (limit {BASELINE_MAX_MB:.0f} MB). It needs ~50x the weights in "
                f"memory (~{weights_mb * 50 / 1e3:.0f} GB here; VGG-19 was killed at 24 GB) "
                f"and would take down the machine",
                file=sys.stderr,
            )
            return REFUSED
        import tf2onnx

        shape = (None, *kmodel.inputs[0].shape[1:])
        tf2onnx.convert.from_keras(
            kmodel, input_signature=(tf.TensorSpec(shape, tf.float32, name="input"),),
            opset=opset, output_path=str(output),
        )
    elif method == "verify":
        return _verify(kmodel, output, opset)
    t3 = time.perf_counter()
    print(json.dumps({
        "import_s": t1 - t0, "build_s": t2 - t1, "export_s": t3 - t2,
        "weights_mb": weights_mb, "file_mb": output.stat().st_size / 1e6,
        "keras": keras.__version__,
    }))
    return 0


def _weights_mb(kmodel: Any) -> float:
    """Megabytes of variables, from their shapes (no value is read)."""
    import numpy as np

    return sum(
        int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in kmodel.variables
    ) / 1e6


def _verify(kmodel: Any, output: Path, opset: int) -> int:
    """Export, then compare onnxruntime with Keras on an N(0, 1) batch of 2."""
    import numpy as np
    import onnxruntime as ort

    from codenn_convert.export.keras_onnx import export_keras_onnx

    export_keras_onnx(kmodel, output, opset=opset)
    _, h, w, c = kmodel.inputs[0].shape
    x = np.random.default_rng(0).standard_normal((2, c, h, w)).astype(np.float32)
    got = ort.InferenceSession(str(output)).run(["logits"], {"input": x})[0]
    ref = np.asarray(kmodel(x.transpose(0, 2, 3, 1), training=False))
    rel = float(np.abs(got - ref).max() / np.abs(ref).max())
    print(json.dumps({"max_rel": rel, "shape": list(got.shape)}))
    return 0


def _measure(model: str, method: str, opset: int, workdir: Path) -> Run | None:
    """Run one child; ``None`` if it refused. Raises if it failed."""
    out = workdir / f"{model.replace(':', '_')}.{method}.onnx"
    cmd = [sys.executable, __file__, "--child", method, "--opset", str(opset),
           "--output", str(out), model]
    with tempfile.TemporaryFile("w+") as stdout, tempfile.TemporaryFile("w+") as stderr:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=stdout, stderr=stderr)
        # wait4 gives this child's own rusage (RUSAGE_CHILDREN would be a max over all runs).
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = rc = os.waitstatus_to_exitcode(status)
        stdout.seek(0)
        stderr.seek(0)
        text, err = stdout.read(), stderr.read()
    out.unlink(missing_ok=True)
    if rc == REFUSED:
        print(err.strip().splitlines()[-1], file=sys.stderr)
        return None
    if rc != 0:
        raise RuntimeError(f"{method} export of {model} failed (exit {rc}):\n{err[-3000:]}")
    return Run(wall, usage.ru_maxrss / 1024, json.loads(text.strip().splitlines()[-1]))


def _row(model: str, method: str, runs: list[Run]) -> str:
    med = statistics.median
    p = runs[0].phases
    return (
        f"| {model} | {method} | {p['weights_mb']:.0f} | {len(runs)} "
        f"| {med(r.wall_s for r in runs):.1f} | {med(r.phases['export_s'] for r in runs):.1f} "
        f"| {med(r.peak_rss_mb for r in runs) / 1024:.2f} "
        f"| {min(r.peak_rss_mb for r in runs) / 1024:.2f}–"
        f"{max(r.peak_rss_mb for r in runs) / 1024:.2f} | {p['file_mb']:.0f} |"
    )


def main(argv: list[str] | None = None) -> int:
    """Parse arguments; run the children (or be one)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", help="registry name, or keras:<Name> for keras.applications")
    ap.add_argument("--repeat", type=int, default=3, help="fresh processes per method")
    ap.add_argument("--baseline", action="store_true",
                    help=f"also time plain tf2onnx.convert.from_keras (< {BASELINE_MAX_MB:.0f} "
                         f"MB of weights only)")
    ap.add_argument("--verify", action="store_true",
                    help="also compare onnxruntime with Keras (one untimed process)")
    ap.add_argument("--opset", type=int, default=17)
    ap.add_argument("--child", choices=("ours", "baseline", "verify"), help=argparse.SUPPRESS)
    ap.add_argument("--output", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return _child(args.model, args.child, args.output, args.opset)

    methods = ["ours", *(["baseline"] if args.baseline else [])]
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_keras_export.") as tmp:
        for method in methods:
            runs: list[Run] = []
            for _ in range(args.repeat):
                run = _measure(args.model, method, args.opset, Path(tmp))
                if run is None:
                    break
                runs.append(run)
                print(f"{method}: {run.wall_s:.1f} s, {run.peak_rss_mb / 1024:.2f} GB peak RSS "
                      f"(import {run.phases['import_s']:.1f} s, build "
                      f"{run.phases['build_s']:.1f} s, export {run.phases['export_s']:.1f} s)",
                      file=sys.stderr)
            if runs:
                rows.append(_row(args.model, method, runs))
            else:
                rows.append(f"| {args.model} | {method} | | 0 | refused: over "
                            f"{BASELINE_MAX_MB:.0f} MB of weights | | | | |")
        if args.verify:
            check = _measure(args.model, "verify", args.opset, Path(tmp))
            assert check is not None
    print("| model | method | weights MB | runs | wall s | export s | peak RSS GB "
          "| RSS range GB | file MB |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    print("\n".join(rows))
    if args.verify:
        print(f"\nonnxruntime vs Keras (batch 2, N(0,1)): max |a-b|/max|ref| = "
              f"{check.phases['max_rel']:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
