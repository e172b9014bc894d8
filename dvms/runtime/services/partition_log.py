"""What ``dvms partitions`` shows: every partition this node took part in, in flight and
recent, built from the partition core's events (pure: the runner feeds it).

    PartitionChanged(view, role) -> open or update the record (members, leader, state)
    PlanApplied(pid, ...)        -> actions and migrations of the plan
    PartitionReleased(pid, why)  -> ended, with the reason as its outcome ("solved" ...)

A node sees a partition as the members see it: the initiator of a launch sees the final
view (the leader broadcasts Finishing), a node recruited and released early sees less.
``merge_rows`` combines the rows several nodes report about the same partition.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from dvms.overlay.messages import Contact
from dvms.partition.core import PartitionChanged, PartitionReleased, PlanApplied
from dvms.partition.messages import STATE_NAMES
from dvms.runtime.messages import PartitionRow

__all__ = ["PartitionLog", "PartitionRecord", "merge_rows"]

#: Ended partitions kept per node.
KEEP_ENDED = 100


@dataclass
class _Record:
    """What the log gathers about one partition from the core's events; ``row`` turns it
    into the wire ``PartitionRow`` (contacts become host names when asked)."""

    pid: int
    started: float
    role: str = "member"
    leader: Contact | None = None
    initiator: Contact | None = None
    members: tuple[Contact, ...] = ()
    state: str = ""
    events: tuple[str, ...] = ()
    ended: float | None = None
    outcome: str = ""
    actions: int = 0
    migrations: int = 0
    led: bool = False

    def row(self, name_of: Callable[[Contact], str]) -> PartitionRow:
        ended = self.ended is not None
        return PartitionRow(
            pid=self.pid,
            role="leader" if self.led else self.role,
            leader=name_of(self.leader) if self.leader is not None else "",
            members=tuple(name_of(m) for m in self.members),
            state="ended" if ended else self.state,
            events=self.events,
            started=self.started,
            ended=self.ended,
            outcome=self.outcome if ended else "in flight",
            actions=self.actions,
            migrations=self.migrations,
        )


#: One partition as this node saw it (read by the observability service).
PartitionRecord = _Record


class PartitionLog:
    def __init__(self) -> None:
        self._records: OrderedDict[int, _Record] = OrderedDict()

    def on_event(self, event: object, wall: float) -> None:
        if isinstance(event, PartitionChanged):
            view = event.view
            rec = self._records.get(view.pid)
            if rec is None:
                # A node is in one partition at a time: one it was in and did not see end
                # (it was merged into another, or moved on as the ISP passed) is over for it.
                for other in self._records.values():
                    if other.ended is None:
                        other.ended, other.outcome = wall, "left"
                rec = self._records[view.pid] = _Record(view.pid, wall)
            rec.role = event.role
            rec.led = rec.led or event.role == "leader"
            rec.leader = view.leader
            rec.initiator = view.initiator
            rec.members = view.members
            rec.state = STATE_NAMES.get(view.state, str(view.state))
            rec.events = tuple(f"{e.kind}:{e.event_id:x}" for e in view.events)
        elif isinstance(event, PlanApplied) and event.pid in self._records:
            rec = self._records[event.pid]
            rec.actions, rec.migrations = event.actions, event.migrations
        elif isinstance(event, PartitionReleased) and event.pid in self._records:
            rec = self._records[event.pid]
            rec.ended, rec.outcome = wall, event.reason
            self._trim()

    def _trim(self) -> None:
        ended = [pid for pid, r in self._records.items() if r.ended is not None]
        for pid in ended[: max(0, len(ended) - KEEP_ENDED)]:
            del self._records[pid]

    def get(self, pid: int) -> PartitionRecord | None:
        """What this node gathered about partition ``pid`` (None once trimmed)."""
        return self._records.get(pid)

    def reported_here(self, pid: int, me: int) -> PartitionRecord | None:
        """The record of ended partition ``pid`` if this node (id ``me``) is the one that
        reports its end (metrics, the outcome log line), else None. Each end is reported
        once: by the node leading the partition at its end, or, when the leader is gone
        (no leader saw the end: this node's lease ran out, or the leader was the
        initiator and was seen crashing), by its deputy: the oldest member of the last
        view this node held that is not the leader (views list the newest first; the
        oldest is usually the initiator, and every member's view agrees on it unless
        it was dropped). Not reported: a leaderless end whose deputy is gone too.
        Reported twice: a deputy cut off from a live leader (its lease runs out, the
        leader reports its own end)."""
        rec = self._records.get(pid)
        if rec is None or rec.ended is None:
            return None
        if rec.role == "leader":
            return rec
        leader = rec.leader.node_id if rec.leader is not None else None
        leaderless = rec.outcome == "lease expired" or (
            rec.outcome.startswith("initiator crashed")
            and rec.initiator is not None
            and rec.initiator.node_id == leader
        )
        if not leaderless:
            return None  # the leader ended it and reports it
        deputy = next((m.node_id for m in reversed(rec.members) if m.node_id != leader), None)
        return rec if deputy == me else None

    def leading(self) -> int:
        """Partitions in flight that this node leads now."""
        return sum(1 for r in self._records.values() if r.ended is None and r.role == "leader")

    def rows(self, name_of: Callable[[Contact], str]) -> tuple[PartitionRow, ...]:
        return tuple(r.row(name_of) for r in self._records.values())


def merge_rows(rows: Iterable[PartitionRow]) -> list[PartitionRow]:
    """One row per partition: an ended view over one in flight (a crashed reporter's row
    stays "in flight"), the final leader's (it knows the plan) over a member's, else the
    one with the most members; in flight first, then the most recent."""
    best: dict[int, PartitionRow] = {}
    for row in rows:
        old = best.get(row.pid)
        if old is None or _rank(row) > _rank(old):
            best[row.pid] = row
    return sorted(best.values(), key=lambda r: (r.ended is not None, -(r.ended or r.started)))


def _rank(row: PartitionRow) -> tuple[bool, int, bool, int, float]:
    return (
        row.ended is not None,
        row.actions,
        row.role == "leader",
        len(row.members),
        row.ended or 0.0,
    )
