"""A tiny ONNX model with our interface and a golden file for it: ``codenn check`` runs in a
second, without torch or TensorFlow, so the CLI's output and input handling can be tested on
it cheaply."""

from __future__ import annotations

from pathlib import Path

import numpy as np

SIZE = (8, 8)
CLASSES = 10


def save_graph(path: Path, name: str, nodes: list, arrays: dict[str, np.ndarray],
               size: tuple[int, int], classes: int = CLASSES) -> Path:
    """Save ``nodes`` as a model with our interface (``input`` N,3,H,W -> ``logits``)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        nodes, name, [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, *size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])],
        [numpy_helper.from_array(a, n) for n, a in arrays.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save(model, str(path))
    return path


def write_tiny_onnx(path: Path, *, unused_initializer: bool = False) -> Path:
    """input [N, 3, 8, 8] -> spatial mean -> MatMul [3, 10] -> logits [N, 10]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(0).standard_normal((3, CLASSES)).astype(np.float32)
    inits = [numpy_helper.from_array(w, "w"),
             numpy_helper.from_array(np.array([2, 3], np.int64), "axes")]
    if unused_initializer:  # onnxruntime warns about it on stderr, in colour
        inits.append(numpy_helper.from_array(np.zeros(4, np.float32), "unused"))
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["input", "axes"], ["pooled"], keepdims=0),
         helper.make_node("MatMul", ["pooled", "w"], ["logits"])],
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, *SIZE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", CLASSES])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save(model, str(path))
    return path


def write_tiny_golden(path: Path) -> Path:
    """The golden file the tiny model passes: its own outputs, float64 from numpy."""
    from codenn_convert.verification.golden import Golden, save_golden

    x = np.random.default_rng(1).standard_normal((2, 3, *SIZE)).astype(np.float32)
    w = np.random.default_rng(0).standard_normal((3, CLASSES)).astype(np.float32)
    exact = x.astype(np.float64).mean(axis=(2, 3)) @ w.astype(np.float64)
    save_golden(path, Golden(model="resnet18", labels=["normal(0,1)"], inputs=[x],
                             reference=[exact.astype(np.float32)], exact=[exact], rtol=1e-5))
    return path
