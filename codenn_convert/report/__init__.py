"""Reports of verification results: JSON, Markdown, HTML and JUnit renderings of one object.

:mod:`.files` builds the report object and writes, reads and merges its files;
:mod:`.render` renders it (the HTML page from ``template.html.j2``). The public names are
importable from here too (the CLI uses ``report as rep``), resolved on first use (PEP 562).
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "REPORT_FILES": "files", "build_report": "files", "merge_environments": "shards",
    "merge_reports": "shards", "read_json_report": "shards", "schema": "files",
    "write_json": "files", "write_reports": "files",
    "report_passed": "render", "to_html": "render", "to_json": "render", "to_junit": "render",
    "to_markdown": "render",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name == "environment":  # recorded by golden files too: its home is the verifier's
        from codenn_convert.verification.environment import environment

        return environment
    if name in _HOMES:
        return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
