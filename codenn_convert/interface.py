"""The ONNX interface every export and check shares: one home for names and opset."""

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
