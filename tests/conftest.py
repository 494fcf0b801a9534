"""Shared fixtures. Tests use small inputs; full-size parity is marked ``parity``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# xdist runs one worker per core. Left alone, torch and TensorFlow each size their thread
# pools to every core, in every worker: two busy threads per core, whose spinning waits burn
# CPU-seconds (measured on the contract test: a fifth of its CPU time, and of its wall time).
# Each worker gets its share of the cores, before numpy or a framework sizes a pool.
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    _share = len(os.sched_getaffinity(0)) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
    for _var in ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
        os.environ.setdefault(_var, str(max(1, _share)))

import numpy as np  # noqa: E402
import pytest  # noqa: E402

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
# The width run_cli gives its subprocesses; rich's stderr console reads it when the CLI is
# imported, so run_cli_here's output is laid out as theirs is.
os.environ.setdefault("COLUMNS", "200")

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run ``python -m codenn_convert ARGS`` in a real subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "codenn_convert", *args],
        capture_output=True, text=True, timeout=timeout, cwd=ROOT,
        env={**os.environ, "COLUMNS": "200"},
    )


def run_cli_here(*args: str) -> subprocess.CompletedProcess[str]:
    """``codenn ARGS`` in this process, as :func:`run_cli` reports it (exit status, stdout,
    stderr). A subprocess imports torch and TensorFlow again: about 4.6 CPU-seconds a call,
    a third of the suite's CPU. For tests of what a command does; tests of the process itself
    (signals, memory, imports, C-level output, a user's ``sys.path``) keep :func:`run_cli`."""
    import contextlib
    import io

    from codenn_convert.cli.commands import app, one_line, print_error
    from codenn_convert.cli.usage import run

    # Text streams over bytes, as a pipe's are: `--json -` writes to sys.stdout.buffer.
    streams = [io.TextIOWrapper(io.BytesIO(), encoding="utf-8") for _ in range(2)]
    argv, code = sys.argv, 0
    sys.argv = ["codenn", *args]
    try:
        with contextlib.redirect_stdout(streams[0]), contextlib.redirect_stderr(streams[1]):
            run(app, "codenn", print_error, one_line)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = argv
    out, err = (s.flush() or s.buffer.getvalue().decode() for s in streams)
    return subprocess.CompletedProcess(["codenn", *args], code, out, err)


def cli_peak_rss(argv: list[str], timeout: float = 600
                 ) -> tuple[subprocess.CompletedProcess[str], int]:
    """Run ``codenn ARGV`` in a fresh interpreter; return it and its own peak RSS in bytes.

    The peak is the process's ``VmHWM``: ``getrusage``'s ``ru_maxrss`` survives ``exec`` on
    Linux, so a child of a 5 GB pytest worker would report the worker's 5 GB as its own.
    """
    code = ("import runpy, sys\n"
            f"sys.argv = ['codenn', *{argv!r}]\n"
            "try:\n    runpy.run_module('codenn_convert', run_name='__main__')\n"
            "except SystemExit as e:\n    code = e.code\n"
            "hwm = [ln for ln in open('/proc/self/status') if ln.startswith('VmHWM:')]\n"
            "print('RSS', hwm[0].split()[1], file=sys.stderr)\n"
            "sys.exit(code)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=timeout)
    lines = proc.stderr.strip().splitlines()
    proc.stderr = "\n".join(lines[:-1]) + "\n"
    return proc, int(lines[-1].split()[1]) * 1024


def heavy_imports(argv: list[str], watched: tuple[str, ...]) -> list[str]:
    """Run ``codenn ARGV`` in a fresh interpreter (it must exit 0); the ``watched`` modules
    it imported."""
    code = (
        "import json, sys\nfrom codenn_convert.cli import app\n"
        f"sys.argv = ['codenn', *{argv!r}]\n"
        "try:\n    app()\nexcept SystemExit as e:\n    assert e.code in (0, None), e.code\n"
        f"print(json.dumps(sorted(m for m in {watched!r} if m in sys.modules)))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def module_tmp(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    """A folder for the files one module shares, removed when the module is done.

    Full-size models are 100-550 MB a file: kept for the whole session (pytest's default),
    one run of the suite would hold ~20 GB of a disk that CI shares.
    """
    path = tmp_path_factory.mktemp(request.module.__name__.rpartition(".")[2])
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def alexnet_state() -> dict[str, np.ndarray]:
    from codenn_convert.twins.init import realistic_state

    return realistic_state("alexnet", seed=0)


#: The conv whose channel 7 :func:`write_faulty_alexnet` puts 2% off (AlexNet's second).
FAULT = "features.3"


def write_faulty_alexnet(folder: Path, input_size: tuple[int, int]) -> None:
    """AlexNet (seed 2) in ``folder``: ``clean.safetensors``, and ``bad.safetensors``,
    ``bad.weights.h5``, ``bad.onnx`` with one output channel of :data:`FAULT` 2% off."""
    from codenn_convert.checkpoints import files as checkpoint
    from codenn_convert.convert import convert_checkpoint
    from codenn_convert.export.onnx_export import export_onnx
    from codenn_convert.twins.init import realistic_state

    state = realistic_state("alexnet", seed=2)
    checkpoint.save_torch_state(state, folder / "clean.safetensors")
    bad = {k: v.copy() for k, v in state.items()}
    bad[f"{FAULT}.weight"][7] *= 1.02
    checkpoint.save_torch_state(bad, folder / "bad.safetensors")
    convert_checkpoint("alexnet", folder / "bad.safetensors", folder / "bad.weights.h5")
    export_onnx("alexnet", "torch", folder / "bad.onnx", weights=folder / "bad.safetensors",
                input_size=input_size)


def max_rel(a: np.ndarray, b: np.ndarray) -> float:
    """max|a-b| / max|a|, the project's float32 parity measure."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(a)))


def check_onnx_interface(path: Path, size: tuple[int, int], classes: int) -> None:
    """The documented interface of our exports: one float32 input ``input`` ``[N, 3, H, W]``
    and one output ``logits`` ``[N, classes]``, ``N`` symbolic; ``codenn.precision`` fp32."""
    import onnx

    from codenn_convert.export.metadata import META_PRECISION, read_metadata
    from codenn_convert.interface import INPUT_NAME, OUTPUT_NAME

    graph = onnx.load(str(path), load_external_data=False).graph

    def dims(value: Any) -> list[int | str]:
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

    (inp,), (out,) = graph.input, graph.output
    assert (inp.name, out.name) == (INPUT_NAME, OUTPUT_NAME)
    float32 = onnx.TensorProto.FLOAT
    assert inp.type.tensor_type.elem_type == out.type.tensor_type.elem_type == float32
    n, *rest = dims(inp)
    assert isinstance(n, str) and rest == [3, *size], dims(inp)
    assert isinstance(dims(out)[0], str) and dims(out)[1:] == [classes], dims(out)
    assert read_metadata(path)[META_PRECISION] == "fp32"
