"""onnxruntime, as every ONNX runtime of the verifier uses it: a CPU session with only
exact-preserving rewrites, the input layout read from the graph, batches fed whole."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from codenn_convert.errors import UsageError
from codenn_convert.interface import Layout


def onnx_input_layout(shape: Sequence[Any], input_size: tuple[int, int]) -> Layout:
    """NCHW or NHWC from an ONNX input's declared shape (``[N, 3, H, W]`` vs ``[N, H, W, 3]``).

    The channel axis decides where only one of axes 1 and 3 can be 3; where both can (a
    symbolic or 3-pixel dimension), the spatial size ``input_size`` (H, W) decides.
    """

    dims = [d if isinstance(d, int) and d > 0 else None for d in shape]
    if len(dims) != 4:
        raise UsageError(f"expected a 4-d image input, found shape {list(shape)}")
    h, w = input_size

    def fits(actual: Sequence[int | None], expected: Sequence[int]) -> bool:
        return all(a is None or a == e for a, e in zip(actual, expected, strict=True))

    nchw = fits(dims[1:], (3, h, w))
    nhwc = fits(dims[1:], (h, w, 3))
    if nchw and nhwc:
        # Only symbolic dimensions (or a 3x3 image) leave both open; a literal 3 on one side
        # is the channel axis, else ONNX's own convention, NCHW.
        return "NHWC" if dims[3] == 3 and dims[1] is None else "NCHW"
    if nchw or nhwc:
        return "NCHW" if nchw else "NHWC"
    raise UsageError(f"ONNX input shape {list(shape)} fits neither [N, 3, {h}, {w}] nor "
                     f"[N, {h}, {w}, 3]")


def run_onnx(session: Any, outputs: Sequence[str] | None, x: np.ndarray, layout: Layout
             ) -> list[np.ndarray]:
    """Run ``session`` on the NCHW batch ``x`` (transposed if it takes NHWC).

    A graph exported with a fixed batch size (torch's TorchScript exporter fixes it) gets
    the batch in slices of that size, the outputs concatenated.
    """

    inp = session.get_inputs()[0]
    feed = np.ascontiguousarray(x.transpose(0, 2, 3, 1) if layout == "NHWC" else x)
    step = inp.shape[0] if isinstance(inp.shape[0], int) and inp.shape[0] > 0 else len(x)
    if len(x) % step:
        raise UsageError(f"the ONNX graph takes batches of exactly {step}; the batch has "
                         f"{len(x)} samples (use --batch {step})")
    parts = [session.run(outputs, {inp.name: feed[i:i + step]})
             for i in range(0, len(x), step)]
    return [np.concatenate(ys) if len(parts) > 1 else np.asarray(ys[0])
            for ys in zip(*parts, strict=True)]


def onnx_session(model: str | os.PathLike[str] | bytes, *, arena: bool = True) -> Any:
    """An onnxruntime CPU session with only exact-preserving graph rewrites.

    Full optimisation can fuse ops into a different float ordering; we compare the graphs as
    written. ``arena=False`` returns each run's memory when the run ends (ORT's arena keeps
    its high-water mark, which a probe's run, holding many layer outputs, would raise).
    """
    import onnxruntime as ort

    from codenn_convert.thirdparty import ort_severity, quiet_onnxruntime

    quiet_onnxruntime(ort)
    opts = ort.SessionOptions()
    opts.log_severity_level = ort_severity()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    opts.enable_cpu_mem_arena = arena
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])
