"""Rows to text: aligned tables, CSV or JSON (for `sql`, `history`, `status`)."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any


def cell_text(value: Any, width: int | None = 60) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    text = str(value)
    if re.match(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d\.\d+$", text):  # SQLite's text timestamps
        text = text[:19]
    # A table's cell is one line: line breaks and tabs shown as escapes (a sample's text broke the table's rows).
    text = text.replace("\r", "\\r").replace("\n", "\\n").replace("\t", "\\t")
    return text if width is None or len(text) <= width else text[: width - 3] + "..."


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, (bytes, memoryview)):
        return bytes(value).hex()
    return value


FORMATS = ("table", "csv", "json", "jsonl")


def select_columns(columns: Sequence[str], rows: Sequence[Sequence[Any]], wanted: str | None) -> tuple[list[str], list[tuple]]:
    """Only the comma-separated `wanted` columns, in that order (all when None); unknown names are an error."""
    if not wanted:
        return list(columns), [tuple(r) for r in rows]
    names = [w.strip() for w in wanted.split(",") if w.strip()]
    unknown = [n for n in names if n not in columns]
    if unknown:
        from selfloop.errors import SelfloopError

        raise SelfloopError(f"--columns: no column {', '.join(map(repr, unknown))} (columns: {', '.join(columns)})")
    index = [list(columns).index(n) for n in names]
    return names, [tuple(r[i] for i in index) for r in rows]


def compact(columns: Sequence[str], rows: Sequence[Sequence[Any]], keep: Sequence[str]) -> tuple[list[str], list[tuple]]:
    """The `keep` columns that exist and hold a value in some row (a loop without an LLM judge shows no judge
    column), in `keep`'s order."""
    names = [c for c in keep if c in columns and any(r[list(columns).index(c)] is not None for r in rows)]
    return select_columns(columns, rows, ",".join(names)) if names else (list(columns), [tuple(r) for r in rows])


def render(columns: Sequence[str], rows: Sequence[Sequence[Any]], fmt: str = "table", *, wide: bool = False) -> str:
    """table (cells cut at 60 characters unless `wide`), csv, json (one array) or jsonl (an object a line)."""
    if fmt == "jsonl":
        return "\n".join(json.dumps({c: _jsonable(v) for c, v in zip(columns, row)}, default=str) for row in rows)
    if fmt == "json":
        return json.dumps([{c: _jsonable(v) for c, v in zip(columns, row)} for row in rows], indent=2, default=str)
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([[_jsonable(v) for v in row] for row in rows])
        return buf.getvalue().rstrip("\n")
    cells = [[cell_text(v, None if wide else 60) for v in row] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in cells]
    lines.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(lines)


def flat(config: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """A config snapshot as `section.key` parameters (values as text)."""
    out: dict[str, str] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out |= flat(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = str(value)[:5000]
    return out
