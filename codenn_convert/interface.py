"""The interfaces every part shares: ONNX names and opset, image layout, torch-only keys."""

from __future__ import annotations

from typing import Literal

#: Default ONNX opset of both exports (torch's dynamo exporter and tf2onnx).
DEFAULT_OPSET = 18
#: Input tensor: float32, NCHW ``[N, 3, H, W]``, dynamic ``N``.
INPUT_NAME = "input"
#: Output tensor: ``[N, classes]``.
OUTPUT_NAME = "logits"
#: How an image batch is laid out: torch and ONNX take NCHW, Keras NHWC.
Layout = Literal["NCHW", "NHWC"]
#: The torch-only BatchNorm buffer (a key suffix: ``<module>.num_batches_tracked``).
NUM_BATCHES_TRACKED = "num_batches_tracked"
