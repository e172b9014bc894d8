"""An in-memory console: the interpreter plus a stand-in daemon that "carries out"
effects at once (every launch succeeds). For tests, demos and replaying minimega
scripts in their ``.want`` form without a cluster:

    console = Console(Cluster(hosts=(Host("mm1"), Host("mm2")), local="mm1"))
    print(console.script("ns queueing true\\nvm launch kvm a\\nns schedule dry-run"))

``script`` echoes each command as ``## command`` followed by its output, as minimega's
test harness does; ``#`` comment lines and ``shell ...`` lines are echoed, not run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from dvms.namespace.commands import execute
from dvms.namespace.effects import Cluster, Context, Effect, Launch, Result, Session
from dvms.namespace.render import render_text
from dvms.namespace.reports import launch_finished
from dvms.namespace.state import State
from dvms.placement import PlacementConfig

__all__ = ["Console"]


@dataclass
class Console:
    """One session on one node, with the namespace state it shares with nobody else."""

    cluster: Cluster
    state: State = field(default_factory=State)
    session: Session = field(default_factory=Session)
    now: float = 0.0
    placement: PlacementConfig = field(default_factory=PlacementConfig.minimega)
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
