"""Keras -> ONNX export through a weight-free tf2onnx graph (codenn_convert.export.keras_onnx)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from codenn_convert.errors import OutputError, UsageError
from codenn_convert.export import keras_onnx as onnx_keras
from codenn_convert.export.keras_onnx import export_keras_onnx
from codenn_convert.export.onnx_writer import write_onnx
from tests.conftest import max_rel

H, W, CLASSES = 12, 10, 7


def _randomise(model: Any, seed: int) -> None:
    """Trained-looking values: BN statistics far from identity, non-zero biases."""
    rng = np.random.default_rng(seed)
    for v in model.variables:
        if not v.dtype.startswith("float"):
            continue
        shape = tuple(v.shape)
        if "variance" in v.path:
            value = rng.uniform(0.5, 2.0, shape)
        elif "gamma" in v.path:
            value = rng.uniform(0.5, 1.5, shape)
        else:
            fan_in = int(np.prod(shape[:-1])) if len(shape) > 1 else 25
            value = rng.normal(0.0, np.sqrt(2.0 / fan_in), shape) + ("mean" in v.path) * 0.3
        v.assign(value.astype(np.float32))


@pytest.fixture(scope="module")
def small_model() -> Any:
    """Conv2D + BatchNormalization + ReLU + MaxPool + Flatten + Dense, H != W."""
    import keras
    from keras import layers

    inputs = keras.Input((H, W, 3), name="input")
    x = layers.Conv2D(8, 3, name="conv")(inputs)
    x = layers.BatchNormalization(epsilon=1e-5, name="bn")(x)
    x = layers.ReLU(name="relu")(x)
    x = layers.MaxPooling2D(2, name="pool")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dropout(0.5, name="drop")(x)
    outputs = layers.Dense(CLASSES, name="fc")(x)
    model = keras.Model(inputs, outputs, name="small")
    _randomise(model, 0)
    return model


@pytest.fixture(scope="module")
def small_onnx(small_model: Any, module_tmp: Path) -> Path:
    return export_keras_onnx(small_model, module_tmp / "small.onnx")


def _ort_logits(path: Path, x_nchw: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["logits"], {"input": x_nchw})[0]


def _keras_logits(model: Any, x_nchw: np.ndarray) -> np.ndarray:
    return np.asarray(model(x_nchw.transpose(0, 2, 3, 1), training=False))


@pytest.mark.parametrize("batch", [1, 3])
def test_small_model_matches_keras_at_any_batch(
    small_model: Any, small_onnx: Path, batch: int
) -> None:
    x = np.random.default_rng(batch).standard_normal((batch, 3, H, W)).astype(np.float32)
    got = _ort_logits(small_onnx, x)
    ref = _keras_logits(small_model, x)
    assert got.shape == (batch, CLASSES)
    assert max_rel(ref, got) <= 1e-5


def test_interface_is_the_torch_exports(small_onnx: Path) -> None:
    import onnx

    onnx.checker.check_model(str(small_onnx), full_check=True)
    model = onnx.load(str(small_onnx))
    (inp,) = model.graph.input
    (out,) = model.graph.output
    assert (inp.name, out.name) == ("input", "logits")
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    in_dims = inp.type.tensor_type.shape.dim
    out_dims = out.type.tensor_type.shape.dim
    assert [d.dim_value for d in in_dims[1:]] == [3, H, W]  # NCHW
    assert [d.dim_value for d in out_dims[1:]] == [CLASSES]
    # A symbolic batch, the same symbol on both sides.
    assert in_dims[0].dim_param and in_dims[0].dim_param == out_dims[0].dim_param
    assert not in_dims[0].HasField("dim_value")


def test_kernels_are_folded_initializers_named_after_variables(
    small_model: Any, small_onnx: Path
) -> None:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(small_onnx))
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    conv = small_model.get_layer("conv").kernel.numpy()
    fc = small_model.get_layer("fc").kernel.numpy()
    # HWIO -> OIHW folded with numpy: bit-exact, and no Transpose left on a weight.
    np.testing.assert_array_equal(inits["conv/kernel"], conv.transpose(3, 2, 0, 1))
    np.testing.assert_array_equal(inits["fc/kernel"], fc)
    assert {n.op_type for n in model.graph.node}.isdisjoint({"Sqrt", "Reciprocal", "Identity"})
    transposed = {n.input[0] for n in model.graph.node if n.op_type == "Transpose"}
    assert transposed.isdisjoint(inits)


def test_tf2onnx_never_sees_the_kernels(small_model: Any) -> None:
    onnx_model, weights = onnx_keras._convert_weight_free(small_model, 17)
    fed = {path for path, _ in weights.values()}
    assert fed == {"conv/kernel", "fc/kernel"}
    assert set(weights) <= {i.name for i in onnx_model.graph.input}
    # Only small constants (folded BatchNorm vectors, biases, shapes) went through tf2onnx.
    smallest_kernel = min(a.size for _, a in weights.values())
    assert max(int(np.prod(t.dims)) for t in onnx_model.graph.initializer) < smallest_kernel


def test_only_the_first_output_is_exported(tmp_path: Path) -> None:
    import keras
    from keras import layers

    inputs = keras.Input((8, 8, 3), name="input")
    x = layers.Conv2D(4, 3, name="conv")(inputs)
    aux = layers.Dense(2, name="aux")(layers.GlobalAveragePooling2D(name="aux_pool")(x))
    logits = layers.Dense(5, name="fc")(layers.Flatten(name="flatten")(x))
    model = keras.Model(inputs, [logits, aux], name="two_heads")
    _randomise(model, 1)
    path = export_keras_onnx(model, tmp_path / "two.onnx")
    x_nchw = np.random.default_rng(2).standard_normal((2, 3, 8, 8)).astype(np.float32)
    ref = np.asarray(model(x_nchw.transpose(0, 2, 3, 1), training=False)[0])
    got = _ort_logits(path, x_nchw)
    assert got.shape == (2, 5)
    assert max_rel(ref, got) <= 1e-5


def test_alexnet_twin_matches_keras(alexnet_state: dict[str, np.ndarray], tmp_path: Path) -> None:
    from codenn_convert.twins.build import keras_twin

    model = keras_twin("alexnet", alexnet_state)
    path = export_keras_onnx(model, tmp_path / "alexnet.onnx")
    x = np.random.default_rng(0).standard_normal((2, 3, 224, 224)).astype(np.float32)
    got = _ort_logits(path, x)
    assert got.shape == (2, 1000)
    assert max_rel(_keras_logits(model, x), got) <= 1e-5


def test_failed_export_leaves_the_existing_file(
    small_model: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dst = tmp_path / "model.onnx"
    dst.write_bytes(b"previous export")

    def broken_write(path: Path, *args: Any) -> None:
        Path(path).write_bytes(b"half a model")
        raise OSError("disk full")

    monkeypatch.setattr(onnx_keras, "write_onnx", broken_write)
    with pytest.raises(OSError, match="disk full"):
        export_keras_onnx(small_model, dst)
    assert dst.read_bytes() == b"previous export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]  # no temp file left


def test_unwritable_destination_fails_before_converting(
    small_model: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_conversion(*args: Any) -> None:
        raise AssertionError("converted although the destination cannot be written")

    monkeypatch.setattr(onnx_keras, "_convert_weight_free", no_conversion)
    with pytest.raises(OutputError, match="does not exist"):
        export_keras_onnx(small_model, tmp_path / "missing" / "model.onnx")
    (tmp_path / "dir.onnx").mkdir()
    with pytest.raises(OutputError, match="is a directory"):
        export_keras_onnx(small_model, tmp_path / "dir.onnx")


def test_refused_model_leaves_the_existing_file(tmp_path: Path) -> None:
    import keras
    from keras import layers

    a, b = keras.Input((4, 4, 3)), keras.Input((4, 4, 3))
    model = keras.Model([a, b], layers.Add()([a, b]))
    dst = tmp_path / "model.onnx"
    dst.write_bytes(b"previous export")
    with pytest.raises(UsageError, match="single-input"):
        export_keras_onnx(model, dst)
    assert dst.read_bytes() == b"previous export"


def test_streamed_file_equals_the_in_memory_model(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    tensors = [
        ("w", rng.standard_normal((4, 3, 2, 2)).astype(np.float32)),
        ("b", rng.standard_normal(4).astype(np.float32)),
        ("s", np.asarray(2.5, np.float32)),  # 0-d: dims must stay empty
        ("i", np.arange(6, dtype=np.int64).reshape(2, 3)),
        ("t", rng.standard_normal((3, 5)).astype(np.float32).T),  # not C-contiguous
        ("e", np.zeros((0, 3), np.float32)),
    ]
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 5, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 4, 4])],
        initializer=[numpy_helper.from_array(np.ones(2, np.float32), "small")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    write_onnx(tmp_path / "m.onnx", model, tensors)

    expected = onnx.ModelProto()
    expected.CopyFrom(model)
    expected.graph.initializer.extend(numpy_helper.from_array(a, n) for n, a in tensors)
    loaded = onnx.load(str(tmp_path / "m.onnx"))
    assert loaded == expected
    for (name, array), init in zip(tensors, loaded.graph.initializer[1:], strict=True):
        assert init.name == name
        np.testing.assert_array_equal(numpy_helper.to_array(init), array)
