"""A verdict you can trust (issue 9): hostile and damaged files, non-finite weights, exit
codes, interrupted writes, the package namespace and readable output, through the real CLI."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import shutil
import signal
import struct
import subprocess
import sys
import termios
import time
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from tests.conftest import ROOT, run_cli_here


def _one_line_error(proc: subprocess.CompletedProcess[str], code: int, *needles: str) -> str:
    assert proc.returncode == code, proc.stdout + proc.stderr
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert "\x1b" not in proc.stderr  # no terminal escapes in a pipe
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def resnet18_pth(module_tmp: Path) -> Path:
    from codenn_convert.twins.init import realistic_state

    path = module_tmp / "resnet18.pth"
    torch.save({k: torch.from_numpy(v) for k, v in realistic_state("resnet18").items()}, path)
    return path


def _poisoned(src: Path, dst: Path, value: float) -> Path:
    state = torch.load(src, weights_only=True)
    state["layer2.0.conv1.weight"][0, 0, 0, 0] = value
    torch.save(state, dst)
    return dst


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_nonfinite_checkpoint_is_refused_by_convert_and_export(
        resnet18_pth: Path, tmp_path: Path, value: float) -> None:
    bad = _poisoned(resnet18_pth, tmp_path / "bad.pth", value)
    dst = tmp_path / "out.weights.h5"
    proc = run_cli_here("convert", "resnet18", str(bad), str(dst))
    _one_line_error(proc, 2, "layer2.0.conv1.weight has 1 NaN/Inf value", "--allow-nonfinite")
    onnx_out = tmp_path / "out.onnx"
    proc = run_cli_here("export", "resnet18", "--weights", str(bad), "--input-size", "32", "32",
                   "-o", str(onnx_out))
    _one_line_error(proc, 2, "layer2.0.conv1.weight")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.pth"]  # nothing written


def test_allow_nonfinite_converts_a_broken_file_bit_for_bit(
        resnet18_pth: Path, tmp_path: Path) -> None:
    bad = _poisoned(resnet18_pth, tmp_path / "bad.pth", float("nan"))
    h5 = tmp_path / "bad.weights.h5"
    for src, dst in ((bad, h5), (h5, tmp_path / "back.pth")):
        proc = run_cli_here("convert", "resnet18", str(src), str(dst), "--allow-nonfinite")
        assert proc.returncode == 0, proc.stderr
    back = torch.load(tmp_path / "back.pth", weights_only=True)
    orig = torch.load(bad, weights_only=True)
    assert all(torch.equal(orig[k], back[k]) or (orig[k].isnan() == back[k].isnan()).all()
               for k in orig)
    assert back["layer2.0.conv1.weight"].isnan().sum() == 1


def _sparse_bomb(path: Path, legacy: bool) -> None:
    """A tiny file whose one dataset claims 10^12 float32 values (never written)."""
    with h5py.File(path, "w") as f:
        group = f.create_group("conv1") if legacy else f.create_group("layers/conv1/vars")
        group.create_dataset("0" if not legacy else "kernel:0", shape=(10**6, 10**6),
                             dtype="f4", chunks=(1, 1024))
        if legacy:
            f.attrs["layer_names"] = np.array([b"conv1"])
            group.attrs["weight_names"] = np.array([b"kernel:0"])
        else:
            group.attrs["name"] = "conv1"


@pytest.mark.parametrize("legacy", [False, True], ids=["keras3", "legacy"])
def test_sparse_hdf5_bomb_costs_nothing(tmp_path: Path, legacy: bool) -> None:
    bomb = tmp_path / ("bomb.weights.h5" if not legacy else "bomb.h5")
    _sparse_bomb(bomb, legacy)
    assert bomb.stat().st_size < 1_000_000
    start = time.perf_counter()
    proc = run_cli_here("convert", "resnet18", str(bomb), str(tmp_path / "out.pth"))
    _one_line_error(proc, 2, str(bomb), "refusing to read them")
    assert time.perf_counter() - start < 120
    assert not (tmp_path / "out.pth").exists()


def test_oversized_attribute_is_a_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "names.h5"
    with h5py.File(path, "w", libver="latest") as f:
        # Dense storage: HDF5 keeps attributes over 64 KiB outside the object header.
        f.attrs.create("layer_names", np.full(5_000_000, b"conv1", dtype="S8"))
    proc = run_cli_here("convert", "resnet18", str(path), str(tmp_path / "out.pth"))
    _one_line_error(proc, 2, str(path), "layer_names", "refusing to read")


def test_random_bytes_are_called_damaged_not_dangerous(tmp_path: Path) -> None:
    junk = tmp_path / "random.pth"
    junk.write_bytes(np.random.default_rng(0).bytes(4096))
    line = _one_line_error(run_cli_here("convert", "resnet18", str(junk), str(tmp_path / "o.pth")),
                           2, "not a readable torch checkpoint")
    assert "run code" not in line and "pickle that" not in line
    # A truncated zip archive (a torch file cut short) says so.
    whole = tmp_path / "whole.pth"
    torch.save({"w": torch.ones(1000)}, whole)
    cut = tmp_path / "cut.pth"
    cut.write_bytes(whole.read_bytes()[:2000])
    _one_line_error(run_cli_here("convert", "resnet18", str(cut), str(tmp_path / "o.pth")), 2,
                    "truncated or damaged zip archive")


def test_pickled_module_and_forbidden_global_are_named(tmp_path: Path) -> None:
    module = tmp_path / "module.pth"
    torch.save(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3)), module)
    _one_line_error(run_cli_here("convert", "resnet18", str(module), str(tmp_path / "o.pth")), 2,
                    "whole pickled nn.Module", "save model.state_dict() instead")
    glob = tmp_path / "glob.pth"
    code = ("import datetime, torch\n"
            f"torch.save({{'conv1.weight': datetime.date(2020, 1, 1)}}, {str(glob)!r})\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    _one_line_error(run_cli_here("convert", "resnet18", str(glob), str(tmp_path / "o.pth")), 2,
                    "refused to load", "datetime.date")


def test_unexpected_failure_is_exit_3_not_1(tmp_path: Path) -> None:
    code = (
        "import sys\nimport codenn_convert.convert as c\n"
        "def boom(*a, **k):\n    raise ZeroDivisionError('a bug of ours')\n"
        "c.convert_checkpoint = boom\nfrom codenn_convert.cli import main\n"
        f"sys.argv = ['codenn', 'convert', 'resnet18', 'a.pth', {str(tmp_path / 'b.pth')!r}]\n"
        "main()\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)
    line = _one_line_error(proc, 3, "internal error", "ZeroDivisionError: a bug of ours",
                           "--debug")
    assert line.startswith("internal error")


def test_sigterm_mid_write_leaves_the_old_file_and_no_temp(tmp_path: Path) -> None:
    out = tmp_path / "alexnet.onnx"
    out.write_bytes(b"old export")
    proc = subprocess.Popen(
        [sys.executable, "-m", "codenn_convert", "export", "alexnet", "-o", str(out)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not list(tmp_path.glob(".codenn-partial.*")) and proc.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    assert proc.poll() is None, "the export finished before a temporary file was seen"
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    assert "terminated" in stderr
    assert [p.name for p in tmp_path.iterdir()] == ["alexnet.onnx"]
    assert out.read_bytes() == b"old export"


def test_a_users_models_package_cannot_hide_ours(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "__init__.py").write_text("MINE = True\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    code = ("import models\nassert models.MINE\n"
            "from codenn_convert import list_models, get_spec\n"
            "print(list_models()); print(get_spec('resnet50').family)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "'resnet50'" in proc.stdout and "resnet" in proc.stdout.splitlines()[-1]
    codenn = Path(sys.executable).with_name("codenn")
    listed = subprocess.run([str(codenn), "list"], capture_output=True, text=True,
                            timeout=120, cwd=tmp_path, env=env)
    assert listed.returncode == 0 and "inception_v3" in listed.stdout, listed.stderr


def test_wheel_installs_one_top_level_name(tmp_path: Path) -> None:
    # Built from a copy with one more family folder, which must ship with no packaging edit.
    src = tmp_path / "src"
    for part in ("codenn_convert", "models", "pyproject.toml", "setup.py", "README.md"):
        copy = shutil.copytree if (ROOT / part).is_dir() else shutil.copy
        copy(ROOT / part, src / part, **({"ignore": shutil.ignore_patterns("__pycache__")}
                                         if (ROOT / part).is_dir() else {}))
    (src / "models" / "zz_new_family").mkdir()
    (src / "models" / "zz_new_family" / "__init__.py").write_text('"""A new family."""\n')
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "--no-build-isolation", "-w", str(tmp_path), str(src)],
                   check=True, capture_output=True, timeout=600)
    (wheel,) = tmp_path.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "codenn_convert/models/zz_new_family/__init__.py" in names
    # Every package of the source tree, and the report's package data, are in the wheel.
    packages = {str(f.parent.relative_to(ROOT)).replace("models", "codenn_convert/models", 1)
                if f.parts[len(ROOT.parts)] == "models" else str(f.parent.relative_to(ROOT))
                for f in [*ROOT.glob("codenn_convert/**/__init__.py"),
                          *ROOT.glob("models/**/__init__.py")]}
    assert {p for p in packages if f"{p}/__init__.py" not in names} == set()
    assert {"codenn_convert/report/report.schema.json",
            "codenn_convert/report/template.html.j2"} <= set(names)
    assert {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")} == {
        "codenn_convert"}
    assert "codenn_convert/models/resnet/torch_resnet.py" in names
    assert "codenn_convert/models/common/keras_layers.py" in names


def test_progress_in_a_log_is_one_line_per_stage(resnet18_pth: Path, tmp_path: Path) -> None:
    proc = run_cli_here("convert", "resnet18", str(resnet18_pth), str(tmp_path / "r.weights.h5"))
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"^converting .* -> .*: \d+\.\d s \(total \d+\.\d s\)$", proc.stderr,
                     re.MULTILINE), proc.stderr
    assert "\x1b" not in proc.stderr + proc.stdout


def _run_in_pty(argv: list[str], columns: int, timeout: float) -> tuple[int, str]:
    """Run ``argv`` on a pseudo-terminal ``columns`` wide; its exit code and screen text."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: a terminal of the given width
        fcntl.ioctl(1, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
        os.chdir(ROOT)
        os.environ.update(COLUMNS=str(columns), LINES="50", TERM="xterm")
        os.execv(argv[0], argv)
    chunks, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 1.0)
        if ready:
            try:
                data = os.read(fd, 65536)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
    _, status = os.waitpid(pid, 0)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(chunks).decode("utf8", "replace"))
    return os.waitstatus_to_exitcode(status), text


def test_verify_table_keeps_numbers_whole_at_80_columns() -> None:
    code, text = _run_in_pty([sys.executable, "-m", "codenn_convert", "verify", "resnet18",
                              "--input-size", "32", "32", "--batch", "1"], 80, 600)
    assert code == 0, text
    rows = [ln for ln in text.splitlines() if " vs " in ln and ln.rstrip().endswith("pass")]
    assert len(rows) == 6, text
    assert "…" not in text
    for row in rows:
        assert len(row.rstrip()) <= 80
        # Every max-rel number is whole: mantissa and a two-digit exponent.
        assert re.search(r"\d\.\d\de-\d\d", row), row


def test_safetensors_header_claims_are_checked_before_reading(tmp_path: Path) -> None:
    import json
    import struct

    header = json.dumps({"conv1.weight": {"dtype": "F32", "shape": [10**6, 10**6],
                                          "data_offsets": [0, 4 * 10**12]}}).encode()
    bomb = tmp_path / "bomb.safetensors"
    bomb.write_bytes(struct.pack("<Q", len(header)) + header + bytes(16))
    _one_line_error(run_cli_here("convert", "resnet18", str(bomb), str(tmp_path / "o.weights.h5")),
                    2, str(bomb), "not a readable safetensors file")
