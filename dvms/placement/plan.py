"""Plans: the timed actions that take the current placement to a target one.

``schedule_plan`` is a list scheduler over integer seconds, in the spirit of BtrPlace's
slices (as BtrPlace's plans):

- a migration occupies its source (current demand) *and* its destination (future
  demand) from its start until its end; a boot occupies its destination from its start;
  a shutdown frees its host at its end; a growing allocation needs room on its host;
- an arrival starts only when the destination has room on every resource and every
  continuous constraint still holds with the VM present on both hosts;
- at most ``max_migrations_out`` / ``max_migrations_in`` migrations per host at once;
- arrivals to hosts nobody still has to leave start first, then longer ones;
- when nothing runs and nothing can start, the remaining moves wait on each other (a
  cycle): one VM first goes to a *pivot* host with room (an extra migration, which
  BtrPlace does not do); if no pivot exists the cycle is reported.
"""

from __future__ import annotations

from collections.abc import Sequence

from dvms.placement.actions import Action, Plan
from dvms.placement.filters import CapacityOnSet, LonelyFilter, SpreadFilter
from dvms.placement.workspace import Workspace

__all__ = ["Action", "Plan", "PlanError", "schedule_plan"]


class PlanError(Exception):
    """The target cannot be reached step by step (an unbreakable cycle)."""


class _Move:
    """One action being scheduled. A plain class, not a dataclass: compiled, a
    dataclass's ``__init__`` is generated Python code, run at every construction."""

    __slots__ = ("dst", "dur", "end", "kind", "src", "start", "v")

    def __init__(self, kind: str, v: int, src: int, dst: int, dur: int) -> None:
        self.kind = kind
        self.v = v
        self.src = src
        self.dst = dst
        self.dur = dur
        self.start = -1
        self.end = -1


ContinuousIndex = tuple[dict[int, list[SpreadFilter]], list[LonelyFilter | CapacityOnSet]]
_NO_SPREAD: list[SpreadFilter] = []


def _continuous_index(ws: Workspace) -> ContinuousIndex:
    """Continuous spreads by member (thousands of them, a VM is in few); lonely and set
    capacities concern every VM. Built once per workspace (its continuous filters are
    fixed when it is built)."""
    found = ws.plan_index
    if found is None:
        spreads: dict[int, list[SpreadFilter]] = {}
        everyone: list[LonelyFilter | CapacityOnSet] = []
        for f in ws.continuous:
            if isinstance(f, SpreadFilter):
                for v in f.members:
                    spreads.setdefault(v, []).append(f)
            elif isinstance(f, LonelyFilter | CapacityOnSet):
                everyone.append(f)
        found = ws.plan_index = (spreads, everyone)
    return found


def plan_start(
    ws: Workspace, origin: Sequence[int]
) -> tuple[tuple[int, ...], list[list[float]], list[set[int]]]:
    """``origin``, the occupancy of each host and the VMs on it before the plan: the
    same for every plan of one repair (the local search schedules up to
    ``local_search_evals`` of them), so built once and kept in ``ws.plan_start``."""
    key = tuple(origin)
    start = ws.plan_start
    if start is None or start[0] != key:
        occ = [[0.0] * len(ws.resources) for _ in ws.hosts]
        present: list[set[int]] = [set() for _ in ws.hosts]
        cur = ws.cur
        for v, h in enumerate(origin):
            if h != -1:
                row = occ[h]
                for r, a in enumerate(cur[v]):
                    row[r] += a
                present[h].add(v)
        ws.plan_start = start = (key, occ, present)
    return start


class _Scheduler:
    def __init__(
        self,
        ws: Workspace,
        target: Sequence[int],
        origin: Sequence[int],
        suspend: frozenset[int] = frozenset(),
    ) -> None:
        self.ws = ws
        #: VMs that stop by suspending on their host (``sleeping``), not by shutting down
        self.suspend = suspend
        cfg = ws.config
        self.cap_out, self.cap_in = cfg.max_migrations_out, cfg.max_migrations_in
        nh = len(ws.hosts)
        start = plan_start(ws, origin)
        self.occ = [list(row) for row in start[1]]
        self.present = [set(vms) for vms in start[2]]
        self.out = [0] * nh
        self.inc = [0] * nh
        self.origin = list(origin)
        self.spreads, self.everyone = _continuous_index(ws)
        self.pending: list[_Move] = []
        self.running: list[_Move] = []
        self.done: list[_Move] = []
        self._collect(target, origin)

    def _add(self, h: int, amount: Sequence[float], sign: int) -> None:
        row = self.occ[h]
        for r, a in enumerate(amount):
            row[r] += sign * a

    def _collect(self, target: Sequence[int], origin: Sequence[int]) -> None:
        ws = self.ws
        for v, (src, dst) in enumerate(zip(origin, target, strict=True)):
            vm = ws.vms[v]
            if src == dst:
                if src != -1 and v in ws.grown:
                    self.pending.append(
                        _Move("allocate", v, src, src, vm.duration("allocate", ws.config))
                    )
            elif src == -1:
                self.pending.append(_Move("boot", v, -1, dst, vm.duration("boot", ws.config)))
            elif dst == -1:
                kind = "suspend" if v in self.suspend else "shutdown"
                m = _Move(kind, v, src, -1, vm.duration(kind, ws.config))
                self._start(m, 0)
            else:
                self.pending.append(_Move("migrate", v, src, dst, ws.cost[v]))

    # -- feasibility of starting a move now -----------------------------------------

    def _room(self, v: int, h: int, extra: Sequence[float]) -> bool:
        row, lim = self.occ[h], self.ws.limits[h]
        return all(row[r] + extra[r] <= lim[r] for r in range(len(row)))

    def _continuous_ok(self, v: int, h: int) -> bool:
        for s in self.spreads.get(v, _NO_SPREAD):
            if any(u in s.members and u != v for u in self.present[h]):
                return False
        for f in self.everyone:
            if isinstance(f, LonelyFilter):
                mine = v in f.members
                if any((u in f.members) != mine for u in self.present[h] if u != v):
                    return False
            elif isinstance(f, CapacityOnSet) and h in f.hosts:
                total = sum(f._use(u) for x in f.hosts for u in self.present[x] if u != v)
                if total + f._use(v) > f.amount:
                    return False
        return True

    def can_start(self, m: _Move) -> bool:
        v = m.v
        if m.kind == "allocate":
            grow = [max(0.0, f - c) for f, c in zip(self.ws.demand[v], self.ws.cur[v], strict=True)]
            return self._room(v, m.dst, grow)
        if m.kind == "migrate" and (
            self.out[m.src] >= self.cap_out or self.inc[m.dst] >= self.cap_in
        ):
            return False
        return (
            self._room(v, m.dst, self._dst_amount(m))
            and self._coschedule_ok(v, m.dst)
            and self._continuous_ok(v, m.dst)
        )

    def _coschedule_ok(self, v: int, h: int) -> bool:
        """Everything present on ``h`` (leaving VMs included) counts against limits."""
        cos = self.ws.cos
        here = self.present[h] | {v}
        limits = [cos[u] for u in here if cos[u] != -1]
        return not limits or len(here) <= min(limits)

    def _dst_amount(self, m: _Move) -> Sequence[float]:
        return self.ws.demand[m.v]

    def _src_amount(self, m: _Move) -> Sequence[float]:
        # a VM that already moved once (pivot) holds its future share
        return self.ws.demand[m.v] if m.src != self.origin[m.v] else self.ws.cur[m.v]

    # -- running the clock ------------------------------------------------------------

    def _start(self, m: _Move, t: int) -> None:
        m.start, m.end = t, t + m.dur
        v = m.v
        if m.kind == "allocate":
            grow = [max(0.0, f - c) for f, c in zip(self.ws.demand[v], self.ws.cur[v], strict=True)]
            self._add(m.dst, grow, +1)
        elif m.kind in ("migrate", "boot"):
            self._add(m.dst, self._dst_amount(m), +1)
            self.present[m.dst].add(v)
            if m.kind == "migrate":
                self.out[m.src] += 1
                self.inc[m.dst] += 1
        self.running.append(m)

    def _finish(self, m: _Move) -> None:
        v = m.v
        if m.kind == "migrate":
            self._add(m.src, self._src_amount(m), -1)
            self.present[m.src].discard(v)
            self.out[m.src] -= 1
            self.inc[m.dst] -= 1
        elif m.kind in ("shutdown", "suspend"):
            self._add(m.src, self.ws.cur[v], -1)
            self.present[m.src].discard(v)
        self.done.append(m)

    def _priority(self, m: _Move, leaving: set[int]) -> tuple:
        """Arrivals on hosts nobody still has to leave first, then migrations, then the
        longest, then by VM key (deterministic)."""
        return (m.dst in leaving, m.kind != "migrate", -m.dur, self.ws.vkeys[m.v])

    def _start_what_fits(self, t: int) -> None:
        while True:
            # hosts some pending migration still leaves (a set: a Counter is interpreted)
            leaving = {p.src for p in self.pending if p.kind == "migrate"}
            started: set[int] = set()
            for m in sorted(self.pending, key=lambda m: self._priority(m, leaving)):
                if self.can_start(m):
                    self._start(m, t)
                    started.add(id(m))
            if not started:
                return
            self.pending = [m for m in self.pending if id(m) not in started]

    def run(self) -> list[_Move]:
        t = 0
        while self.pending or self.running:
            self._start_what_fits(t)
            if self.running:
                t = min(m.end for m in self.running)
                ending = [m for m in self.running if m.end == t]
                self.running = [m for m in self.running if m.end != t]
                for m in ending:
                    self._finish(m)
            elif self.pending:
                self._pivot(t)
        return self.done

    def _pivot(self, t: int) -> None:
        ws = self.ws
        # a VM takes at most one detour, so this always ends
        blocked = [m for m in self.pending if m.kind == "migrate" and m.src == self.origin[m.v]]
        wanted = {p.dst for p in self.pending}
        # VMs in a cycle first (their host is someone's destination), then the smallest
        order = sorted(
            blocked, key=lambda m: (m.src not in wanted, sum(ws.demand[m.v]), ws.vms[m.v].key)
        )
        for m in order:
            for p in ws.ranked():
                allowed = ws.allowed[m.v]
                if p in (m.src, m.dst) or (allowed is not None and p not in allowed):
                    continue
                hop = _Move("migrate", m.v, m.src, p, m.dur)
                if self.can_start(hop):
                    self.pending.remove(m)
                    self._start(hop, t)
                    self.pending.append(_Move("migrate", m.v, p, m.dst, m.dur))
                    return
        names = ", ".join(
            f"{ws.vms[m.v].key} ({_name(ws, m.src)} -> {_name(ws, m.dst)})" for m in self.pending
        )
        raise PlanError(f"cannot order {names}: they wait on each other and no pivot host has room")


def _name(ws: Workspace, h: int) -> str:
    return ws.hosts[h].name if h != -1 else "-"


def schedule_plan(
    ws: Workspace,
    origin: Sequence[int],
    target: Sequence[int],
    suspend: frozenset[int] = frozenset(),
) -> list[Action]:
    """Timed actions from ``origin`` to ``target`` (host index per VM, -1 = not running;
    the VMs in ``suspend`` stop by suspending). Raises ``PlanError`` when a cycle cannot
    be broken."""
    moves = _Scheduler(ws, target, origin, suspend).run()
    out = []
    for m in sorted(moves, key=lambda m: (m.start, m.end, ws.vkeys[m.v], m.kind)):
        key = ws.vkeys[m.v]
        src = _name(ws, m.src) if m.src != -1 else None
        dst = _name(ws, m.dst) if m.dst != -1 else None
        if m.kind == "allocate":
            for r, (f, c) in enumerate(zip(ws.demand[m.v], ws.cur[m.v], strict=True)):
                if f != c:
                    res = ws.resources[r]
                    out.append(Action("allocate", key, m.start, m.end, None, dst, res, int(f)))
        elif m.kind == "suspend":
            out.append(Action("suspend", key, m.start, m.end, src, src))
        else:
            out.append(Action(m.kind, key, m.start, m.end, src, dst))
    return out
