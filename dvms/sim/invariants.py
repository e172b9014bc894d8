"""Safety invariants of the partition protocol, checked while a simulation runs.

Shipped in the package (not only in tests) so every simulation can switch them on:

1. A node belongs to at most one partition: no node is a member of two partitions whose
   leaders are both applying a plan (acting on a host another partition also acts on).
   It checks the leaders' views (what each leader may still act on), not the members'
   own: a member follows one view at a time, the danger is two leaders counting on it.
   Two leaders of one partition id (an ISP that forked under loss) are two partitions
   here. Each conflict (a node, two leaders) counts once however long it lasts.
2. Every partition is released within ``lease + 1 s`` of its last update: a member that
   neither leads, nor holds the ISP, nor has a migration into or out of its host running
   must be free by then (one held by a migration: within ``lease_check_s + 1 s`` of the
   last time it was seen held).

A frozen node (a stopped daemon) is left out while it is frozen: it runs no timer and
acts on nothing; its overdue timers fire as soon as it resumes, and from then on it is
checked again.

(Every VM on exactly one host is the world's invariant, ``World.check_invariants``; no
host over capacity and no broken constraint after a plan are checked on the plan itself
by the independent checker in ``dvms.placement.checker`` before the plan is applied.)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from dvms.partition.base import LeadPhase
from dvms.partition.config import PartitionConfig
from dvms.partition.messages import PartitionView

__all__ = ["LEASE_FREED", "ONE_PARTITION", "InvariantChecker"]

#: Names of the two invariants checked here (``InvariantChecker.by_kind``).
ONE_PARTITION = "one_partition"
LEASE_FREED = "lease_freed"


class InvariantChecker:
    def __init__(self, config: PartitionConfig, report: Callable[[str], None]) -> None:
        self.config = config
        self.report = report
        self.busy: dict[int, tuple[int, float]] = {}  # position -> (pid, last update)
        self.violations = 0
        #: position -> when it was last seen held in its partition by a migration
        self._held: dict[int, float] = {}
        #: conflicts already counted: (node, one claim, the other claim)
        self._seen: set[tuple[int, tuple[int, int], tuple[int, int]]] = set()
        #: violations per invariant (``ONE_PARTITION``, ``LEASE_FREED``)
        self.by_kind: Counter[str] = Counter()

    def changed(self, pos: int, view: PartitionView, role: str, now: float) -> None:
        self.busy[pos] = (view.pid, now)

    def released(self, pos: int, pid: int, now: float) -> None:
        if self.busy.get(pos, (None,))[0] == pid:
            del self.busy[pos]
            self._held.pop(pos, None)

    def forget(self, pos: int) -> None:
        self.busy.pop(pos, None)
        self._held.pop(pos, None)

    def _fail(self, kind: str, what: str) -> None:
        self.violations += 1
        self.by_kind[kind] += 1
        self.report(what)

    def check(self, nodes: list[Any], now: float) -> None:
        claimed: dict[int, tuple[int, int]] = {}
        for pos in list(self.busy):
            node = nodes[pos]
            part = node.core.partition
            if not node.alive or part.view is None:
                self.busy.pop(pos, None)
                continue
            if node.frozen:  # a stopped daemon does nothing; checked again once it runs
                continue
            self._check_lease(pos, part, node.local(now))
            lead = part.lead
            if lead is not None and lead.phase == LeadPhase.ACTING:
                self._check_disjoint((part.view.pid, node.node_id), part.view.members, claimed)

    def _check_lease(self, pos: int, part: Any, now: float) -> None:
        overdue = self._overdue(pos, part, now)
        if overdue is None:
            return
        self._fail(
            LEASE_FREED,
            f"node at position {pos} still in partition {part.view.pid:x} "
            f"{overdue:.1f} s after its last update (lease {self.config.lease_s} s)",
        )

    def _overdue(self, pos: int, part: Any, now: float) -> float | None:
        """How long ago the member at ``pos`` was last updated, if it should be free by
        ``now`` (its own clock) and is not; None while it may still be in its partition."""
        last = part.lease_until - self.config.lease_s
        if now <= last + self.config.lease_s:
            return None
        if part._holding is not None or part.lead is not None:
            return None
        if part.held_by_migration():
            self._held[pos] = now
            return None
        if now <= last + self.config.lease_s + 1.0:
            return None
        # A member held past its lease by a migration learns that it landed at its next
        # lease check (a destination is not told): 1 s more from the last time it was
        # seen held, plus that check's period.
        held = self._held.get(pos)
        if held is not None and now <= held + self.config.lease_check_s + 1.0:
            return None
        return now - last

    def open_at_end(self, nodes: list[Any], end: float) -> int:
        """Running nodes still in a partition at the end of a run that should be free by
        then, by the rule ``check`` applies while the run goes (not reported: the run's
        summary counts them, ``partitions_open``). A frozen node is left out."""
        count = 0
        for pos, node in enumerate(nodes):
            part = node.core.partition
            if node.alive and not node.frozen and part.view is not None:
                count += self._overdue(pos, part, node.local(end)) is not None
        return count

    def _check_disjoint(
        self,
        claim: tuple[int, int],
        members: Iterable[Any],
        claimed: dict[int, tuple[int, int]],
    ) -> None:
        """``claim``: (partition id, leader's node id)."""
        for m in members:
            other = claimed.setdefault(m.node_id, claim)
            if other == claim:
                continue
            key = (m.node_id, *sorted((other, claim)))
            if key in self._seen:
                continue
            self._seen.add(key)
            (p1, l1), (p2, l2) = other, claim
            self._fail(
                ONE_PARTITION,
                f"node {m.node_id:x} claimed by partitions {p1:x} (leader {l1:x}) and "
                f"{p2:x} (leader {l2:x})",
            )
