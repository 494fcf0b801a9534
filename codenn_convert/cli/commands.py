"""The ``codenn`` command line: a thin layer over the library.

Exit codes: 0 ok, 1 parity failure, 2 usage or input error (one line on stderr; the
traceback only with ``--debug``). torch and TensorFlow are imported inside the commands
that need them, so ``codenn --help`` and ``codenn list`` stay instant.
"""

from __future__ import annotations

import functools
import json
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.table import Table

from codenn_convert.checkpoints.atomic import disk_full
from codenn_convert.cli.options import (
    MODEL_HELP,
    AllowNonfinite,
    Batch,
    InputSize,
    JsonPath,
    MinCosine,
    MinSqnr,
    MinTop1,
    MinTop5,
    NpyInputs,
    OnnxFiles,
    Options,
    Photos,
    Precisions,
    Rtol,
    Runtimes,
    Seed,
    TfliteFiles,
    lossy_floors,
    model_name,
    parse_runtimes,
    split_list,
)
from codenn_convert.cli.output import (
    check_outputs,
    err,
    one_line,
    out,
    print_error,
    print_notes,
    print_result,
    progress,
    results_to_stdout,
)
from codenn_convert.errors import CodennError

F = TypeVar("F", bound=Callable[..., Any])

app = typer.Typer(
    name="codenn",
    help="Exact CNN checkpoint conversion between PyTorch, Keras 3 and ONNX, with a "
    "four-runtime parity verifier.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
_STATE = {"debug": False}
#: Exit code of an unexpected failure (0 ok, 1 parity failure, 2 bad input).
INTERNAL_ERROR = 3


def _quiet_frameworks() -> None:
    # TF's C++ start-up chatter would bury our one-line messages.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


def handled(fn: F) -> F:
    """Library errors -> one stderr line and exit 2; anything unexpected -> one line and exit
    3 (never 1, which means a parity failure). Tracebacks only with --debug."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _quiet_frameworks()
        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except CodennError as exc:
            if _STATE["debug"]:
                raise
            print_error(f"error: {one_line(str(exc))}")
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            print_error("interrupted; no partial output was left")
            raise typer.Exit(130) from None
        except Terminated:
            print_error("terminated; no partial output was left")
            raise typer.Exit(128 + signal.SIGTERM) from None
        except Exception as exc:  # MemoryError included: it is a bug if our checks let it by
            if _STATE["debug"]:
                raise
            full = disk_full(exc)  # a full disk, wherever a library hit it, is not our bug
            if full is not None:
                print_error(f"error: {full}")
                raise typer.Exit(full.exit_code) from None
            print_error(f"internal error: {type(exc).__name__}: {one_line(str(exc))} (run with "
                   f"--debug for the traceback)")
            raise typer.Exit(INTERNAL_ERROR) from None

    return wrapper  # type: ignore[return-value]


class Terminated(BaseException):
    """SIGTERM (CI cancellation, ``timeout``, ``docker stop``), raised in the main thread so
    that every ``finally`` runs: partial outputs are removed and old files stay intact."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated()


def _show_version(value: bool) -> None:
    if value:
        from codenn_convert import __version__

        out.print(f"codenn-convert {__version__}", highlight=False)
        raise typer.Exit(0)


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
    version: Annotated[bool, typer.Option(
        "--version", callback=_show_version, is_eager=True, help="Show the version and exit.")
    ] = False,
) -> None:
    from codenn_convert.thirdparty import quiet

    _STATE["debug"] = debug
    results_to_stdout()
    quiet(not debug)  # third-party warnings only with --debug
    print_notes()


@app.command("list")
@handled
def list_cmd(
    names_json: Annotated[bool, typer.Option(
        "--json", help="Print the model names as one JSON list (e.g. for a CI matrix).")
    ] = False,
) -> None:
    """List models, parameter counts and default input sizes."""
    from codenn_convert.registry import get_spec, list_models

    if names_json:
        print(json.dumps(list_models()))
        return
    table = Table("model", "family", "parameters", "input", "default set")
    for name in list_models():
        s = get_spec(name)
        table.add_row(name, s.family, f"{s.num_params:,}", f"{s.input_size[0]}x{s.input_size[1]}",
                      "yes" if s.default else "")
    out.print(table)


@app.command()
@handled
def convert(
    args: Annotated[list[str], typer.Argument(
        metavar="[MODEL] SRC DST",
        help="Model name (see `codenn list`; identified from SRC when left out) or your own "
        "torch model as path/to/file.py:function (imports and runs it), source "
        "checkpoint (.pt/.pth/.safetensors/.weights.h5/.h5), destination (format from its "
        "extension).")],
    option: Options = None,
    allow_nonfinite: AllowNonfinite = False,
    input_size: Annotated[tuple[int, int] | None, typer.Option(
        "--input-size", metavar="H W", help="Your own model's twin is built for this size "
        "(default 224 224); registered models do not need it.")] = None,
) -> None:
    """Convert a checkpoint between torch and Keras layouts (direction from the extensions).
    MODEL may be your own torch model as path/to/file.py:function or
    package.module:function (this imports and runs that code)."""
    from codenn_convert.convert import convert_checkpoint
    from codenn_convert.errors import UsageError
    from codenn_convert.registry import parse_options

    if len(args) not in (2, 3):
        given = " ".join(args)
        raise UsageError(
            f"convert needs a source and a destination: codenn convert [MODEL] SRC DST (given: "
            f"{given!r}); e.g. codenn convert resnet50.pth resnet50.weights.h5"
            if len(args) < 2 else f"convert takes [MODEL] SRC DST, not {len(args)} paths: "
            f"{given!r}")
    model, src, dst = (None, *args) if len(args) == 2 else args
    model = model_name(model, input_size, registered_size=False) if model else (
        model_name("", input_size, registered_size=False) or None)
    options = parse_options(model, option or []) if model else _raw_options(option or [])
    with progress(f"converting {src} -> {dst}"):
        res = convert_checkpoint(model, Path(src), Path(dst), options=options,
                                 allow_nonfinite=allow_nonfinite)
    out.print(f"wrote {res.dst} ({res.model}, {res.dst_layout} layout, {res.tensors} tensors) "
              f"in {res.seconds:.2f} s", highlight=False)


def _raw_options(items: list[str]) -> dict[str, Any]:
    # Without a model name the options are checked once the model is identified.
    from codenn_convert.registry import parse_options_text

    return parse_options_text(items)


@app.command()
@handled
def identify(
    ckpt: Annotated[Path, typer.Argument(help="Checkpoint, either layout.")],
    model: Annotated[list[str] | None, typer.Option(
        "--model", metavar="MODEL", help="Try only this model (repeatable); your own as "
        "path/to/file.py:function or package.module:function (imports and runs it).")
    ] = None,
) -> None:
    """Name the registered model(s) whose keys and shapes the checkpoint matches (with the
    options the file determines); none: an error naming the nearest model's mismatches."""
    from codenn_convert.checkpoints.identify import describe_none
    from codenn_convert.checkpoints.identify import identify as run_identify
    from codenn_convert.errors import CheckpointError

    found = run_identify(ckpt, [model_name(m) for m in model or []] or None)
    matches = [c for c in found if c.matches]
    if not matches:
        raise CheckpointError(describe_none(ckpt, found, limit=5))
    for c in matches:
        out.print(c.describe(), highlight=False)


@app.command()
@handled
def export(
    model: Annotated[str, typer.Argument(help=MODEL_HELP)],
    output: Annotated[Path, typer.Option(
        "-o", "--output", help="Output .onnx or .tflite path (the suffix picks the format).")],
    framework: Annotated[str, typer.Option("--framework", help="torch or keras.")] = "torch",
    weights: Annotated[Path | None, typer.Option("--weights", help="Checkpoint, either layout.")
                       ] = None,
    input_size: InputSize = None,
    opset: Annotated[int | None, typer.Option("--opset", help="ONNX opset (default 18).")
                     ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the random weights.")] = 0,
    option: Options = None,
    allow_nonfinite: AllowNonfinite = False,
    precision: Annotated[str, typer.Option(
        "--precision", help="fp32, fp16 (float16 inside, float32 IO) or int8 (static QDQ, "
        "per-channel weights).")] = "fp32",
    calibration: Annotated[Path | None, typer.Option(
        "--calibration", metavar="FILE.npy|DIR",
        help="int8 calibration data: float32 NCHW .npy or a directory of images (default: "
        "seeded synthetic images, a stand-in for real data).")] = None,
    fmt: Annotated[str | None, typer.Option(
        "--format", metavar="onnx|tflite", help="File format (default: from the output's "
        "suffix).")] = None,
    layout: Annotated[str | None, typer.Option(
        "--layout", metavar="nhwc|nchw", help=".tflite input layout (default nhwc, LiteRT's "
        "native one); ONNX is always nchw.")] = None,
) -> None:
    """Export the torch or Keras twin to ONNX (input `input` NCHW, output `logits`), or the
    Keras twin to LiteRT (.tflite: float32 NHWC input, resizable batch)."""
    from codenn_convert.export.formats import FormatOptions, export_file
    from codenn_convert.registry import parse_options

    model = model_name(model, input_size)
    options = parse_options(model, option or [])
    with progress(f"exporting {model} ({framework}) to {output}"):
        path = export_file(model, output, fmt=fmt, extra=FormatOptions(opset, layout),
                           framework=framework, weights=weights, input_size=input_size,
                           seed=seed, options=options, allow_nonfinite=allow_nonfinite,
                           precision=precision, calibration=calibration)
    out.print(f"wrote {path}", highlight=False)


def _finish(results: list[Any], json_path: Path | None, *, show_layers: bool = False) -> None:
    """Print each result, write the JSON report, exit 0 (all passed) or 1."""
    from codenn_convert import report as rep

    for result in results:
        print_result(result, show_layers=show_layers)
    data = rep.build_report(results)
    if json_path is not None:
        rep.write_json(data, json_path)
    raise typer.Exit(0 if rep.report_passed(data) else 1)


@app.command()
@handled
def verify(
    model: Annotated[str, typer.Argument(help=MODEL_HELP)],
    weights: Annotated[Path | None, typer.Option(
        "--weights", help="Checkpoint (either layout) feeding both twins.")] = None,
    torch_weights: Annotated[Path | None, typer.Option(
        "--torch-weights", help="Checkpoint for the torch side (torch, onnx-torch).")] = None,
    keras_weights: Annotated[Path | None, typer.Option(
        "--keras-weights", help="Checkpoint for the Keras side (keras, onnx-keras).")] = None,
    onnx: OnnxFiles = None,
    tflite: TfliteFiles = None,
    batch: Batch = 2,
    seed: Seed = 0,
    input_size: InputSize = None,
    image: Photos = None,
    inputs: NpyInputs = None,
    runtimes: Runtimes = None,
    layers: Annotated[bool, typer.Option(
        "--layers", help="Compare every mapped layer of every pair (failing pairs always "
        "are).")] = False,
    json_path: JsonPath = None,
    save_golden: Annotated[Path | None, typer.Option(
        "--save-golden", metavar="G.npz",
        help="Record inputs, torch and float64 logits for `codenn check`.")] = None,
    keep_onnx: Annotated[Path | None, typer.Option(
        "--keep-onnx", help="Keep our exports (ONNX, .tflite) in this directory.")] = None,
    rtol: Rtol = None,
    option: Options = None,
    precision: Precisions = None,
    min_sqnr: MinSqnr = None,
    min_cosine: MinCosine = None,
    min_top1: MinTop1 = None,
    min_top5: MinTop5 = None,
) -> None:
    """Run the same inputs through torch, keras, onnx-torch, onnx-keras (and given ONNX
    files); compare all pairs and name the first divergent layer of a failing one. fp16/int8
    runtimes (--precision, or a given reduced-precision file) are judged by SQNR, cosine and
    top-k against their floors, with per-layer SQNR."""
    from codenn_convert.registry import parse_options
    from codenn_convert.verification.options import VerifyOptions
    from codenn_convert.verification.run import verify_inputs

    model = model_name(model, input_size)
    config = VerifyOptions(
        weights=weights, torch_weights=torch_weights, keras_weights=keras_weights,
        onnx=onnx or (), tflite=tflite or (), batch=batch, seed=seed, input_size=input_size,
        runtimes=parse_runtimes(runtimes), rtol=rtol, layers=layers, images=image or (),
        inputs=inputs or (), options=parse_options(model, option or []), work_dir=keep_onnx,
        save_golden=save_golden, precisions=split_list(precision),
        thresholds=lossy_floors(min_sqnr, min_cosine, min_top1, min_top5))
    config.check()
    check_outputs(json_path, keep_onnx=keep_onnx)
    with progress(f"verifying {model}") as say:
        results = verify_inputs(model, config, progress=say)
    if save_golden is not None and not all(r.passed for r in results):
        err.print(f"golden file not written: {model} failed verification", highlight=False)
    _finish(results, json_path, show_layers=layers)


@app.command()
@handled
def check(
    onnx_file: Annotated[Path, typer.Argument(
        metavar="MODEL.onnx|MODEL.tflite", help="ONNX or LiteRT file to check.")],
    golden: Annotated[Path, typer.Option("--golden", metavar="G.npz",
                                         help="Golden file from `codenn verify --save-golden`.")],
    rtol: Rtol = None,
    json_path: JsonPath = None,
    min_sqnr: MinSqnr = None,
    min_cosine: MinCosine = None,
    min_top1: MinTop1 = None,
    min_top5: MinTop5 = None,
) -> None:
    """Check an ONNX file (in onnxruntime) or a LiteRT file (in ai_edge_litert) against a
    golden file, with no torch and no TensorFlow. A float32 file is held to --rtol; an
    fp16/int8 one (detected from its graph or tensor types) to its precision's floors, as
    verify judges it."""
    from codenn_convert.verification.golden import check_onnx

    check_outputs(json_path)
    floors = lossy_floors(min_sqnr, min_cosine, min_top1, min_top5)
    _finish(check_onnx(onnx_file, golden, rtol=rtol, thresholds=floors), json_path)


@app.command()
@handled
def report(
    models: Annotated[list[str] | None, typer.Argument(
        help="Models (default: the default set; your own as path/to/file.py:function, which "
        "imports and runs it), or with --from-json the JSON files.")] = None,
    all_models: Annotated[bool, typer.Option("--all", help="Every registered variant.")] = False,
    from_json: Annotated[bool, typer.Option(
        "--from-json", help="Render the reports from `verify --json` files (e.g. CI shards) "
        "instead of running models.")] = False,
    out_dir: Annotated[Path, typer.Option("-o", "--out", help="Report directory.")] = Path(
        "reports"),
    batch: Batch = 2,
    seed: Seed = 0,
    layers: Annotated[bool, typer.Option(
        "--layers/--no-layers", help="Per-layer errors of torch vs keras for the plots "
        "(failing pairs are localised either way).")] = True,
    precision: Precisions = None,
    runtimes: Runtimes = None,
) -> None:
    """Verify a set of models and write parity.json, parity.md, parity.html and junit.xml."""
    from codenn_convert import report as rep
    from codenn_convert.checkpoints.targets import check_directory
    from codenn_convert.verification.options import VerifyOptions

    if all_models and (models or from_json):
        raise CodennError("give model names, --all or --from-json FILES, not two of them")
    if from_json and (precision or runtimes):
        raise CodennError("--precision and --runtimes run models; --from-json only renders "
                          "what was run")
    check_directory(out_dir, "report directory")
    if from_json:
        data = rep.merge_reports(models or [])
    else:
        config = VerifyOptions(batch=batch, seed=seed, precisions=split_list(precision),
                               runtimes=parse_runtimes(runtimes),
                               layers=[("torch", "keras")] if layers else False)
        config.check()
        data = rep.build_report(_verify_set(models, all_models, config))
    for path in rep.write_reports(data, out_dir):
        out.print(f"wrote {path}", highlight=False)
    raise typer.Exit(0 if rep.report_passed(data) else 1)


def _verify_set(models: list[str] | None, all_models: bool, config: Any) -> list[Any]:
    """Verify the chosen models, printing each result as it comes; progress as a spinner on
    a terminal, as one timed line per stage in a log."""
    from codenn_convert.registry import list_models
    from codenn_convert.verification.run import verify_many

    names = list_models() if all_models else (
        [model_name(m) for m in models or []] or list_models(default_only=True))
    finished = [0]

    def done(result: Any) -> None:
        print_result(result)
        finished[0] += 1

    with progress(f"parity of {len(names)} models") as say:
        return verify_many(names, config, on_result=done, progress=lambda msg: say(
            f"[{min(finished[0] + 1, len(names))}/{len(names)}] {msg}"))


def main() -> None:
    """Console-script entry point; a usage error is one line, as any bad input."""
    from codenn_convert.cli.usage import run

    signal.signal(signal.SIGTERM, _on_sigterm)
    run(app, "codenn", print_error, one_line)

