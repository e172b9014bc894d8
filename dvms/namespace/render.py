"""Rendering: minimega's aligned tables, and a JSON-friendly form of a ``Result``.

Tables follow minimega's tabwriter (minimum cell width 5, one space of padding, cells
joined by ``| ``, last column unpadded); a table without rows prints nothing, as
minimega does.

``Console``: an in-memory console: the interpreter plus a stand-in daemon that "carries out"
effects at once (every launch succeeds). For tests, demos and replaying minimega
scripts in their ``.want`` form without a cluster:

    console = Console(Cluster(hosts=(Host("mm1"), Host("mm2")), local="mm1"))
    print(console.script("ns queueing true\\nvm launch kvm a\\nns schedule dry-run"))

``script`` echoes each command as ``## command`` followed by its output, as minimega's
test harness does; ``#`` comment lines and ``shell ...`` lines are echoed, not run.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any

from dvms.namespace.commands import execute
from dvms.namespace.config import VmConfig
from dvms.namespace.effects import Cluster, Context, Effect, Launch, Result, Session, Table, Text
from dvms.namespace.schedule import launch_finished
from dvms.namespace.state import State
from dvms.placement import PlacementConfig

__all__ = ["Console", "render_json", "render_table", "render_text"]

_MIN_WIDTH = 5


def render_table(table: Table, *, headers: bool = True) -> str:
    if not table.rows:
        return ""
    lines = [table.header, *table.rows] if headers else list(table.rows)
    columns = range(len(table.header))
    widths = [max(_MIN_WIDTH, max(len(line[i]) for line in lines) + 1) for i in columns]
    out = []
    for line in lines:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(line[:-1])]
        out.append("| ".join([*cells, line[-1]]))
    return "\n".join(out) + "\n"


def render_text(result: Result, host: str = "") -> str:
    """What a terminal shows: the output, or ``E: <error>``; with ``.json true``,
    minimega's JSON: a list of responses (one: dvms merges the hosts' answers), each
    ``{"Host", "Response", "Header", "Tabular", "Error", "Data"}`` as minicli marshals
    them (``host``: the node that answered)."""
    if result.format.json:
        return _render_minimega_json(result, host)
    if result.error is not None:
        return f"E: {result.error}\n"
    if isinstance(result.output, Table):
        return render_table(result.output, headers=result.format.headers)
    if isinstance(result.output, Text) and result.output.text:
        text = result.output.text
        return text if text.endswith("\n") else text + "\n"
    return ""


def _render_minimega_json(result: Result, host: str) -> str:
    table = result.output if isinstance(result.output, Table) else None
    text = result.output.text if isinstance(result.output, Text) else ""
    response = {
        "Host": host,
        "Response": text,
        "Header": list(table.header) if table is not None and result.format.headers else None,
        "Tabular": [list(r) for r in table.rows] if table is not None else None,
        "Error": result.error or "",
        "Data": None,
    }
    return json.dumps([response], separators=(",", ":")) + "\n"


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


@dataclass
class Console:
    """One session on one node, with the namespace state it shares with nobody else."""

    cluster: Cluster
    state: State = field(default_factory=State)
    session: Session = field(default_factory=Session)
    now: float = 0.0
    placement: PlacementConfig = field(default_factory=PlacementConfig)
    effects: list[Effect] = field(default_factory=list)
    bridge_key: int = 0x5EED

    def execute(self, line: str | Sequence[str]) -> Result:
        ctx = Context(self.state, self.cluster, self.session, now=self.now,
                      bridge_key=self.bridge_key, placement=self.placement)  # fmt: skip
        result = execute(line, ctx)
        self.state, self.session = result.state, result.session
        for effect in result.effects:
            self.effects.append(effect)
            if isinstance(effect, Launch):
                self.state = launch_finished(
                    self.state, effect.namespace, effect.schedule, {}, now=self.now
                )
        return result

    def run(self, line: str) -> str:
        """Execute ``line`` and return what a terminal would show."""
        return render_text(self.execute(line))

    def script(self, text: str) -> str:
        """Run a minimega script; the transcript in minimega's ``.want`` form."""
        out = []
        for raw in text.splitlines():
            line = raw.strip()
            if not line:
                out.append("")
                continue
            out.append(f"## {line}")
            if line.startswith("#") or line.startswith("shell "):
                continue
            shown = self.run(line).rstrip("\n")
            if shown:
                out.append(shown)
        return "\n".join(out) + "\n"
