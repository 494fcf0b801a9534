"""Reports from CI shards (``codenn report --from-json``): reading ``verify --json`` files
and merging them into one report.

A shard is anyone's file: it is parsed once, as compact text (never a second copy of its
bytes), a nesting too deep for the parser is a one-line error, and a model verified on the
same input in two shards is refused rather than shown twice with possibly different
verdicts.
"""

from __future__ import annotations

import codecs
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from codenn_convert.errors import UsageError


def _parse(path: Path) -> Any:
    """The JSON value of ``path``, read in chunks: the entries of a top-level ``models``
    array are parsed one at a time, so memory is the parsed report plus one entry's text,
    never the whole file's text beside it."""
    reader = _Reader(path)
    if reader.peek() != "{":
        return reader.rest()  # not a report object: parsed whole, refused by the caller
    reader.take("{")
    data: dict[str, Any] = {}
    while reader.peek() != "}":
        key = reader.value()
        reader.take(":")
        if key == "models" and reader.peek() == "[":
            data[key] = reader.array()
        else:
            data[key] = reader.value()
        if reader.peek() == ",":
            reader.take(",")
    reader.take("}")
    return data


class _Reader:
    """Incremental JSON values from a UTF-8 file (the stdlib parser on a growing buffer)."""

    _CHUNK = 1 << 20

    def __init__(self, path: Path) -> None:
        self._f = path.open("rb")
        self._decode = codecs.getincrementaldecoder("utf-8")()
        self._buf, self._pos, self._eof = "", 0, False
        shared: dict[tuple[Any, ...], list[Any]] = {}
        self._hook = lambda pairs: _interned(pairs, shared)
        self._decoder = json.JSONDecoder(object_pairs_hook=self._hook)

    def _more(self, at_least: int = _CHUNK) -> bool:
        if self._eof:
            return False
        raw = self._f.read(max(at_least, self._CHUNK))
        self._eof = not raw
        if self._eof:
            self._f.close()
        self._buf = self._buf[self._pos:] + self._decode.decode(raw, final=self._eof)
        self._pos = 0
        return True

    def peek(self) -> str:
        while True:
            while self._pos < len(self._buf) and self._buf[self._pos] in " \t\r\n":
                self._pos += 1
            if self._pos < len(self._buf) or not self._more():
                return self._buf[self._pos:self._pos + 1]

    def take(self, char: str) -> None:
        if self.peek() != char:
            raise json.JSONDecodeError(f"expected {char!r}", self._buf, self._pos)
        self._pos += 1

    def value(self) -> Any:
        self.peek()
        while True:
            try:
                value, end = self._decoder.raw_decode(self._buf, self._pos)
            except json.JSONDecodeError:
                # Perhaps only cut short by the buffer: read as much again, then retry.
                if not self._more(len(self._buf)):
                    raise
                continue
            if end == len(self._buf) and self._more():  # a number may go on
                continue
            self._pos = end
            return value

    def array(self) -> list[Any]:
        self.take("[")
        items: list[Any] = []
        while self.peek() != "]":
            items.append(self.value())
            if self.peek() == ",":
                self.take(",")
        self.take("]")
        return items

    def rest(self) -> Any:
        while self._more():
            pass
        return json.loads(self._buf[self._pos:], object_pairs_hook=self._hook)


def _interned(pairs: list[tuple[str, Any]], shared: dict[tuple[Any, ...], list[Any]]
              ) -> dict[str, Any]:
    """A JSON object with its keys (and short strings) interned and its short lists of
    numbers (histogram edges, counts) shared by value within one file: a shard repeats them
    in every pair. The report read is rendered, never modified."""
    return {sys.intern(k): _shared(v, shared) for k, v in pairs}


def _shared(v: Any, shared: dict[tuple[Any, ...], list[Any]]) -> Any:
    if isinstance(v, str) and len(v) < 80:
        return sys.intern(v)
    if (isinstance(v, list) and len(v) <= 16
            and all(type(x) in (int, float, str) for x in v)):
        return shared.setdefault(tuple(v), v)
    return v


def read_json_report(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A ``verify --json`` / ``parity.json`` file, checked to be a report; one-line errors."""
    from codenn_convert.report.files import schema

    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{path} is a directory, not a JSON report")
    try:
        data = _parse(path)
    except FileNotFoundError:
        raise UsageError(f"report not found: {path}") from None
    except RecursionError:
        raise UsageError(f"{path} is not a JSON report: nested too deeply") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"{path} is not a JSON report: {str(exc)[:120]}") from None
    needed = schema()["$defs"]["model"]["required"]
    models = data.get("models") if isinstance(data, dict) else None
    if (not isinstance(models, list) or not isinstance(data.get("environment"), dict)
            or not all(isinstance(m, dict) and all(k in m for k in needed) for m in models)):
        raise UsageError(f"{path} is not a codenn report (no environment/models entries)")
    return data


def _entry_key(m: dict[str, Any]) -> str:
    return json.dumps([m.get("model"), m.get("inputs"), m.get("input_shape"), m.get("seed"),
                       m.get("options")], sort_keys=True, default=str)


def merge_reports(paths: Sequence[str | os.PathLike[str]]) -> dict[str, Any]:
    """One report from several (e.g. CI shards): their model entries in the order given,
    and one environment that hides no difference between them (:func:`merge_environments`).

    The same model on the same input (shape, seed, options) in two places is refused: two
    rows for one check, perhaps with different verdicts (a stale file from a re-run job),
    would leave the reader to guess which one holds.
    """
    if not paths:
        raise UsageError("--from-json needs at least one JSON report file")
    shards, seen = [], {}
    for p in paths:
        shard = read_json_report(p)
        for m in shard["models"]:
            key = _entry_key(m)
            if key in seen:
                raise UsageError(
                    f"{m.get('model')} ({m.get('inputs')}, input {m.get('input_shape')}) is in "
                    f"both {seen[key]} and {p}: give one shard per model and input")
            seen[key] = str(p)
        shards.append(shard)
    return {"environment": merge_environments([s["environment"] for s in shards]),
            "models": [m for shard in shards for m in shard["models"]]}


def merge_environments(envs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The shards' environments as one: a value they share is kept; differing versions,
    CPUs or platforms are listed ``"2.13.0 | 2.12.0"`` (a job on another stack must show);
    ``time`` is the latest; ``shards`` counts them."""
    if len(envs) == 1:
        return dict(envs[0])
    merged: dict[str, Any] = {}
    for key in dict.fromkeys(k for env in envs for k in env):
        values = list(dict.fromkeys(json.dumps(env.get(key)) for env in envs))
        if len(values) == 1:
            merged[key] = envs[0].get(key)
        elif key == "time":
            merged[key] = max(str(env.get(key)) for env in envs)
        else:  # a count (cpu_count) too: the schema's strings hold every value
            shown = [json.loads(v) for v in values]
            merged[key] = " | ".join("not installed" if v is None else str(v) for v in shown)
    merged["shards"] = len(envs)
    return merged
