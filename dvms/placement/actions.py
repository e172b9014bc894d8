"""A plan's records: its timed ``Action``s and the ``Plan`` the solvers return.

Kept apart from the scheduler (plan.py) so they stay ordinary Python classes in the
compiled build (``dvms.accel``): the partition layer subclasses ``Action``, and a class
compiled by mypyc cannot be subclassed from interpreted code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["Action", "Plan"]


@dataclass(frozen=True, slots=True)
class Action:
    """One step: ``migrate`` (src -> dst), ``boot`` (on dst), ``shutdown`` (on src),
    ``suspend`` (on src, where it then sleeps: src = dst), or ``allocate`` (``resource``
    grows to ``amount`` on dst). Times in seconds."""

    kind: str
    vm: str
    start: int
    end: int
    src: str | None = None
    dst: str | None = None
    resource: str | None = None
    amount: int | None = None

    def __str__(self) -> str:
        where = {
            "migrate": f"{self.src} -> {self.dst}",
            "boot": f"on {self.dst}",
            "shutdown": f"on {self.src}",
            "suspend": f"on {self.src}",
            "allocate": f"{self.resource}={self.amount} on {self.dst}",
        }[self.kind]
        return f"{self.start:>4}:{self.end:<4} {self.kind} {self.vm} {where}"

    def to_dict(self) -> dict:
        out = {"kind": self.kind, "vm": self.vm, "start": self.start, "end": self.end}
        for key in ("src", "dst", "resource", "amount"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out


@dataclass(frozen=True, slots=True)
class Plan:
    """``status`` is ``solved`` or ``infeasible``; ``placement`` is the final host of
    every running VM (the current one when infeasible); ``reason`` explains a failure."""

    status: str
    actions: tuple[Action, ...] = ()
    placement: Mapping[str, str] = field(default_factory=dict)
    reason: str = ""
    proven: bool = False
    details: tuple[str, ...] = ()

    @property
    def migrations(self) -> int:
        return sum(a.kind == "migrate" for a in self.actions)

    @property
    def duration(self) -> int:
        return max((a.end for a in self.actions), default=0)

    def __str__(self) -> str:
        if self.status != "solved":
            return f"infeasible: {self.reason}"
        if not self.actions:
            return "already viable: empty plan"
        lines = [f"{len(self.actions)} actions, {self.migrations} migrations, {self.duration} s"]
        return "\n".join([*lines, *map(str, self.actions)])
