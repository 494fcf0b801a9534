"""The ``codenn`` command line: a thin layer over the library.

Exit codes: 0 ok, 1 parity failure, 2 usage or input error (one line on stderr; the
traceback only with ``--debug``). torch and TensorFlow are imported inside the commands
that need them, so ``codenn --help`` and ``codenn list`` stay instant.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich import box
from rich.console import Console
from rich.table import Column, Table

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
# Rich assumes 80 columns when not on a terminal; CI logs are wider, and numbers must not be
# truncated there.
out = Console(width=None if sys.stdout.isatty() else 120)
err = Console(stderr=True)
_STATE = {"debug": False}

Options = Annotated[
    list[str] | None,
    typer.Option("--option", metavar="KEY=VALUE",
                 help="Builder option for both twins, e.g. transform_input=true; repeatable."),
]
InputSize = Annotated[
    tuple[int, int] | None,
    typer.Option("--input-size", metavar="H W", help="Spatial input size (default: model's)."),
]


def _quiet_frameworks() -> None:
    # TF's C++ start-up chatter would bury our one-line messages.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


def handled(fn: F) -> F:
    """Turn library errors into one stderr line and exit 2 (traceback only with --debug)."""

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
            err.print(f"error: {exc}", highlight=False, markup=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        except (KeyboardInterrupt, MemoryError):
            raise
        except Exception as exc:
            if _STATE["debug"]:
                raise
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            err.print(f"error: {type(exc).__name__}: {msg} (run with --debug for the traceback)",
                      highlight=False, markup=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


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
    _STATE["debug"] = debug


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
    model: Annotated[str, typer.Argument(help="Model name (see `codenn list`).")],
    src: Annotated[Path, typer.Argument(
        help="Source checkpoint (.pt/.pth/.safetensors/.weights.h5).")],
    dst: Annotated[Path, typer.Argument(help="Destination checkpoint; format from extension.")],
    option: Options = None,
) -> None:
    """Convert a checkpoint between torch and Keras layouts (direction from the extensions)."""
    from codenn_convert.convert import convert_checkpoint
    from codenn_convert.registry import parse_options

    with err.status(f"converting {src} -> {dst}"):
        res = convert_checkpoint(model, src, dst,
                                 options=parse_options(model, option or []))
    out.print(f"wrote {res.dst} ({res.dst_layout} layout, {res.tensors} tensors) "
              f"in {res.seconds:.2f} s", highlight=False)


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
    precision: Annotated[str, typer.Option(
        "--precision", help="fp32, fp16 (float16 inside, float32 IO) or int8 (static QDQ, "
        "per-channel weights).")] = "fp32",
    calibration: Annotated[Path | None, typer.Option(
        "--calibration", metavar="FILE.npy|DIR",
        help="int8 calibration data: float32 NCHW .npy or a directory of images (default: "
        "seeded synthetic images, a stand-in for real data).")] = None,
) -> None:
    """Export the torch or Keras twin to ONNX (input `input` NCHW, output `logits`)."""
    from codenn_convert.export import export_onnx
    from codenn_convert.registry import parse_options

    options = parse_options(model, option or [])
    with err.status(f"exporting {model} ({framework}) to {output}"):
        path = export_onnx(model, framework, output, weights=weights,  # type: ignore[arg-type]
                           input_size=input_size, opset=opset, seed=seed, options=options,
                           precision=precision, calibration=calibration)
    out.print(f"wrote {path}", highlight=False)


def _print_result(result: Any, *, show_layers: bool = False) -> None:
    inputs = "" if result.inputs == "normal(0,1)" else f" ({result.inputs})"
    # Borderless and unwrapped, so the numbers stay whole in narrow logs.
    table = Table(*(Column(h, no_wrap=True) for h in (
        "pair", "max abs", "max rel", "cosine", "top-1", "top-5", "status")),
                  box=box.SIMPLE_HEAD,
                  title=f"{result.model} {'x'.join(map(str, result.input_shape))}{inputs}")
    for p in result.pairs:
        status = "[green]pass[/]" if p.passed else "[red]FAIL[/]"
        if p.first_divergent_layer:
            status += f" at {p.first_divergent_layer}"
        table.add_row(f"{p.a} vs {p.b}", f"{p.max_abs:.2e}", f"{p.max_rel:.2e}",
                      f"{p.cosine:.6f}", f"{p.top1:.2f}", f"{p.top5:.2f}", status)
    out.print(table)
    for p in result.pairs:
        if p.layers and (show_layers or not p.passed):
            worst = max(p.layers, key=lambda e: e.max_rel)
            where = p.first_divergent_layer or "none"
            out.print(f"{p.a} vs {p.b}: {len(p.layers)} layers compared, first divergent "
                      f"layer: {where}, largest layer error {worst.max_rel:.2e} at "
                      f"{worst.name}", highlight=False)
        elif not p.passed and not p.layers:
            out.print(f"{p.a} vs {p.b}: no layer of this pair could be compared",
                      highlight=False)
    if result.error:
        err.print(f"{result.model}: {result.error}", markup=False)


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
    onnx: Annotated[list[Path] | None, typer.Option(
        "--onnx", metavar="FILE.onnx",
        help="ONNX file (NCHW or NHWC input) to compare too, as runtime "
        "onnx:<file name>; repeatable.")] = None,
    batch: Annotated[int, typer.Option("--batch", min=1, help="Batch size.")] = 2,
    seed: Annotated[int, typer.Option("--seed", help="Seed of inputs and random weights.")] = 0,
    input_size: InputSize = None,
    image: Annotated[list[Path] | None, typer.Option(
        "--image", metavar="PHOTO",
        help="Also check on this photo (ImageNet pre-processing); repeatable.")
    ] = None,
    layers: Annotated[bool, typer.Option(
        "--layers", help="Compare every mapped layer of every pair (failing pairs always "
        "are).")] = False,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the JSON report here.")
                         ] = None,
    keep_onnx: Annotated[Path | None, typer.Option("--keep-onnx", help="Keep the ONNX files in "
                                                   "this directory.")] = None,
    rtol: Annotated[float | None, typer.Option("--rtol", help="Tolerance on max rel error "
                                               "(default: the model's, 1e-5 for float32).")
                    ] = None,
    option: Options = None,
) -> None:
    """Run the same inputs through torch, keras, onnx-torch, onnx-keras (and given ONNX
    files); compare all pairs and name the first divergent layer of a failing one."""
    from codenn_convert import report as rep
    from codenn_convert.checkpoint import ensure_writable
    from codenn_convert.registry import parse_options
    from codenn_convert.verification import verify_inputs

    options = parse_options(model, option or [])
    if json_path is not None:
        ensure_writable(json_path)
    with err.status(f"verifying {model}") as status:
        results = verify_inputs(
            model, weights=weights, torch_weights=torch_weights, keras_weights=keras_weights,
            onnx=onnx or (), batch=batch, seed=seed, input_size=input_size,
            images=image or (), layers=layers, work_dir=keep_onnx, rtol=rtol,
            options=options, progress=lambda msg: status.update(msg))
    for result in results:
        _print_result(result, show_layers=layers)
    data = rep.build_report(results)
    if json_path is not None:
        rep.write_json(data, json_path)
    raise typer.Exit(0 if rep.report_passed(data) else 1)


@app.command()
@handled
def report(
    models: Annotated[list[str] | None, typer.Argument(help="Models (default: the default set)."
                                                       )] = None,
    all_models: Annotated[bool, typer.Option("--all", help="Every registered variant.")] = False,
    out_dir: Annotated[Path, typer.Option("-o", "--out", help="Report directory.")] = Path(
        "reports"),
    batch: Annotated[int, typer.Option("--batch", min=1, help="Batch size.")] = 2,
    seed: Annotated[int, typer.Option("--seed", help="Seed.")] = 0,
    layers: Annotated[bool, typer.Option(
        "--layers/--no-layers", help="Per-layer errors of torch vs keras for the plots "
        "(failing pairs are localised either way).")] = True,
) -> None:
    """Verify a set of models and write parity.json, parity.md, parity.html and junit.xml."""
    from rich.progress import Progress

    from codenn_convert import report as rep
    from codenn_convert.registry import get_spec, list_models
    from codenn_convert.verification import ModelResult
    from codenn_convert.verification import verify as run_verify

    if models and all_models:
        raise CodennError("give model names or --all, not both")
    names = list_models() if all_models else (models or list_models(default_only=True))
    for name in names:
        get_spec(name)
    out_dir.mkdir(parents=True, exist_ok=True)
    results: list[ModelResult] = []
    with Progress(console=err, transient=True) as progress:
        task = progress.add_task("parity", total=len(names))
        for name in names:
            def say(msg: str) -> None:
                progress.update(task, description=msg)  # noqa: B023 - used inside the loop

            try:
                results.append(run_verify(name, batch=batch, seed=seed, progress=say,
                                          layers=[("torch", "keras")] if layers else False))
            except CodennError:
                raise
            except Exception as exc:  # one broken model must not hide the others' results
                spec = get_spec(name)
                results.append(ModelResult(model=name, input_shape=[batch, 3, *spec.input_size],
                                           seed=seed, rtol=spec.rtol,
                                           error=f"{type(exc).__name__}: {exc}"[:300]))
            _print_result(results[-1])
            progress.advance(task)
    data = rep.build_report(results)
    for path in rep.write_reports(data, out_dir):
        out.print(f"wrote {path}", highlight=False)
    raise typer.Exit(0 if rep.report_passed(data) else 1)


def main() -> None:
    """Console-script entry point."""
    app(prog_name="codenn")


if __name__ == "__main__":
    sys.exit(main())
