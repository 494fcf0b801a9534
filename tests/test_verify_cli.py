"""``codenn verify`` refuses bad arguments at once, before any model work (exit 2)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.conftest import run_cli_here


def _one_line(proc: object, needle: str) -> None:
    assert proc.returncode == 2, proc.stdout + proc.stderr  # type: ignore[attr-defined]
    lines = proc.stderr.strip().splitlines()  # type: ignore[attr-defined]
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], lines


@pytest.mark.parametrize("value", ["0", "-1e-5", "nan", "inf"])
def test_rtol_must_be_positive_and_finite(value: str) -> None:
    _one_line(run_cli_here("verify", "vgg19", "--rtol", value), "rtol must be a positive finite")


def test_unknown_runtime() -> None:
    _one_line(run_cli_here("verify", "alexnet", "--runtimes", "torch,tvm"), "unknown: tvm")
    _one_line(run_cli_here("verify", "alexnet", "--runtimes", "torch"), "two or more")


def test_a_bad_onnx_file_is_refused_before_any_model_work(tmp_path: Path) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a protobuf")
    start = time.perf_counter()
    proc = run_cli_here("verify", "vgg19", "--onnx", str(junk))
    # VGG-19's twins take many seconds to build; the file is refused before that.
    assert time.perf_counter() - start < 8
    _one_line(proc, f"{junk} is not a loadable ONNX model")
    _one_line(run_cli_here("verify", "vgg19", "--onnx", str(tmp_path / "none.onnx")),
              "ONNX file not found")


def test_an_onnx_file_of_another_interface_names_the_file(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 32, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 32, 32])])
    path = tmp_path / "tiny.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    _one_line(run_cli_here("verify", "vgg19", "--onnx", str(path)),
              f"{path}: ONNX input shape [")
