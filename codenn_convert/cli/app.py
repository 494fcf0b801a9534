"""The ``codenn`` command line: a thin layer over the library.

Exit codes: 0 ok, 1 parity failure, 2 usage or input error (one line on stderr; the
traceback only with ``--debug``). torch and TensorFlow are imported inside the commands
that need them, so ``codenn --help`` and ``codenn list`` stay instant.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich import box
from rich.console import Console
from rich.table import Column, Table

from codenn_convert.errors import CodennError, disk_full

F = TypeVar("F", bound=Callable[..., Any])

app = typer.Typer(
    name="codenn",
    help="Exact CNN checkpoint conversion between PyTorch, Keras 3 and ONNX, with a "
    "four-runtime parity verifier.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Rich assumes 80 columns when not on a terminal; CI logs are wider, and numbers must not be
# truncated there.
out = Console(width=None if sys.stdout.isatty() else 120)
err = Console(stderr=True)
_STATE = {"debug": False}
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
#: Exit code of an unexpected failure (0 ok, 1 parity failure, 2 bad input).
INTERNAL_ERROR = 3

Options = Annotated[
    list[str] | None,
    typer.Option("--option", metavar="KEY=VALUE",
                 help="Builder option for both twins, e.g. transform_input=true; repeatable."),
]
AllowNonfinite = Annotated[
    bool,
    typer.Option("--allow-nonfinite", help="Go on with NaN/Inf weights (to move a broken "
                 "file for debugging); refused by default."),
]
InputSize = Annotated[
    tuple[int, int] | None,
    typer.Option("--input-size", metavar="H W", help="Spatial input size (default: model's)."),
]

JsonPath = Annotated[Path | None, typer.Option("--json", help="Write the JSON report here.")]
Rtol = Annotated[float | None, typer.Option(
    "--rtol", help="Tolerance on max rel error (default: the model's or golden file's, 1e-5 "
    "for float32).")]
# Options of verify (and of report, where they make sense), declared once.
Batch = Annotated[int, typer.Option("--batch", min=1, help="Batch size.")]
Seed = Annotated[int, typer.Option("--seed", help="Seed of inputs and random weights.")]
OnnxFiles = Annotated[list[Path] | None, typer.Option(
    "--onnx", metavar="FILE.onnx",
    help="ONNX file (NCHW or NHWC input) to compare too, as runtime onnx:<file name>; "
    "repeatable.")]
Photos = Annotated[list[Path] | None, typer.Option(
    "--image", metavar="PHOTO",
    help="Also check on this photo (ImageNet pre-processing); repeatable.")]
NpyInputs = Annotated[list[Path] | None, typer.Option(
    "--inputs", metavar="FILE.npy",
    help="Also check on this float32 NCHW batch [N, 3, H, W] (H, W set the input size); "
    "repeatable.")]
Runtimes = Annotated[str | None, typer.Option(
    "--runtimes", metavar="LIST",
    help="Comma-separated subset of torch,keras,onnx-torch,onnx-keras (default: all).")]
Precisions = Annotated[list[str] | None, typer.Option(
    "--precision", metavar="fp16|int8",
    help="Also run our ONNX exports converted to this precision (onnx-torch-fp16, ...), "
    "judged by lossy criteria and per-layer SQNR; repeatable or comma-separated.")]

# Floors of lossy (fp16/int8) pairs, for verify and check alike.
MinSqnr = Annotated[float | None, typer.Option(
    "--min-sqnr", metavar="DB", help="Lossy pairs: lowest SQNR of the logits in dB "
    "(default per precision).")]
MinCosine = Annotated[float | None, typer.Option(
    "--min-cosine", help="Lossy pairs: lowest cosine similarity.")]
MinTop1 = Annotated[float | None, typer.Option(
    "--min-top1", help="Lossy pairs: lowest top-1 agreement (fraction of samples).")]
MinTop5 = Annotated[float | None, typer.Option(
    "--min-top5", help="Lossy pairs: lowest mean top-5 overlap.")]


def _floors(min_sqnr: float | None, min_cosine: float | None, min_top1: float | None,
            min_top5: float | None) -> dict[str, float]:
    """The lossy floors given on the command line, as LossyThresholds overrides."""
    given = {"min_sqnr_db": min_sqnr, "min_cosine": min_cosine, "min_top1": min_top1,
             "min_top5": min_top5}
    return {k: v for k, v in given.items() if v is not None}


def _quiet_frameworks() -> None:
    # TF's C++ start-up chatter would bury our one-line messages.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


def _one_line(text: str) -> str:
    """A message's first line, whole, without terminal escapes (logs are often pipes)."""
    text = _ANSI.sub("", str(text)).strip()
    return text.splitlines()[0] if text else ""


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
            _error(f"error: {_one_line(str(exc))}")
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            _error("interrupted; no partial output was left")
            raise typer.Exit(130) from None
        except Terminated:
            _error("terminated; no partial output was left")
            raise typer.Exit(128 + signal.SIGTERM) from None
        except Exception as exc:  # MemoryError included: it is a bug if our checks let it by
            if _STATE["debug"]:
                raise
            full = disk_full(exc)  # a full disk, wherever a library hit it, is not our bug
            if full is not None:
                _error(f"error: {full}")
                raise typer.Exit(full.exit_code) from None
            _error(f"internal error: {type(exc).__name__}: {_one_line(str(exc))} (run with "
                   f"--debug for the traceback)")
            raise typer.Exit(INTERNAL_ERROR) from None

    return wrapper  # type: ignore[return-value]


def _error(message: str) -> None:
    err.print(message, highlight=False, markup=False, soft_wrap=True)


@contextlib.contextmanager
def _progress(title: str) -> Iterator[Callable[[str], None]]:
    """Yield ``say(stage)``. On a terminal, a spinner shows the current stage; in a log (CI),
    each finished stage is one plain line with its elapsed time, so the log shows where the
    time went."""
    if err.is_terminal:
        with err.status(title) as status:
            yield lambda msg: status.update(msg)
        return
    start = time.perf_counter()
    stage = [title, start]

    def say(msg: str) -> None:
        now = time.perf_counter()
        if stage[0] != title or now - stage[1] >= 0.05:  # the title alone is no stage
            _error(f"{stage[0]}: {now - stage[1]:.1f} s")
        stage[:] = [msg, now]

    yield say
    now = time.perf_counter()
    _error(f"{stage[0]}: {now - stage[1]:.1f} s (total {now - start:.1f} s)")


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
    quiet(not debug)  # third-party warnings only with --debug
    _print_notes()


class _NoteHandler(logging.Handler):
    """Library notes (``stripped prefix 'module.' from 320 keys``) as ``note:`` lines."""

    def emit(self, record: logging.LogRecord) -> None:
        err.print(f"note: {record.getMessage()}", highlight=False, markup=False,
                  soft_wrap=True)


def _print_notes() -> None:
    logger = logging.getLogger("codenn_convert.notes")
    if not any(isinstance(h, _NoteHandler) for h in logger.handlers):
        logger.addHandler(_NoteHandler())
    logger.setLevel(logging.INFO)
    logger.propagate = False


@app.command("list")
@handled
def list_cmd() -> None:
    """List models, parameter counts and default input sizes."""
    from codenn_convert.registry import get_spec, list_models

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
        help="Model name (see `codenn list`; identified from SRC when left out), source "
        "checkpoint (.pt/.pth/.safetensors/.weights.h5/.h5), destination (format from its "
        "extension).")],
    option: Options = None,
    allow_nonfinite: AllowNonfinite = False,
) -> None:
    """Convert a checkpoint between torch and Keras layouts (direction from the extensions)."""
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
    options = parse_options(model, option or []) if model else _raw_options(option or [])
    with _progress(f"converting {src} -> {dst}"):
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
) -> None:
    """Name the registered model(s) whose keys and shapes the checkpoint matches (with the
    options the file determines); none: an error naming the nearest model's mismatches."""
    from codenn_convert.checkpoints.identify import describe_none
    from codenn_convert.checkpoints.identify import identify as run_identify
    from codenn_convert.errors import CheckpointError

    found = run_identify(ckpt)
    matches = [c for c in found if c.matches]
    if not matches:
        raise CheckpointError(describe_none(ckpt, found, limit=5))
    for c in matches:
        out.print(c.describe(), highlight=False)


@app.command()
@handled
def export(
    model: Annotated[str, typer.Argument(help="Model name.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Output .onnx path.")],
    framework: Annotated[str, typer.Option("--framework", help="torch or keras.")] = "torch",
    weights: Annotated[Path | None, typer.Option("--weights", help="Checkpoint, either layout.")
                       ] = None,
    input_size: InputSize = None,
    opset: Annotated[int, typer.Option("--opset", help="ONNX opset.")] = 18,
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
) -> None:
    """Export the torch or Keras twin to ONNX (input `input` NCHW, output `logits`)."""
    from codenn_convert.export.onnx_export import export_onnx
    from codenn_convert.registry import parse_options

    options = parse_options(model, option or [])
    with _progress(f"exporting {model} ({framework}) to {output}"):
        path = export_onnx(model, framework, output, weights=weights,  # type: ignore[arg-type]
                           input_size=input_size, opset=opset, seed=seed, options=options,
                           allow_nonfinite=allow_nonfinite,
                           precision=precision, calibration=calibration)
    out.print(f"wrote {path}", highlight=False)


#: Columns a narrow terminal drops first, whole, so that no number is ever cut.
_DROPPABLE = ("top-5", "cosine", "top-1", "max abs", "tolerance")


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _result_table(result: Any) -> Table:
    """The pairs of one result as a table as wide as the console allows: low-value columns
    are dropped whole, never truncated. The divergent layer joins the status when it fits
    (the line under the table names it either way)."""
    inputs = "" if result.inputs == "normal(0,1)" else f" ({result.inputs})"
    rows = [{"pair": f"{p.a} vs {p.b}", "max abs": _fmt(p.max_abs, ".2e"),
             "max rel": _fmt(p.max_rel, ".2e"), "tolerance": _fmt(p.tolerance, ".2e"),
             "cosine": _fmt(p.cosine, ".6f"),
             "top-1": _fmt(p.top1, ".2f"), "top-5": _fmt(p.top5, ".2f"),
             "status": "pass" if p.passed else "FAIL",
             "at": (f" ({p.lossy.precision} criteria)" if p.lossy is not None else "")
             + (f" at {p.first_divergent_layer}" if p.first_divergent_layer else "")
             + (f" ({p.farther} farther from float64)" if p.farther else "")}
            for p in result.pairs]
    headers = ["pair", "max abs", "max rel", "tolerance", "cosine", "top-1", "top-5", "status"]
    width = {h: max([len(h)] + [len(r[h]) for r in rows]) for h in headers}
    drop = list(_DROPPABLE)

    def needed() -> int:  # 3 per column: padding and the gap between columns
        return sum(width[h] + 3 for h in headers) + 1

    while needed() > out.width and drop:
        headers.remove(drop.pop(0))
    at_width = max([width["status"]] + [len(r["status"] + r["at"]) for r in rows])
    with_layer = needed() - width["status"] + at_width <= out.width
    table = Table(*(Column(h, no_wrap=True) for h in headers), box=box.SIMPLE_HEAD,
                  title=f"{result.model} {'x'.join(map(str, result.input_shape))}{inputs}")
    for row in rows:
        colour = "green" if row["status"] == "pass" else "red"
        row["status"] = f"[{colour}]{row['status']}[/]" + (row["at"] if with_layer else "")
        table.add_row(*(row[h] for h in headers))
    return table


def _print_result(result: Any, *, show_layers: bool = False) -> None:
    table = _result_table(result)
    out.print(table)
    if result.error_vs_float64:
        out.print("error vs float64: " + ", ".join(
            f"{k} {_fmt(v, '.2e')}" for k, v in result.error_vs_float64.items()), highlight=False)
    if result.float32_floor is not None:
        tol = max([p.tolerance for p in result.pairs if p.tolerance is not None] + [result.rtol])
        out.print(f"float32 floor {result.float32_floor:.2e} (the reference's own distance to "
                  f"float64): float32 pairs pass at max rel <= {tol:.2e} (max of rtol "
                  f"{result.rtol:g} and {result.floor_factor:g} x floor)", highlight=False)
    for p in result.pairs:
        if p.lossy is not None:
            out.print(_lossy_line(p), highlight=False)
        elif p.layers and (show_layers or not p.passed):
            worst = max(p.layers, key=lambda e: e.max_rel)
            where = p.first_divergent_layer or "none"
            out.print(f"{p.a} vs {p.b}: {len(p.layers)} layers compared, first divergent "
                      f"layer: {where}, largest layer error {worst.max_rel:.2e} at "
                      f"{worst.name}", highlight=False)
        elif not p.passed and not p.layers:
            out.print(f"{p.a} vs {p.b}: no layer of this pair could be compared",
                      highlight=False)
    if not result.passed and (result.nonfinite_outputs or result.nonfinite_weights
                              or result.error):
        err.print(f"{result.model}: {result.reason}", markup=False, highlight=False)


def _lossy_line(p: Any) -> str:
    """One line on a lossy pair: its criteria against their floors, and where the per-layer
    SQNR says the precision is lost."""
    m, floor = p.lossy, p.lossy.thresholds
    line = (f"{p.a} vs {p.b} ({m.precision}): SQNR {m.sqnr_db:.1f} dB (min "
            f"{floor['min_sqnr_db']:g}), cosine {m.cosine:.6f} (min {floor['min_cosine']:g}), "
            f"top-1 {m.top1:.2f} (min {floor['min_top1']:g}), top-5 {m.top5:.2f} (min "
            f"{floor['min_top5']:g}): {'pass' if m.passed else 'FAIL'}")
    if p.layers:
        line += f"; {len(p.layers)} layers, SQNR falls most at {m.precision_lost_at}"
        line += f" ({m.sqnr_drop_db:.1f} dB)" if m.sqnr_drop_db is not None else ""
        line += f", first layer below {m.layer_min_sqnr_db:g} dB: " + (
            p.first_divergent_layer or "none")
    return line


def _runtimes(value: str | None) -> tuple[str, ...]:
    from codenn_convert.verification.run import RUNTIMES

    return RUNTIMES if value is None else tuple(r.strip() for r in value.split(",") if r.strip())


def _list(values: list[str] | None) -> tuple[str, ...]:
    """Repeatable options that also take comma-separated lists, flattened."""
    return tuple(v.strip() for value in values or () for v in value.split(",") if v.strip())


def _check_outputs(json_path: Path | None, *, keep_onnx: Path | None = None) -> None:
    """Output paths checked before any work; with ``--json -`` the JSON is standard output,
    so the human-readable table goes to stderr instead."""
    from codenn_convert.checkpoints.files import ensure_writable
    from codenn_convert.checkpoints.targets import check_directory, is_stdout

    if keep_onnx is not None:
        check_directory(keep_onnx, "--keep-onnx")
    if json_path is not None:
        ensure_writable(json_path)
        if is_stdout(json_path):
            out.file = sys.stderr


def _finish(results: list[Any], json_path: Path | None, *, show_layers: bool = False) -> None:
    """Print each result, write the JSON report, exit 0 (all passed) or 1."""
    from codenn_convert import report as rep

    for result in results:
        _print_result(result, show_layers=show_layers)
    data = rep.build_report(results)
    if json_path is not None:
        rep.write_json(data, json_path)
    raise typer.Exit(0 if rep.report_passed(data) else 1)


@app.command()
@handled
def verify(
    model: Annotated[str, typer.Argument(help="Model name.")],
    weights: Annotated[Path | None, typer.Option(
        "--weights", help="Checkpoint (either layout) feeding both twins.")] = None,
    torch_weights: Annotated[Path | None, typer.Option(
        "--torch-weights", help="Checkpoint for the torch side (torch, onnx-torch).")] = None,
    keras_weights: Annotated[Path | None, typer.Option(
        "--keras-weights", help="Checkpoint for the Keras side (keras, onnx-keras).")] = None,
    onnx: OnnxFiles = None,
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
    keep_onnx: Annotated[Path | None, typer.Option("--keep-onnx", help="Keep the ONNX files in "
                                                   "this directory.")] = None,
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
    from codenn_convert.verification.run import VerifyOptions, verify_inputs

    config = VerifyOptions(
        weights=weights, torch_weights=torch_weights, keras_weights=keras_weights,
        onnx=onnx or (), batch=batch, seed=seed, input_size=input_size,
        runtimes=_runtimes(runtimes), rtol=rtol, layers=layers, images=image or (),
        inputs=inputs or (), options=parse_options(model, option or []), work_dir=keep_onnx,
        save_golden=save_golden, precisions=_list(precision),
        thresholds=_floors(min_sqnr, min_cosine, min_top1, min_top5))
    config.check()
    _check_outputs(json_path, keep_onnx=keep_onnx)
    with _progress(f"verifying {model}") as say:
        results = verify_inputs(model, config, progress=say)
    if save_golden is not None and not all(r.passed for r in results):
        err.print(f"golden file not written: {model} failed verification", highlight=False)
    _finish(results, json_path, show_layers=layers)


@app.command()
@handled
def check(
    onnx_file: Annotated[Path, typer.Argument(metavar="MODEL.onnx", help="ONNX file to check.")],
    golden: Annotated[Path, typer.Option("--golden", metavar="G.npz",
                                         help="Golden file from `codenn verify --save-golden`.")],
    rtol: Rtol = None,
    json_path: JsonPath = None,
    min_sqnr: MinSqnr = None,
    min_cosine: MinCosine = None,
    min_top1: MinTop1 = None,
    min_top5: MinTop5 = None,
) -> None:
    """Check an ONNX file against a golden file in onnxruntime (no torch, no TensorFlow).
    A float32 file is held to --rtol; an fp16/int8 one (detected from its graph) to its
    precision's floors, as verify judges it."""
    from codenn_convert.verification.golden import check_onnx

    _check_outputs(json_path)
    _finish(check_onnx(onnx_file, golden, rtol=rtol,
                       thresholds=_floors(min_sqnr, min_cosine, min_top1, min_top5)), json_path)


@app.command()
@handled
def report(
    models: Annotated[list[str] | None, typer.Argument(
        help="Models (default: the default set), or with --from-json the JSON files.")] = None,
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
) -> None:
    """Verify a set of models and write parity.json, parity.md, parity.html and junit.xml."""
    from codenn_convert import report as rep
    from codenn_convert.checkpoints.targets import check_directory
    from codenn_convert.verification.run import VerifyOptions

    if all_models and (models or from_json):
        raise CodennError("give model names, --all or --from-json FILES, not two of them")
    if from_json and precision:
        raise CodennError("--precision runs models; --from-json only renders what was run")
    check_directory(out_dir, "report directory")
    if from_json:
        data = rep.merge_reports(models or [])
    else:
        config = VerifyOptions(batch=batch, seed=seed, precisions=_list(precision),
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

    names = list_models() if all_models else (models or list_models(default_only=True))
    finished = [0]

    def done(result: Any) -> None:
        _print_result(result)
        finished[0] += 1

    with _progress(f"parity of {len(names)} models") as say:
        return verify_many(names, config, on_result=done, progress=lambda msg: say(
            f"[{min(finished[0] + 1, len(names))}/{len(names)}] {msg}"))


def main() -> None:
    """Console-script entry point; a usage error is one line, as any bad input."""
    from codenn_convert.cli.usage import run

    signal.signal(signal.SIGTERM, _on_sigterm)
    run(app, "codenn", _error, _one_line)


if __name__ == "__main__":
    sys.exit(main())
