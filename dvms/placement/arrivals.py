"""Arrivals that wait: the dependency between a repair's moves, as the plan will see it.

A plan (plan.py) starts a migration only when its destination has room for the VM with
everything still on it, the VMs about to leave included, and at most
``max_migrations_in`` arrivals per host at once. So a VM sent to a host that must first
shed load waits one migration (a chain), and a host taking more arrivals than that cap
takes them in rounds. Both make the plan longer; neither changes the end state's cost.

``Arrivals`` answers "would this VM arrive on that host without waiting" on the
workspace's current state; ``unchain`` moves arrivals that would wait to hosts with room
now, directly or by first sending an arrival already there on to a third host (an
ejection chain of one), without adding a migration:

    host h lacks room now (its leavers still count) or takes > max_migrations_in
      -> each arrival v on h:  another host with room now for v?         move v
                               a host where v fits once its arrival w
                               goes on to a host with room now for w?    move w, v
"""

from __future__ import annotations

from collections.abc import Sequence

from dvms.placement.workspace import Workspace

__all__ = ["Arrivals", "unchain"]


class Arrivals:
    """Room *now* on each host: the end state's use plus what its leavers still hold.

    ``origin`` is the host of every VM when the plan starts (-1: not running)."""

    def __init__(self, ws: Workspace, origin: Sequence[int]) -> None:
        self.ws = ws
        self.origin = origin
        self.cap_in = ws.config.max_migrations_in
        #: VMs on each host when the plan starts
        self.first: list[list[int]] = [[] for _ in ws.hosts]
        for v, h in enumerate(origin):
            if h != -1:
                self.first[h].append(v)

    def incoming(self, h: int) -> int:
        """VMs migrating to ``h`` in the current end state (boots excluded)."""
        origin = self.origin
        return sum(origin[v] not in (-1, h) for v in self.ws.host_vms[h])

    def _now(self, h: int) -> list[float]:
        ws = self.ws
        used = list(ws.used[h])
        for v in self.first[h]:
            if ws.assign[v] != h:  # leaving: held until its migration ends
                for r in ws.active[v]:
                    used[r] += ws.cur[v][r]
        return used

    def free(self, unit: Sequence[int], h: int) -> bool:
        """Whether ``unit`` (not placed) would arrive on ``h`` without waiting."""
        ws = self.ws
        moving = [v for v in unit if self.origin[v] not in (-1, h)]
        if moving and self.incoming(h) + len(moving) > self.cap_in:
            return False
        used, lim = self._now(h), ws.limits[h]
        for r in range(len(used)):
            need = sum(ws.demand[v][r] for v in unit)
            if need and used[r] + need > lim[r]:
                return False
        return True

    def waits(self, h: int) -> bool:
        """Whether some arrival on ``h`` would wait (no room now, or too many)."""
        if not self.incoming(h):
            return False
        if self.incoming(h) > self.cap_in:
            return True
        return any(u > lim for u, lim in zip(self._now(h), self.ws.limits[h], strict=True))

    def arrivals(self, h: int) -> list[int]:
        """Movable VMs migrating to ``h``, the largest first."""
        ws, origin = self.ws, self.origin
        here = [v for v in ws.host_vms[h] if origin[v] not in (-1, h) and ws.movable[v]]
        return sorted(here, key=lambda v: (-sum(ws.demand[v]), v))


class _Budget:
    def __init__(self, checks: int) -> None:
        self.left = checks

    def spend(self) -> bool:
        self.left -= 1
        return self.left >= 0


def unchain(ws: Workspace, origin: Sequence[int], checks: int) -> int:
    """Move arrivals that would wait (see the module docstring), spending at most
    ``checks`` filter-pipeline checks; returns how many VMs moved. The end state keeps
    every constraint and the same number of migrations."""
    arr = Arrivals(ws, origin)
    budget = _Budget(checks)
    moved = 0
    for h in range(len(ws.hosts)):
        for v in arr.arrivals(h) if arr.waits(h) else ():
            if budget.left <= 0 or not arr.waits(h):
                break
            ws.remove(v)
            got = _relocate(ws, arr, v, h, budget) or _eject(ws, arr, v, h, budget)
            if got:
                moved += got
            else:
                ws.place(v, h)
    return moved


def _relocate(ws: Workspace, arr: Arrivals, v: int, h: int, budget: _Budget) -> int:
    """``v`` (lifted off ``h``) to the least loaded host with room now for it."""
    for h2 in ws.ranked():
        if h2 in (h, arr.origin[v]):
            continue
        if not budget.spend():
            return 0
        if arr.free((v,), h2) and ws.try_place((v,), h2):
            return 1
    return 0


def _eject(ws: Workspace, arr: Arrivals, v: int, h: int, budget: _Budget) -> int:
    """``v`` (lifted off ``h``) takes the place of an arrival ``w`` on another host,
    which goes on to a host with room now for it."""
    for h2 in ws.ranked():
        if h2 in (h, arr.origin[v]):
            continue
        for w in arr.arrivals(h2):
            if not budget.spend():
                return 0
            ws.remove(w)
            if arr.free((v,), h2) and ws.try_place((v,), h2):
                if _relocate(ws, arr, w, h2, budget):
                    return 2
                ws.remove(v)
            ws.place(w, h2)
    return 0
