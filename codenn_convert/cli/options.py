"""The command line's shared options, declared once (typer ``Annotated`` types), and their
parsing into library values."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

MODEL_HELP = ("Model name (see `codenn list`), or your own torch model as "
              "path/to/file.py:function or package.module:function returning an nn.Module "
              "(this imports and runs that code: only use code you trust); its Keras twin is "
              "generated from its graph.")

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
TfliteFiles = Annotated[list[Path] | None, typer.Option(
    "--tflite", metavar="FILE.tflite",
    help="LiteRT file (NHWC or NCHW input) to compare too, as runtime tflite:<file name>; "
    "repeatable.")]
Runtimes = Annotated[str | None, typer.Option(
    "--runtimes", metavar="LIST",
    help="Comma-separated subset of our runtimes: torch, keras, onnx-torch, onnx-keras, "
    "tflite, as the verifier's runtime table lists them (default: all but the opt-in tflite; "
    "an unknown name is an error naming them).")]
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


def lossy_floors(min_sqnr: float | None, min_cosine: float | None, min_top1: float | None,
            min_top5: float | None) -> dict[str, float]:
    """The lossy floors given on the command line, as LossyThresholds overrides."""
    given = {"min_sqnr_db": min_sqnr, "min_cosine": min_cosine, "min_top1": min_top1,
             "min_top5": min_top5}
    return {k: v for k, v in given.items() if v is not None}


def parse_runtimes(value: str | None) -> tuple[str, ...]:
    from codenn_convert.verification.options import RUNTIMES

    return RUNTIMES if value is None else tuple(r.strip() for r in value.split(",") if r.strip())


def split_list(values: list[str] | None) -> tuple[str, ...]:
    """Repeatable options that also take comma-separated lists, flattened."""
    return tuple(v.strip() for value in values or () for v in value.split(",") if v.strip())


def model_name(text: str, input_size: tuple[int, int] | None = None, *,
               registered_size: bool = True) -> str:
    """A registered name, or a user model (``file.py:function``) resolved to its name; a
    user model's twin is built (and its seeded weights calibrated) at ``input_size``, which
    only a user model may take where ``registered_size`` is False (convert)."""
    from codenn_convert.errors import UsageError
    from codenn_convert.registry import is_model_reference, resolve_model

    user = is_model_reference(text)
    if input_size is not None and not user and not registered_size:
        raise UsageError("--input-size is for your own model (file.py:function); a "
                         "registered model's weights do not depend on it")
    return resolve_model(text, input_size if user else None) if text else text
