"""Every bad input is one line on stderr and exit 2, at bounded memory: golden files bounded
by their .npy headers, typed golden metadata, deep JSON, decompression bombs, huge .npy
claims, impossible input sizes; third-party warnings and usage errors kept off stderr."""

from __future__ import annotations

import json
import struct
import subprocess
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import cli_peak_rss, run_cli, run_cli_here
from tests.tiny_onnx import write_tiny_golden, write_tiny_onnx


@pytest.fixture(scope="module")
def tiny(module_tmp: Path) -> tuple[Path, Path]:
    return write_tiny_onnx(module_tmp / "tiny.onnx"), write_tiny_golden(module_tmp / "g.npz")


def _one_error_line(proc: subprocess.CompletedProcess[str], needle: str = "") -> str:
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and needle in lines[0], lines[0]
    return lines[0]


def _npy_header(shape: tuple[int, ...], descr: str = "<f4") -> bytes:
    buf = __import__("io").BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue()  # magic, version and header


def _rewrite_golden(src: Path, dst: Path, **members: bytes) -> Path:
    """``src`` with some members replaced by raw bytes."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            name = info.filename[:-4]
            zout.writestr(info.filename, members.pop(name, None) or zin.read(info))
        for name, data in members.items():
            zout.writestr(f"{name}.npy", data)
    return dst


def _meta_bytes(meta: object) -> bytes:
    buf = __import__("io").BytesIO()
    np.save(buf, np.array(json.dumps(meta) if not isinstance(meta, str) else meta))
    return buf.getvalue()


def _claim_size(path: Path, member: str, size: int) -> None:
    """Make the zip directory say ``member`` inflates to ``size`` bytes (a bomb's claim)."""
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        info = z.getinfo(member)
    name = member.encode()
    # Local header: uncompressed size at offset 22; central directory: at offset 24.
    struct.pack_into("<I", raw, info.header_offset + 22, size)
    central = raw.rfind(b"PK\x01\x02", 0, len(raw))
    while central != -1:
        n = struct.unpack_from("<H", raw, central + 28)[0]
        if raw[central + 46:central + 46 + n] == name:
            struct.pack_into("<I", raw, central + 24, size)
            break
        central = raw.rfind(b"PK\x01\x02", 0, central)
    path.write_bytes(bytes(raw))


def test_golden_bombs_are_refused_by_their_headers(tiny: tuple[Path, Path], tmp_path: Path
                                                   ) -> None:
    onnx, good = tiny
    # A member whose header is honest about 3.9 GB of input (the 4.2 MB bomb): more
    # than a sane batch, refused before a byte is inflated.
    header = _npy_header((5000, 3, 256, 256))
    big = _rewrite_golden(good, tmp_path / "big.npz", input_0=header + b"\0" * 64)
    _claim_size(big, "input_0.npy", len(header) + 5000 * 3 * 256 * 256 * 4)
    # A header claiming 548 TiB.
    huge = _rewrite_golden(good, tmp_path / "huge.npz",
                           reference_0=_npy_header((2, 75_000_000_000_000)))
    # A header under-stating what the member would inflate to.
    lie = _rewrite_golden(good, tmp_path / "lie.npz")
    _claim_size(lie, "input_0.npy", 4_000_000_000)
    for path, needle in ((big, "not a sane batch"), (huge, "header says float32 [2, 75000000"),
                         (lie, "would inflate to 4000000000 bytes")):
        proc, rss = cli_peak_rss(["check", str(onnx), "--golden", str(path)], timeout=300)
        _one_error_line(proc, needle)
        assert rss < 1 << 30, rss


def test_golden_metadata_of_the_wrong_types(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    onnx, good = tiny
    with zipfile.ZipFile(good) as z:
        meta = json.loads(str(np.load(z.open("meta.npy"))))
    cases = {"seed": "abc", "options": [1, 2, 3], "environment": "abc", "rtol": True,
             "labels": "normal(0,1)", "model": 5}
    for key, value in cases.items():
        path = _rewrite_golden(good, tmp_path / f"{key}.npz",
                               meta=_meta_bytes({**meta, key: value}))
        line = _one_error_line(run_cli_here("check", str(onnx), "--golden", str(path)),
                               "malformed golden metadata")
        assert key in line


def test_deeply_nested_json_is_exit_2(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    path = _rewrite_golden(tiny[1], tmp_path / "deep.npz", meta=_meta_bytes(deep))
    _one_error_line(run_cli_here("check", str(tiny[0]), "--golden", str(path)), "nested too deep")
    shard = tmp_path / "deep.json"
    shard.write_text('{"environment": {}, "models": ' + deep + "}")
    proc = run_cli_here("report", "--from-json", str(shard), "-o", str(tmp_path / "out"))
    _one_error_line(proc, "nested too deep")
    assert not (tmp_path / "out").exists()


def test_a_foreign_golden_file_gets_no_unsafe_advice(tiny: tuple[Path, Path], tmp_path: Path
                                                     ) -> None:
    path = tmp_path / "g.npz"
    path.write_bytes(b"\x80\x04K\x01." + b"junk" * 100)  # a pickle, say
    line = _one_error_line(run_cli_here("check", str(tiny[0]), "--golden", str(path)),
                           "not an .npz archive")
    assert "allow_pickle" not in line and "pickle" not in line.lower()


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` (no pixel data)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr
    chunk += struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    iend = struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND"))
    return b"\x89PNG\r\n\x1a\n" + chunk + iend


def test_decompression_bombs_in_image_and_calibration(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_header(100_000, 100_000))
    _one_error_line(run_cli_here("verify", "resnet18", "--image", str(bomb), "--input-size", "64",
                            "64"), "decompression bomb")
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "bomb.png").write_bytes(bomb.read_bytes())
    out = tmp_path / "out"
    out.mkdir()
    proc = run_cli_here("export", "resnet18", "--precision", "int8", "--calibration", str(photos),
                   "--input-size", "64", "64", "-o", str(out / "r18.onnx"))
    _one_error_line(proc, "decompression bomb")
    assert list(out.iterdir()) == []
    # Between Pillow's warning and error limits: its warning stays off stderr.
    warned = tmp_path / "big.png"
    warned.write_bytes(_png_header(15_000, 15_000))
    line = _one_error_line(run_cli_here("verify", "resnet18", "--image", str(warned),
                                   "--input-size", "64", "64"), "big.png")
    assert "Warning" not in line


def test_one_npy_reader_refuses_a_458_gib_claim(tmp_path: Path) -> None:
    npy = tmp_path / "claim.npy"
    npy.write_bytes(_npy_header((40_000, 3, 1024, 1024)) + b"\0" * 1024)
    out = tmp_path / "out"
    out.mkdir()
    proc = run_cli_here("export", "resnet18", "--precision", "int8", "--calibration", str(npy),
                   "--input-size", "1024", "1024", "-o", str(out / "r18.onnx"))
    _one_error_line(proc, "does not match its header")
    assert list(out.iterdir()) == []
    proc = run_cli_here("verify", "resnet18", "--inputs", str(npy), "--runtimes", "torch,keras")
    _one_error_line(proc, "does not match its header")


def test_inputs_directory_and_impossible_input_size(tmp_path: Path) -> None:
    _one_error_line(run_cli_here("verify", "resnet18", "--inputs", str(tmp_path)), "is a directory")
    line = _one_error_line(run_cli_here("verify", "resnet18", "--input-size", "100000", "100000"),
                           "GiB of activations")
    assert "100000x100000" in line
    _one_error_line(run_cli_here("export", "resnet18", "--input-size", "100000", "100000", "-o",
                            str(tmp_path / "x.onnx")), "GiB of activations")


def test_onnxruntime_warnings_only_with_debug(tmp_path: Path) -> None:
    onnx = write_tiny_onnx(tmp_path / "unused.onnx", unused_initializer=True)
    golden = write_tiny_golden(tmp_path / "g.npz")
    proc = run_cli("check", str(onnx), "--golden", str(golden))
    assert proc.returncode == 0, proc.stderr
    assert "Removing initializer" not in proc.stderr and "\x1b[" not in proc.stderr
    proc = run_cli("--debug", "check", str(onnx), "--golden", str(golden))
    assert proc.returncode == 0 and "Removing initializer" in proc.stderr


@pytest.mark.parametrize(("argv", "needle"), [
    (["verify", "resnet18", "--batch", "x"], "--batch"),
    (["verify"], "Missing argument"),
    (["verify", "resnet18", "--nope"], "No such option"),
    (["convert", "a"], "convert needs a source and a destination"),
])
def test_usage_errors_are_one_line(argv: list[str], needle: str) -> None:
    line = _one_error_line(run_cli_here(*argv), needle)
    assert "arguments" not in line and "╭" not in line


def test_ckpt_is_a_torch_checkpoint_and_nothing_matches_names_no_model(tmp_path: Path) -> None:
    import torch

    from codenn_convert.twins.init import realistic_state

    state = {f"model.{k}": torch.from_numpy(v)
             for k, v in realistic_state("resnet18", seed=0).items()}
    ckpt = tmp_path / "epoch=3.ckpt"
    torch.save({"state_dict": state, "epoch": 3, "optimizer_states": []}, ckpt)
    proc = run_cli_here("identify", str(ckpt))
    assert proc.returncode == 0 and proc.stdout.split() == ["resnet18"], proc.stderr
    foreign = tmp_path / "foreign.pt"
    torch.save({"encoder.weight": torch.zeros(3, 3)}, foreign)
    line = _one_error_line(run_cli_here("identify", str(foreign)), "matches no registered model")
    assert "nearest" not in line and "encoder.weight" in line


def test_torch_pickle_protocol_warning_only_with_debug(tmp_path: Path) -> None:
    import torch

    old = tmp_path / "legacy.pt"
    torch.save({"encoder.weight": torch.zeros(3, 3)}, old, pickle_protocol=5,
               _use_new_zipfile_serialization=False)
    line = _one_error_line(run_cli_here("identify", str(old)), "legacy.pt")
    assert "pickle protocol" not in line
    assert "Detected pickle protocol 5" in run_cli("--debug", "identify", str(old)).stderr
