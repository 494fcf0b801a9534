"""Deployment precision: ``codenn export --precision fp32|fp16|int8`` through the CLI, plus
the library pieces (detection, lossy metrics, calibration data). ResNet-18 at 64x64 keeps the
six exports (two frameworks x three precisions) to about a minute."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
import pytest

from codenn_convert.errors import UsageError
from codenn_convert.export import calibration as calib
from codenn_convert.export import metadata
from codenn_convert.export import precision as prec
from codenn_convert.verification import lossy
from tests.conftest import run_cli_here

MODEL, SIZE = "resnet18", (64, 64)
FRAMEWORKS = ("torch", "keras")
NPY_SAMPLES = 6


def _write_images(folder: Path, n: int) -> Path:
    from PIL import Image

    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(n):
        pixels = (calib.synthetic_images(1, (80, 96), seed=i)[0].transpose(1, 2, 0) * 50 + 120)
        pixels = np.clip(pixels + rng.normal(0, 5, pixels.shape), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"img{i}.png")
    (folder / "notes.txt").write_text("not an image")
    return folder


@pytest.fixture(scope="module")
def exports(module_tmp: Path) -> dict[tuple[str, str], Path]:
    """Every framework x precision, exported by the CLI. torch's int8 is calibrated on an
    .npy batch, Keras's on a directory of images."""
    tmp = module_tmp
    npy = tmp / "calib.npy"
    np.save(npy, calib.synthetic_images(NPY_SAMPLES, SIZE, seed=7))
    calibration = {"torch": str(npy), "keras": str(_write_images(tmp / "images", 3))}
    files = {}
    for fw in FRAMEWORKS:
        for p in prec.PRECISIONS:
            out = tmp / f"{fw}.{p}.onnx"
            extra = ["--calibration", calibration[fw]] if p == "int8" else []
            proc = run_cli_here("export", MODEL, "--framework", fw, "--precision", p,
                           "--input-size", *map(str, SIZE), "-o", str(out), *extra)
            assert proc.returncode == 0, proc.stderr
            files[fw, p] = out
    return files


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["logits"], {"input": x})[0]


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("p", prec.PRECISIONS)
def test_interface_is_the_same_at_every_precision(
    exports: dict[tuple[str, str], Path], fw: str, p: str
) -> None:
    model = onnx.load(str(exports[fw, p]))
    (inp,), (out,) = model.graph.input, model.graph.output
    assert inp.name == "input" and out.name == "logits"
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert out.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    dims = inp.type.tensor_type.shape.dim
    assert dims[0].dim_param and not dims[0].HasField("dim_value")  # dynamic N
    assert [d.dim_value for d in dims[1:]] == [3, *SIZE]
    x = calib.synthetic_images(3, SIZE, seed=3)
    for batch in (1, 3):
        y = _run(exports[fw, p], x[:batch])
        assert y.shape == (batch, 1000) and y.dtype == np.float32
        assert np.isfinite(y).all()
    assert metadata.read_metadata(exports[fw, p])[metadata.META_PRECISION] == p


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_size_ratios(exports: dict[tuple[str, str], Path], fw: str) -> None:
    fp32 = exports[fw, "fp32"].stat().st_size
    assert 0.45 < exports[fw, "fp16"].stat().st_size / fp32 < 0.55
    assert 0.2 < exports[fw, "int8"].stat().st_size / fp32 < 0.3


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_sqnr_against_fp32(exports: dict[tuple[str, str], Path], fw: str) -> None:
    x = calib.synthetic_images(8, SIZE, seed=99)  # held out: not the calibration data
    ref = _run(exports[fw, "fp32"], x)
    assert math.isinf(lossy.lossy_metrics(ref, ref).sqnr_db)
    for p in ("fp16", "int8"):
        m = lossy.lossy_metrics(ref, _run(exports[fw, p], x))
        assert set(m.to_dict()) == {"sqnr_db", "cosine", "top1", "top5", "finite"}
        assert m.finite and 0 < m.sqnr_db < 100 and 0.9 < m.cosine <= 1.0 + 1e-12
        assert lossy.DEFAULT_THRESHOLDS[p].passes(m), (p, m)
    fp16 = lossy.lossy_metrics(ref, _run(exports[fw, "fp16"], x))
    int8 = lossy.lossy_metrics(ref, _run(exports[fw, "int8"], x))
    assert fp16.sqnr_db > 50 and fp16.top1 == 1.0
    assert int8.sqnr_db < fp16.sqnr_db - 15  # int8 loses far more than fp16


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_detect_precision_ignores_metadata(
    exports: dict[tuple[str, str], Path], fw: str, tmp_path: Path
) -> None:
    for p in prec.PRECISIONS:
        assert prec.detect_precision(exports[fw, p]) == p
        # A user's file carries none of our metadata: detection reads the graph alone.
        model = onnx.load(str(exports[fw, p]))
        del model.metadata_props[:]
        bare = tmp_path / f"bare.{p}.onnx"
        onnx.save(model, str(bare))
        assert metadata.read_metadata(bare) == {}
        assert prec.detect_precision(bare) == p


def test_int8_metadata_records_the_calibration(exports: dict[tuple[str, str], Path]) -> None:
    meta = metadata.read_metadata(exports["torch", "int8"])
    assert meta[metadata.META_PRECISION] == "int8"
    assert meta[metadata.META_CALIBRATION_METHOD] == "minmax"
    assert meta[metadata.META_CALIBRATION_SAMPLES] == str(NPY_SAMPLES)
    assert meta[metadata.META_CALIBRATION_DATA] == "npy:calib.npy"
    meta = metadata.read_metadata(exports["keras", "int8"])
    assert meta[metadata.META_CALIBRATION_SAMPLES] == "3"  # the .txt file is not an image
    assert meta[metadata.META_CALIBRATION_DATA].startswith("images:images/")
    assert metadata.META_CALIBRATION_METHOD not in metadata.read_metadata(exports["torch", "fp16"])


def _bad_inputs(tmp: Path) -> dict[str, tuple[list[str], str]]:
    wrong = tmp / "wrong.npy"
    np.save(wrong, np.zeros((4, 3, 32, 32), np.float32))
    objects = tmp / "objects.npy"
    np.save(objects, np.full((2, 3, *SIZE), None, dtype=object), allow_pickle=True)
    nan = tmp / "nan.npy"
    np.save(nan, np.full((2, 3, *SIZE), np.nan, np.float32))
    (tmp / "empty").mkdir()
    return {
        "precision": (["--precision", "int4"], "unknown precision 'int4'"),
        "shape": (["--precision", "int8", "--calibration", str(wrong)], "(4, 3, 32, 32)"),
        "objects": (["--precision", "int8", "--calibration", str(objects)], "dtype object"),
        "nan": (["--precision", "int8", "--calibration", str(nan)], "NaN"),
        "empty": (["--precision", "int8", "--calibration", str(tmp / "empty")], "no images"),
        "missing": (["--precision", "int8", "--calibration", str(tmp / "nope.npy")],
                    "not found"),
        "not int8": (["--precision", "fp16", "--calibration", str(wrong)], "int8"),
        # Raised in the child process that exports float32, re-raised by the parent.
        "weights": (["--precision", "fp16", "--weights", str(tmp / "missing.pth")],
                    "missing.pth"),
    }


@pytest.mark.parametrize("case", ["precision", "shape", "objects", "nan", "empty", "missing",
                                  "not int8", "weights"])
def test_bad_input_is_one_line_exit_2_and_no_file(tmp_path: Path, case: str) -> None:
    argv, needle = _bad_inputs(tmp_path)[case]
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    proc = run_cli_here("export", MODEL, "--input-size", *map(str, SIZE), "-o",
                   str(out_dir / "m.onnx"), *argv)
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert needle in lines[0], lines[0]
    assert list(out_dir.iterdir()) == []


def test_failed_conversion_leaves_no_file_and_no_temp_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tempfile

    from codenn_convert.export import onnx_export as export

    temp_root = tmp_path / "tmp"
    temp_root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp_root))
    seen: list[Path] = []

    def broken(src: Path, dst: Path, *args: object) -> None:
        seen.append(Path(src))
        assert Path(src).is_file()  # the float32 intermediate exists during the conversion
        Path(dst).write_bytes(b"partial")
        raise RuntimeError("conversion failed")

    monkeypatch.setattr(export, "convert_precision", broken)
    out = tmp_path / "out" / "m.onnx"
    out.parent.mkdir()
    with pytest.raises(RuntimeError, match="conversion failed"):
        export.export_onnx(MODEL, "torch", out, input_size=SIZE, precision="fp16")
    assert seen and not seen[0].exists()
    assert list(out.parent.iterdir()) == [] and list(temp_root.iterdir()) == []


def test_lossy_metrics_values() -> None:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((4, 10))
    noise = rng.standard_normal((4, 10))
    noise *= math.sqrt(np.sum(a**2) / np.sum(noise**2) / 1e3)  # signal/noise energy = 1000
    m = lossy.lossy_metrics(a, a + noise)
    assert m.sqnr_db == pytest.approx(30.0, abs=1e-9)
    assert m.finite and 0.99 < m.cosine < 1.0
    flipped = lossy.lossy_metrics(a, -a)
    assert flipped.sqnr_db == pytest.approx(10 * math.log10(0.25))
    assert flipped.cosine == pytest.approx(-1.0)
    assert flipped.top1 == 0.0
    # top-5 overlap: the reference's top-5 classes 9..5, the other's 9..6 plus 0.
    ref = np.arange(10.0)[None]
    other = ref.copy()
    other[0, 0], other[0, 5] = 100.0, -1.0
    assert lossy.lossy_metrics(ref, other).top5 == pytest.approx(0.8)
    bad = a + noise
    bad[1, 2] = np.nan
    m = lossy.lossy_metrics(a, bad)
    assert not m.finite and not lossy.DEFAULT_THRESHOLDS["fp16"].passes(m)
    assert math.isfinite(m.sqnr_db)  # taken over the finite positions


def test_synthetic_images_are_seeded_and_photo_like() -> None:
    x = calib.synthetic_images(3, (40, 50), seed=5)
    assert x.shape == (3, 3, 40, 50) and x.dtype == np.float32
    np.testing.assert_array_equal(x, calib.synthetic_images(3, (40, 50), seed=5))
    assert not np.array_equal(x, calib.synthetic_images(3, (40, 50), seed=6))
    # ImageNet-normalised pixels of [0, 1] images, and smooth: neighbours correlate.
    assert x.min() >= -2.2 and x.max() <= 2.7
    flat = x[:, :, :, :-1].ravel()
    right = x[:, :, :, 1:].ravel()
    assert np.corrcoef(flat, right)[0, 1] > 0.8


def test_check_precision() -> None:
    assert prec.check_precision("int8") == "int8"
    with pytest.raises(UsageError, match="fp32, fp16, int8"):
        prec.check_precision("fp64")


def test_external_data_writer_round_trips(tmp_path: Path) -> None:
    from onnx import TensorProto, helper, numpy_helper

    from codenn_convert.export.onnx_writer import write_onnx_external

    rng = np.random.default_rng(0)
    tensors = [
        ("w", rng.standard_normal((4, 3, 2, 2)).astype(np.float32)),
        ("s", np.asarray(2.5, np.float32)),  # 0-d
        ("t", rng.standard_normal((3, 5)).astype(np.float32).T),  # not C-contiguous
        ("e", np.zeros((0, 3), np.float32)),
    ]
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 5, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 4, 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    write_onnx_external(tmp_path / "m.onnx", model, tensors)
    assert (tmp_path / "m.onnx.data").stat().st_size == sum(a.nbytes for _, a in tensors)
    structure = onnx.load(str(tmp_path / "m.onnx"), load_external_data=False)
    assert all(t.data_location == TensorProto.EXTERNAL for t in structure.graph.initializer)
    loaded = onnx.load(str(tmp_path / "m.onnx"))
    for (name, array), init in zip(tensors, loaded.graph.initializer, strict=True):
        assert init.name == name
        np.testing.assert_array_equal(numpy_helper.to_array(init), array)
