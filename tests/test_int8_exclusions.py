"""int8 leaves a BatchNorm that cannot fold into a conv (DenseNet's BN-ReLU-conv on a
concatenation) in float32, with the ``Concat`` feeding it: on a tiny graph of that shape
(torch's ``BatchNormalization`` and tf2onnx's ``Mul``/``Add``), quantising them costs the
int8 floor, keeping them float meets it. onnxruntime only; no torch, no TensorFlow."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from codenn_convert.export import int8_exclusions
from codenn_convert.export.calibration import Calibration, synthetic_images
from codenn_convert.export.precision import PRECISION_MODES, to_int8
from codenn_convert.verification.lossy import lossy_metrics
from tests.tiny_onnx import save_graph

SIZE = (16, 16)
#: The second branch's outputs are this much smaller than the first's: a DenseNet
#: concatenation joins conv outputs whose spreads differ like this before BatchNorm
#: normalises them.
SMALL = 1e-2
STYLES = ("batchnorm", "mul-add")


def _write_net(path: Path, style: str) -> Path:
    """input -> two 1x1 convs (one SMALL) -> Concat -> BatchNorm (a ``BatchNormalization``
    node, or tf2onnx's ``Mul``/``Add`` by [1, C, 1, 1] constants) normalising each channel
    -> ReLU -> 1x1 conv -> global average pool -> Gemm -> logits."""
    from onnx import helper

    rng = np.random.default_rng(0)
    wa, wb = rng.standard_normal((2, 4, 3, 1, 1)).astype(np.float32)
    wb *= SMALL
    spread = np.sqrt((np.concatenate([wa, wb])[:, :, 0, 0] ** 2).sum(1)).astype(np.float32)
    arrays = {"wa": wa, "wb": wb, "wc": rng.standard_normal((6, 8, 1, 1)).astype(np.float32),
              "wd": rng.standard_normal((10, 6)).astype(np.float32)}
    if style == "batchnorm":
        arrays |= {"gamma": np.ones(8, np.float32), "beta": np.full(8, 0.1, np.float32),
                   "mean": np.zeros(8, np.float32), "var": spread ** 2}
        norm = [helper.make_node("BatchNormalization", ["cat", "gamma", "beta", "mean", "var"],
                                 ["bn"], epsilon=0.0)]
    else:
        arrays |= {"scale": (1 / spread).reshape(1, 8, 1, 1),
                   "shift": np.full((1, 8, 1, 1), 0.1, np.float32)}
        norm = [helper.make_node("Mul", ["cat", "scale"], ["scaled"]),
                helper.make_node("Add", ["scaled", "shift"], ["bn"])]
    nodes = [helper.make_node("Conv", ["input", "wa"], ["a"]),
             helper.make_node("Conv", ["input", "wb"], ["b"]),
             helper.make_node("Concat", ["a", "b"], ["cat"], axis=1), *norm,
             helper.make_node("Relu", ["bn"], ["act"]),
             helper.make_node("Conv", ["act", "wc"], ["c"]),
             helper.make_node("GlobalAveragePool", ["c"], ["pooled"]),
             helper.make_node("Flatten", ["pooled"], ["flat"]),
             helper.make_node("Gemm", ["flat", "wd"], ["logits"], transB=1)]
    for k, node in enumerate(nodes):  # exclusions name nodes, as our exporters' graphs do
        node.name = f"{node.op_type}_{k}"
    return save_graph(path, "densenet-like", nodes, arrays, SIZE)


def _logits(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x})[0]


@pytest.mark.parametrize("style", STYLES)
def test_the_unfolded_batchnorm_and_its_concat_are_found(tmp_path: Path, style: str) -> None:
    found = int8_exclusions.excluded_nodes(_write_net(tmp_path / "net.onnx", style))
    ops = {"batchnorm": ["BatchNormalization"], "mul-add": ["Mul", "Add"]}[style]
    import onnx

    graph = onnx.load(str(tmp_path / "net.onnx")).graph
    kinds = sorted(n.op_type for n in graph.node if n.name in found["unfolded-batchnorm"])
    assert kinds == sorted([*ops, "Concat"])
    assert found["nonfinite-constant"] == []


@pytest.mark.parametrize("style", STYLES)
def test_int8_meets_its_floor_only_with_them_in_float(
        tmp_path: Path, style: str, monkeypatch: pytest.MonkeyPatch) -> None:
    src = _write_net(tmp_path / "net.onnx", style)
    calibration = Calibration(synthetic_images(16, SIZE, seed=0), "test")
    x = synthetic_images(8, SIZE, seed=1)
    ref = _logits(src, x)
    floor = PRECISION_MODES["int8"].thresholds
    assert floor is not None

    to_int8(src, tmp_path / "int8.onnx", calibration)
    kept = lossy_metrics(ref, _logits(tmp_path / "int8.onnx", x))
    assert floor.passes(kept), kept

    # The same conversion with only the non-finite rule: the Concat's output is quantised
    # with one range for channels 1/SMALL apart, and normalising brings the small ones'
    # rounding noise up to the size of the large ones.
    rules = int8_exclusions.INT8_EXCLUSIONS
    monkeypatch.setattr(int8_exclusions, "INT8_EXCLUSIONS",
                        tuple(r for r in rules if r.name != "unfolded-batchnorm"))
    to_int8(src, tmp_path / "all.onnx", calibration)
    quantised = lossy_metrics(ref, _logits(tmp_path / "all.onnx", x))
    assert quantised.sqnr_db < floor.min_sqnr_db < kept.sqnr_db, (quantised, kept)


def test_a_residual_add_and_a_scalar_mul_are_not_batchnorm(tmp_path: Path) -> None:
    """ConvNeXt's layer scale (a per-channel ``Mul``, then the residual ``Add``) and
    MobileNetV3's hard-swish constants (scalars) stay quantised."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    arrays = {"w": np.ones((4, 4, 1, 1), np.float32),
              "gamma": np.ones((4, 1, 1), np.float32), "six": np.array(6.0, np.float32)}
    nodes = [helper.make_node("Conv", ["input", "w"], ["c"]),
             helper.make_node("Mul", ["c", "gamma"], ["scaled"]),
             helper.make_node("Add", ["scaled", "input"], ["res"]),
             helper.make_node("Mul", ["res", "six"], ["logits"])]
    for k, node in enumerate(nodes):
        node.name = f"{node.op_type}_{k}"
    graph = helper.make_graph(
        nodes, "not-bn", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                        ["N", 4, 2, 2])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 4, 2, 2])],
        [numpy_helper.from_array(a, name) for name, a in arrays.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx.save(model, str(tmp_path / "m.onnx"))
    assert int8_exclusions.excluded_nodes(tmp_path / "m.onnx")["unfolded-batchnorm"] == []
