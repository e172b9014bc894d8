"""Rendering: minimega's aligned tables, and a JSON-friendly form of a ``Result``.

Tables follow minimega's tabwriter (minimum cell width 5, one space of padding, cells
joined by ``| ``, last column unpadded); a table without rows prints nothing, as
minimega does.
"""

from __future__ import annotations

from dataclasses import fields, is_dataclass
from typing import Any

from dvms.namespace.config import VmConfig
from dvms.namespace.effects import Result, Table, Text

__all__ = ["render_json", "render_table", "render_text"]

_MIN_WIDTH = 5


def render_table(table: Table) -> str:
    if not table.rows:
        return ""
    lines = [table.header, *table.rows]
    columns = range(len(table.header))
    widths = [max(_MIN_WIDTH, max(len(line[i]) for line in lines) + 1) for i in columns]
    out = []
    for line in lines:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(line[:-1])]
        out.append("| ".join([*cells, line[-1]]))
    return "\n".join(out) + "\n"


def render_text(result: Result) -> str:
    """What a terminal shows: the output, or ``E: <error>``."""
    if result.error is not None:
        return f"E: {result.error}\n"
    if isinstance(result.output, Table):
        return render_table(result.output)
    if isinstance(result.output, Text) and result.output.text:
        text = result.output.text
        return text if text.endswith("\n") else text + "\n"
    return ""


def _plain(value: Any) -> Any:
    if isinstance(value, VmConfig):
        return value.to_record()
    if is_dataclass(value) and not isinstance(value, type):
        out = {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
        return {"kind": type(value).__name__, **out}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, frozenset | set):
        return sorted(value)
    return value


def render_json(result: Result) -> dict[str, Any]:
    """A CBOR/JSON-friendly map: ok, error, output (header + rows, or text), effects."""
    out: dict[str, Any] = {"ok": result.ok, "error": result.error}
    if isinstance(result.output, Table):
        out["header"] = list(result.output.header)
        out["rows"] = [list(r) for r in result.output.rows]
    elif isinstance(result.output, Text):
        out["text"] = result.output.text
    out["effects"] = [_plain(e) for e in result.effects]
    return out
