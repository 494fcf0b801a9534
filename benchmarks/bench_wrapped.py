"""Does a wrapped checkpoint cost more to convert than a bare one? Medians over repeats.

The same seeded ResNet-50 is saved bare, DDP-wrapped (``module.`` prefix) and as a Lightning
training checkpoint (``{"state_dict": {"model.*": ...}, "epoch": ...}``), and each is
converted to Keras ``.weights.h5`` in this process (framework start-up excluded), in
rotation, so machine noise hits all three alike. The filter pipeline renames keys only
(no tensor is copied), so the three should cost the same.

    python benchmarks/bench_wrapped.py --repeat 5
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


def _write_sources(folder: Path, model: str) -> dict[str, Path]:
    import torch

    from codenn_convert.twins.init import realistic_state

    tensors = {k: torch.from_numpy(v) for k, v in realistic_state(model).items()}
    files = {"bare": folder / "bare.pth", "ddp": folder / "ddp.pth",
             "lightning": folder / "lightning.pth"}
    torch.save(tensors, files["bare"])
    torch.save({f"module.{k}": v for k, v in tensors.items()}, files["ddp"])
    torch.save({"epoch": 1, "state_dict": {f"model.{k}": v for k, v in tensors.items()}},
               files["lightning"])
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    logging.getLogger("codenn_convert.notes").setLevel(logging.WARNING)  # no note lines

    from codenn_convert.convert import convert_checkpoint

    with tempfile.TemporaryDirectory(prefix="codenn-bench-") as tmp:
        folder = Path(tmp)
        files = _write_sources(folder, args.model)
        convert_checkpoint(args.model, files["bare"], folder / "warm.weights.h5")  # warm-up
        times: dict[str, list[float]] = {kind: [] for kind in files}
        for _ in range(args.repeat):
            for kind, src in files.items():
                start = time.perf_counter()
                convert_checkpoint(args.model, src, folder / f"{kind}.weights.h5")
                times[kind].append(time.perf_counter() - start)
    print(f"{args.model} .pth -> .weights.h5, median of {args.repeat} (seconds):")
    for kind, values in times.items():
        print(f"  {kind:10s} {statistics.median(values):6.3f}  "
              f"(min {min(values):.3f}, max {max(values):.3f})")


if __name__ == "__main__":
    main()
