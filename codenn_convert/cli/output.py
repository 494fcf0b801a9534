"""What the command line prints: result tables, lossy lines, progress, notes and one-line
errors, on rich consoles (stdout for results, stderr for everything else)."""

from __future__ import annotations

import contextlib
import logging
import re
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Column, Table

# Rich assumes 80 columns when not on a terminal; CI logs are wider, and numbers must not be
# truncated there.
out = Console(width=None if sys.stdout.isatty() else 120)
err = Console(stderr=True)


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def one_line(text: str) -> str:
    """A message's first line, whole, without terminal escapes (logs are often pipes)."""
    text = _ANSI.sub("", str(text)).strip()
    return text.splitlines()[0] if text else ""


def print_error(message: str) -> None:
    err.print(message, highlight=False, markup=False, soft_wrap=True)


@contextlib.contextmanager
def progress(title: str) -> Iterator[Callable[[str], None]]:
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
            print_error(f"{stage[0]}: {now - stage[1]:.1f} s")
        stage[:] = [msg, now]

    yield say
    now = time.perf_counter()
    print_error(f"{stage[0]}: {now - stage[1]:.1f} s (total {now - start:.1f} s)")


class _NoteHandler(logging.Handler):
    """Library notes (``stripped prefix 'module.' from 320 keys``) as ``note:`` lines."""

    def emit(self, record: logging.LogRecord) -> None:
        err.print(f"note: {record.getMessage()}", highlight=False, markup=False,
                  soft_wrap=True)


def print_notes() -> None:
    logger = logging.getLogger("codenn_convert.notes")
    if not any(isinstance(h, _NoteHandler) for h in logger.handlers):
        logger.addHandler(_NoteHandler())
    logger.setLevel(logging.INFO)
    logger.propagate = False


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


def print_result(result: Any, *, show_layers: bool = False) -> None:
    table = _result_table(result)
    out.print(table)
    if result.error_vs_float64:
        out.print("error vs float64: " + ", ".join(
            f"{k} {_fmt(v, '.2e')}" for k, v in result.error_vs_float64.items()), highlight=False)
    if result.float32_floor is not None:
        tol = max([p.tolerance for p in result.pairs if p.tolerance is not None] + [result.rtol])
        how = (f"max of rtol {result.rtol:g} and {result.floor_factor:g} x floor"
               if tol > result.rtol else f"rtol {result.rtol:g}")
        out.print(f"float32 floor {result.float32_floor:.2e} (the reference's own distance to "
                  f"float64): float32 pairs pass at max rel <= {tol:.2e} ({how})",
                  highlight=False)
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


def results_to_stdout() -> None:
    """Results to standard output again, at each command's start: ``--json -`` moves them to
    stderr for one command, and a process may run several (a notebook, the tests)."""
    out.file = None  # rich then follows sys.stdout as it is at each print


def check_outputs(json_path: Path | None, *, keep_onnx: Path | None = None) -> None:
    """Output paths checked before any work; with ``--json -`` the JSON is standard output,
    so the human-readable table goes to stderr instead."""
    from codenn_convert.checkpoints.atomic import ensure_writable
    from codenn_convert.checkpoints.targets import check_directory, is_stdout

    if keep_onnx is not None:
        check_directory(keep_onnx, "--keep-onnx")
    if json_path is not None:
        ensure_writable(json_path)
        if is_stdout(json_path):
            out.file = sys.stderr
