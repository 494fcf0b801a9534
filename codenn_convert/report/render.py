"""Render verification results. Formatting only: nothing here runs a model.

The one report object is ``{"environment": {...}, "models": [ModelResult.to_dict(), ...]}``
(:mod:`codenn_convert.report.files` builds it; schema: ``report.schema.json`` beside this
module, documented in docs/). Every form is a rendering of it: ``parity.json``,
``parity.md`` (short, for a CI job summary), ``parity.html`` (one self-contained page from
``template.html.j2``: pass/fail table, per-layer error plots, environment)
and ``junit.xml`` (one test case per model x pair, so CI shows failures).
"""

from __future__ import annotations

import base64
import html
import importlib.metadata
import importlib.resources
import io
import json
import math
import xml.etree.ElementTree as ET
from typing import Any

from codenn_convert.verification.inputs import NORMAL_INPUTS


def report_passed(report: dict[str, Any]) -> bool:
    return all(m["passed"] for m in report["models"]) and bool(report["models"])


# --------------------------------------------------------------------------- numbers


def _num(v: Any) -> float | None:
    """A report number as a float (the JSON form writes non-finite ones as strings);
    ``None`` stays None (a metric that could not be computed honestly)."""
    return float(v) if isinstance(v, str) else v


def _fmt(v: Any, spec: str = ".2e") -> str:
    v = _num(v)
    if v is None:
        return "n/a"
    return str(v) if not math.isfinite(v) else format(v, spec)


#: Unicode blocks for a histogram drawn as one short word.
_BARS = " ▁▂▃▄▅▆▇█"


def spark(histogram: dict[str, Any]) -> str:
    """A histogram's counts as a row of block characters (log-scaled heights)."""
    counts = histogram.get("counts") or []
    top = max(counts, default=0)
    if not top:
        return ""
    return "".join(_BARS[0] if not c else _BARS[1 + round(7 * math.log1p(c) / math.log1p(top))]
                   for c in counts)


def _oracle(m: dict[str, Any]) -> str:
    """``torch 1.2e-07, keras 3.0e-07, ...``: each runtime's distance to float64."""
    return ", ".join(f"{k} {_fmt(v)}" for k, v in (m.get("error_vs_float64") or {}).items())


def json_safe(obj: Any) -> Any:
    """Non-finite floats as "inf"/"-inf"/"nan": JSON has no literal for them. Containers
    without one are returned as they are, not copied (a report read from a large shard)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return "nan" if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, dict):
        changed = {k: new for k, v in obj.items() if (new := json_safe(v)) is not v}
        return {**obj, **changed} if changed else obj
    if isinstance(obj, list | tuple):
        items = [json_safe(v) for v in obj]
        same = all(new is old for new, old in zip(items, obj, strict=True))
        return obj if same and isinstance(obj, list) else items
    return obj


def to_json(report: dict[str, Any]) -> str:
    """Strict JSON (``allow_nan=False``) of the report."""
    return json.dumps(json_safe(report), indent=2, allow_nan=False) + "\n"


def _model_label(m: dict[str, Any]) -> str:
    return m["model"] if m.get("inputs", NORMAL_INPUTS) == NORMAL_INPUTS else (
        f"{m['model']} ({m['inputs']})")


# --------------------------------------------------------------------------- markdown


def _md(text: Any, *, table: bool = True) -> str:
    """Text from a report (a shard is anyone's file) made inert in Markdown: HTML escaped, as
    the HTML and JUnit forms escape it (a CI job summary renders HTML), line breaks and
    backticks neutralised, and in a table cell its pipes."""
    text = html.escape(" ".join(str(text).split()), quote=False).replace("`", "'")
    return text.replace("|", "\\|") if table else text


def _code(text: Any) -> str:
    return f"`{_md(text)}`"


def _floor_note(m: dict[str, Any]) -> str | None:
    """``float32 floor 3.8e-05 (torch vs float64): float32 pairs pass at 1.5e-04``."""
    floor = m.get("float32_floor")
    if floor is None:
        return None
    tol = max([_num(p.get("tolerance")) or 0.0 for p in m["pairs"]] + [m["rtol"]])
    how = (f"max(rtol {m['rtol']:g}, {m.get('floor_factor', 0):g} x floor)"
           if tol > m["rtol"] else f"rtol {m['rtol']:g}")
    return (f"float32 floor {_fmt(floor)} (the reference's own distance to float64); float32 "
            f"pairs pass at {how} = {_fmt(tol)}")


def to_markdown(report: dict[str, Any]) -> str:
    """A short summary, fit for a CI job summary; every text from the report escaped."""
    ok = report_passed(report)
    lines = [
        f"# codenn-convert parity: {'PASS' if ok else 'FAIL'}",
        "",
        "| model | input | pair | max abs | max rel | tolerance | cosine | top-1 | top-5 | "
        "status |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m in report["models"]:
        shape = _md("x".join(str(d) for d in m["input_shape"]))
        label = _md(_model_label(m))
        if m["error"]:
            lines.append(f"| {label} | {shape} | - | - | - | - | - | - | - | ERROR: "
                         f"{_md(m['error'])} |")
        for p in m["pairs"]:
            status = "pass" if p["passed"] else "**FAIL**"
            if p.get("first_divergent_layer"):
                status += f" (first divergent layer: {_code(p['first_divergent_layer'])})"
            if p.get("farther"):
                status += f" ({_md(p['farther'])} farther from float64)"
            if p.get("degenerate"):
                status += f" (constant logits: {_md(', '.join(p['degenerate']))})"
            lines.append(
                f"| {label} | {shape} | {_md(p['a'])} vs {_md(p['b'])} | {_fmt(p['max_abs'])} | "
                f"{_fmt(p['max_rel'])} | {_fmt(p.get('tolerance'))} | {_fmt(p['cosine'], '.8f')} "
                f"| {_fmt(p['top1'], '.2f')} | {_fmt(p['top5'], '.2f')} | {status} |"
            )
    lines += _lossy_markdown(report)
    def item(m: dict[str, Any], text: str) -> str:
        return f"- {_md(_model_label(m), table=False)}: {_md(text, table=False)}"

    notes = [item(m, m["reason"]) for m in report["models"]
             if not m["passed"] and m.get("reason")]
    notes += [item(m, f"error vs float64: {_oracle(m)}") for m in report["models"]
              if m.get("error_vs_float64")]
    notes += [item(m, note) for m in report["models"] if (note := _floor_note(m))]
    if notes:
        lines += ["", *notes]
    env = report["environment"]
    lines += ["", "Tolerance: max rel <= max(rtol, k x float32 floor) relative to the largest "
              "reference logit; rtol is 1e-5 for float32, the floor is the reference runtime's "
              "own distance to float64 (what float32 rounding costs on this checkpoint).", "",
              "Environment: " + ", ".join(f"{_md(k, table=False)} {_md(v, table=False)}"
                                          for k, v in env.items() if v is not None)]
    return "\n".join(lines) + "\n"


def _floors(t: dict[str, Any]) -> str:
    return (f"SQNR >= {t['min_sqnr_db']:g} dB, cosine >= {t['min_cosine']:g}, top-1 >= "
            f"{t['min_top1']:g}, top-5 >= {t['min_top5']:g}")


def _lossy_markdown(report: dict[str, Any]) -> list[str]:
    """The lossy pairs' own table: criteria, floors, where the precision is lost."""
    rows = [(m, p) for m in report["models"] for p in m["pairs"] if p.get("lossy")]
    if not rows:
        return []
    lines = ["", "Lossy pairs (fp16/int8 side b), judged by SQNR, cosine, top-1 agreement and "
             "top-5 overlap against their floors instead of max rel <= rtol:", "",
             "| model | pair | precision | SQNR dB | cosine | top-1 | top-5 | floors | "
             "SQNR falls most at | status |", "|---|---|---|---|---|---|---|---|---|---|"]
    for m, p in rows:
        lo = p["lossy"]
        where = (f"{_code(lo['precision_lost_at'])} ({_fmt(lo['sqnr_drop_db'], '.1f')} dB)"
                 if lo.get("precision_lost_at") else "-")
        status = "pass" if p["passed"] else "**FAIL**"
        if p.get("first_divergent_layer"):
            status += (f" (first layer below {lo['layer_min_sqnr_db']:g} dB: "
                       f"{_code(p['first_divergent_layer'])})")
        lines.append(f"| {_md(_model_label(m))} | {_md(p['a'])} vs {_md(p['b'])} | "
                     f"{_md(lo['precision'])} | "
                     f"{_fmt(lo['sqnr_db'], '.1f')} | {_fmt(lo['cosine'], '.6f')} | "
                     f"{_fmt(lo['top1'], '.2f')} | {_fmt(lo['top5'], '.2f')} | "
                     f"{_floors(lo['thresholds'])} | {where} | {status} |")
    return lines


# --------------------------------------------------------------------------- html

#: Below this a relative error is drawn at this value (a log axis has no zero).
_PLOT_FLOOR = 1e-10

#: The page template (Jinja2), package data beside this module.
TEMPLATE_FILE = "template.html.j2"


def _layer_plot(m: dict[str, Any]) -> str | None:
    """Base64 PNG of per-layer max rel (log scale) for the pairs that have layers."""
    # Lossy pairs are plotted by SQNR (_sqnr_plot): the float32 tolerance says nothing there.
    pairs = [p for p in m["pairs"] if p.get("layers") and not p.get("lossy")]
    if not pairs:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # The Figure/Agg canvas API draws off-screen without touching pyplot's global backend.
    fig = Figure(figsize=(10, 3.4), dpi=90)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    longest = max(pairs, key=lambda p: len(p["layers"]))
    names = [e["name"] for e in longest["layers"]]
    index = {n: i for i, n in enumerate(names)}
    top = _PLOT_FLOOR
    for p in pairs:
        errs = [_num(e["max_rel"]) for e in p["layers"]]
        finite = [e for e in errs if math.isfinite(e)]
        top = max(top, *finite, _PLOT_FLOOR)
    ceiling = top * 10
    for p in pairs:
        xs = [index.get(e["name"], i) for i, e in enumerate(p["layers"])]
        ys = [min(max(_num(e["max_rel"]), _PLOT_FLOOR), ceiling)
              if not math.isnan(_num(e["max_rel"])) else ceiling for e in p["layers"]]
        line, = ax.plot(xs, ys, marker=".", markersize=3, linewidth=1,
                        label=f"{p['a']} vs {p['b']}")
        first = p.get("first_divergent_layer")
        if first in index:
            ax.axvline(index[first], color=line.get_color(), linestyle=":", linewidth=1)
            ax.annotate(first, (index[first], 0.97), xycoords=("data", "axes fraction"),
                        fontsize=7, rotation=90, va="top", ha="right", color=line.get_color())
    ax.axhline(m.get("layer_rtol", 1e-4), color="grey", linestyle="--", linewidth=1,
               label="layer tolerance")
    ax.set_yscale("log")
    return _layer_axes_png(fig, ax, names, ylabel="max rel error", legend="upper left")


def _sqnr_plot(m: dict[str, Any]) -> str | None:
    """Base64 PNG of per-layer SQNR (dB) for the lossy pairs that have layers."""
    pairs = [p for p in m["pairs"] if p.get("lossy") and p.get("layers")]
    if not pairs:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.4), dpi=90)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    names = [e["name"] for e in max(pairs, key=lambda p: len(p["layers"]))["layers"]]
    index = {n: i for i, n in enumerate(names)}
    values = [_num(e.get("sqnr_db")) for p in pairs for e in p["layers"]]
    finite = [v for v in values if v is not None and math.isfinite(v)] or [0.0]
    low, high = min(finite) - 5, max(finite) + 5  # infinities drawn at the plot's edges
    for p in pairs:
        pts = [(index.get(e["name"], i), _num(e.get("sqnr_db")))
               for i, e in enumerate(p["layers"]) if e.get("sqnr_db") is not None]
        ys = [high if v > high else low if not v >= low else v for _, v in pts]
        line, = ax.plot([x for x, _ in pts], ys, marker=".", markersize=3, linewidth=1,
                        label=f"{p['a']} vs {p['b']} ({p['lossy']['precision']})")
        ax.axhline(p["lossy"]["layer_min_sqnr_db"], color=line.get_color(),
                   linestyle="--", linewidth=1)
        for where, style in ((p["lossy"].get("precision_lost_at"), ":"),
                             (p.get("first_divergent_layer"), "-")):
            if where in index:
                ax.axvline(index[where], color=line.get_color(), linestyle=style, linewidth=1)
                ax.annotate(where, (index[where], 0.03), xycoords=("data", "axes fraction"),
                            fontsize=7, rotation=90, va="bottom", ha="right",
                            color=line.get_color())
    return _layer_axes_png(fig, ax, names, ylabel="SQNR (dB)", legend="upper right")


def _layer_axes_png(fig: Any, ax: Any, names: list[str], *, ylabel: str, legend: str) -> str:
    """Label a per-layer plot (layer names on x, at most ~16 shown) and encode it as PNG."""
    ax.set_ylabel(ylabel)
    step = max(1, len(names) // 16)
    ax.set_xticks(range(0, len(names), step))
    ax.set_xticklabels(names[::step], rotation=35, ha="right", fontsize=7)
    ax.set_xlim(-0.5, len(names) - 0.5)
    ax.grid(True, which="major", axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc=legend)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def to_html(report: dict[str, Any]) -> str:
    """One self-contained page: pass/fail table, per-layer plots, environment."""
    template, context = html_page(report)
    return template.render(**context)


def html_page(report: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """The page's template and what it renders (streamed to a file by ``write_reports``)."""
    import jinja2

    pair_names: list[str] = []
    models = []
    for m in report["models"]:
        pairs = {}
        for p in m["pairs"]:
            key = f"{p['a']} vs {p['b']}"
            if key not in pair_names:
                pair_names.append(key)
            title = (f"max abs {_fmt(p['max_abs'])}, max rel {_fmt(p['max_rel'])}, cosine "
                     f"{_fmt(p['cosine'], '.8f')}, top-1 {_fmt(p['top1'], '.2f')}, top-5 "
                     f"{_fmt(p['top5'], '.2f')}, p99 rel {_fmt(p.get('p99_rel'))}, tolerance "
                     f"{_fmt(p.get('tolerance'))}")
            if p.get("lossy"):
                title += (f"; {p['lossy']['precision']}: SQNR {_fmt(p['lossy']['sqnr_db'], '.1f')}"
                          f" dB, cosine {_fmt(p['lossy']['cosine'], '.6f')}, top-1 "
                          f"{_fmt(p['lossy']['top1'], '.2f')}, top-5 overlap "
                          f"{_fmt(p['lossy']['top5'], '.2f')}; passes at "
                          f"{_floors(p['lossy']['thresholds'])}")
            pairs[key] = {**p, "max_rel": _fmt(p["max_rel"]), "title": title,
                          "sqnr": _fmt((p.get("lossy") or {}).get("sqnr_db"), ".1f"),
                          "spark": spark(p.get("histogram") or {}),
                          "farther": p.get("farther")}
        models.append({
            "label": _model_label(m), "shape": "x".join(str(d) for d in m["input_shape"]),
            "error": m["error"], "pairs": pairs, "plot": _layer_plot(m),
            "oracle": _oracle(m), "reason": m.get("reason") if not m["passed"] else None,
            "floor": _fmt(m.get("float32_floor")), "floor_note": _floor_note(m),
            "layer_pairs": [{**p, "count": len(p["layers"])} for p in m["pairs"]
                            if p.get("layers") and not p.get("lossy")],
            "sqnr_plot": _sqnr_plot(m),
            "lossy_pairs": [p for p in m["pairs"] if p.get("lossy") and p.get("layers")],
        })
    rtols = ", ".join(sorted({f"{m['rtol']:g}" for m in report["models"]})) or "-"
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    template = importlib.resources.files("codenn_convert.report").joinpath(TEMPLATE_FILE)
    return env.from_string(template.read_text(encoding="utf-8")), dict(
        passed=report_passed(report), pair_names=pair_names, models=models, rtols=rtols,
        any_plot=any(m["plot"] for m in models), any_sqnr=any(m["sqnr_plot"] for m in models),
        environment=report["environment"])


# --------------------------------------------------------------------------- junit


def to_junit(report: dict[str, Any]) -> str:
    """JUnit XML: one test case per model x pair; a failing pair is a ``<failure>`` with its
    numbers, a model that could not run an ``<error>``."""
    cases: list[ET.Element] = []
    failures = errors = 0
    for m in report["models"]:
        classname = f"parity.{m['model']}"
        suffix = "" if m.get("inputs", NORMAL_INPUTS) == NORMAL_INPUTS else f" [{m['inputs']}]"
        if m["error"]:
            case = ET.Element("testcase", classname=classname, name=f"run{suffix}")
            ET.SubElement(case, "error", message=m["error"], type="ModelError").text = m["error"]
            cases.append(case)
            errors += 1
        for p in m["pairs"]:
            case = ET.Element("testcase", classname=classname,
                              name=f"{p['a']} vs {p['b']}{suffix}")
            if not p["passed"]:
                failures += 1
                where = p.get("first_divergent_layer")
                message = (f"max_rel {_fmt(p['max_rel'])} > {_limit(m, p)}"
                           + (f"; constant logits in {', '.join(p['degenerate'])}"
                              if p.get("degenerate") else "")
                           + (f"; first divergent layer {where}" if where else "")
                           + (f"; {p['farther']} farther from float64"
                              if p.get("farther") else ""))
                if p.get("lossy"):
                    message = _lossy_failure(p)
                if p.get("nonfinite"):
                    message = (f"non-finite outputs in {', '.join(p['nonfinite'])}; "
                               + message)
                if not p.get("nonfinite_match", True):
                    message = "NaN/Inf positions differ; " + message
                detail = "\n".join([
                    f"model: {m['model']} input {m['input_shape']} ({m['inputs']}), "
                    f"seed {m['seed']}",
                    f"max_abs: {_fmt(p['max_abs'])}", f"max_rel: {_fmt(p['max_rel'])}",
                    f"cosine: {_fmt(p['cosine'], '.8f')}", f"top1: {_fmt(p['top1'], '.3f')}",
                    f"top5: {_fmt(p['top5'], '.3f')}", f"first_divergent_layer: {where}",
                    *([f"lossy: {json.dumps(json_safe(p['lossy']))}"] if p.get("lossy") else []),
                    f"error_vs_float64: {_oracle(m)}",
                    f"float32_floor: {_fmt(m.get('float32_floor'))}",
                    f"tolerance: {_fmt(p.get('tolerance'))}", f"reason: {m.get('reason')}",
                ])
                ET.SubElement(case, "failure", message=message, type="ParityFailure").text = (
                    detail)
            cases.append(case)
    total = sum(sum(m.get("seconds", {}).values()) for m in report["models"])
    suites = ET.Element("testsuites", name="codenn-convert parity", tests=str(len(cases)),
                        failures=str(failures), errors=str(errors), time=f"{total:.3f}")
    suite = ET.SubElement(suites, "testsuite", name="parity", tests=str(len(cases)),
                          failures=str(failures), errors=str(errors), skipped="0",
                          time=f"{total:.3f}", timestamp=str(report["environment"].get("time")))
    props = ET.SubElement(suite, "properties")
    for k, v in report["environment"].items():
        ET.SubElement(props, "property", name=str(k), value=str(v))
    suite.extend(cases)
    ET.indent(suites)
    return ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n"


def _limit(m: dict[str, Any], p: dict[str, Any]) -> str:
    """What a float32 pair was held to: ``rtol 1e-05``, or with the checkpoint's floor known
    ``tolerance 1.5e-04 (max of rtol 1e-05 and 4 x float32 floor 3.8e-05)``."""
    tol = _num(p.get("tolerance"))
    if m.get("float32_floor") is None or tol is None or tol <= m["rtol"]:
        return f"rtol {m['rtol']:g}"
    return (f"tolerance {_fmt(p['tolerance'])} (max of rtol {m['rtol']:g} and "
            f"{m.get('floor_factor', 0):g} x float32 floor {_fmt(m['float32_floor'])})")


def _lossy_failure(p: dict[str, Any]) -> str:
    """A failing lossy pair's message: each criterion that missed its floor, and where."""
    lo, t = p["lossy"], p["lossy"]["thresholds"]
    floors = {"sqnr_db": "min_sqnr_db", "cosine": "min_cosine", "top1": "min_top1",
              "top5": "min_top5"}
    missed = [f"{k} {_fmt(lo[k], '.4g')} < {t[f]:g}" for k, f in floors.items()
              if not _num(lo[k]) >= t[f]]
    if not lo.get("finite", True):
        missed.insert(0, "NaN/Inf in an output")
    where = p.get("first_divergent_layer")
    if where:
        low = next((e.get("sqnr_db") for e in p["layers"] if e["name"] == where), None)
        missed.append(f"layer {where} SQNR {_fmt(low, '.1f')} dB < {lo['layer_min_sqnr_db']:g}")
    return (f"{lo['precision']} pair fails lossy criteria: {', '.join(missed) or 'see detail'}"
            + (f"; SQNR falls most at {lo['precision_lost_at']}"
               if lo.get("precision_lost_at") else ""))


# --------------------------------------------------------------------------- files

