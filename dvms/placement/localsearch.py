"""Local search on a repair's end placement: fewer migrations, then a shorter plan.

The greedy repair (repair.py) picks which VMs leave a host and where they go one at a
time; an exact model (bench/oracle.py) shows where that costs: two small VMs evicted
where one larger one would do, or a VM sent to a host that must first shed load (its
arrival waits, the plan gets longer). This pass starts from the greedy end state and
tries, best first, moves that keep every constraint (each placement goes through the
workspace's whole filter pipeline):

    home      a moved VM goes back to its current host              (one migration less)
    trade     a VM staying on a host leaves instead of k >= 2 moved ones (k - 1 less)
    relocate  a moved VM goes to another host that sheds nothing     (shorter plan)
    eject     ... after the VM moved there goes on to a third such host (shorter plan)
    split     (objective ``mttr`` only) a moved VM whose arrival waits stays home, and
              up to three smaller VMs of its host leave at once instead  (shorter plan,
              more migrations)
    bump      (objective ``mttr`` only) a moved VM whose arrival waits goes to a host
              that sheds nothing, after the smallest VM that makes room there leaves
              for another such host                  (shorter plan, one more migration)

and keeps a move when the re-scheduled plan (plan.py) is better on (migrations,
duration, MiB moved), or with ``PlacementConfig.objective = "mttr"`` on (duration,
migrations, MiB moved): the two objectives conflict when the shortest plan moves more
VMs. Deterministic, no clock: the budget is a number of plan evaluations
(``PlacementConfig.local_search_evals``), so one seed gives one result.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from dvms.placement.plan import Action, PlanError, schedule_plan
from dvms.placement.workspace import Workspace

__all__ = ["improve_plan"]

Score = tuple[int, int, int]
#: ``split``: at most this many smaller VMs leave instead of one whose arrival waits
SPLIT_MOST = 3
Undo = list[tuple[int, int]]
Change = Callable[[], Undo | None]


class _Search:
    def __init__(
        self, ws: Workspace, origin: Sequence[int], budget: int, suspend: frozenset[int]
    ) -> None:
        self.ws = ws
        self.origin = list(origin)
        self.budget = budget
        self.suspend = suspend
        self.mttr_first = ws.config.objective == "mttr"

    def score(self) -> tuple[Score, list[Action]] | None:
        """The plan of the workspace's current end state, or None (cycle, no budget)."""
        if self.budget <= 0:
            return None
        self.budget -= 1
        try:
            actions = schedule_plan(self.ws, self.origin, list(self.ws.assign), self.suspend)
        except PlanError:
            return None
        mem = {vm.key: vm.memory_mib for vm in self.ws.vms}
        moves = [a for a in actions if a.kind == "migrate"]
        end = max((a.end for a in actions), default=0)
        mib = sum(mem[a.vm] for a in moves)
        if self.mttr_first:
            return (end, len(moves), mib), actions
        return (len(moves), end, mib), actions

    def floor(self) -> Score | None:
        """A lower bound on the score of every plan this search can reach, in the
        order it ranks them, or None when it finds none. Its end states all respect
        the capacities, so each host must shed at least the fewest of its VMs whose
        demands cover its overflow on every resource (a VM that may not stay leaves
        anyway); each migration lasts at least the shortest one and moves at least
        the smallest VM's memory."""
        ws, origin = self.ws, self.origin
        staying: list[list[int]] = [[] for _ in ws.hosts]
        for v, h in enumerate(origin):
            if h != -1 and ws.assign[v] != -1:  # runs before and after the plan
                staying[h].append(v)
        moves = 0
        for h, here in enumerate(staying):
            if not here:
                continue
            if not ws.online[h]:
                moves += len(here)
                continue
            keep: list[int] = []
            for v in here:
                allowed = ws.allowed[v]
                if ws.movable[v] and allowed is not None and h not in allowed:
                    moves += 1
                else:
                    keep.append(v)
            lim = ws.limits[h]
            most = 0
            for r in range(len(ws.resources)):
                over = sum(ws.demand[v][r] for v in keep) - lim[r]
                if over <= 0:
                    continue
                shed = sorted((ws.demand[v][r] for v in keep if ws.movable[v]), reverse=True)
                n = 0
                for d in shed:
                    if over <= 0:
                        break
                    over -= d
                    n += 1
                if over > 0:
                    return None  # no end state: nothing to compare with
                most = max(most, n)
            moves += most
        if not moves:
            return None
        movers = [
            v
            for v in range(len(ws.vms))
            if ws.movable[v] and origin[v] != -1 and ws.assign[v] != -1
        ]
        end = min(ws.cost[v] for v in movers)
        mib = moves * min(ws.vms[v].memory_mib for v in movers)
        return (end, moves, mib) if self.mttr_first else (moves, end, mib)

    def moved(self) -> list[int]:
        ws, origin = self.ws, self.origin
        return [
            v
            for v in range(len(ws.vms))
            if origin[v] != -1 and ws.assign[v] not in (-1, origin[v]) and ws.movable[v]
        ]

    def attempt(self, change: Change, best: Score) -> tuple[Score, list[Action]] | None:
        """Apply ``change`` (returns the (vm, old host) it moved, or None when refused),
        keep it if the plan improves on ``best``; else undo it."""
        undo = change()
        if undo is None:
            return None
        got = self.score()
        if got is not None and got[0] < best:
            return got
        self._restore(undo)
        return None

    def _restore(self, undo: Undo) -> None:
        ws = self.ws
        for v, _ in undo:
            if ws.assign[v] != -1:
                ws.remove(v)
        for v, h in undo:
            ws.place(v, h)

    def _move(self, v: int, h: int, undo: Undo) -> bool:
        """Move ``v`` to ``h`` if every filter agrees; else leave it where it is."""
        ws = self.ws
        old = ws.assign[v]
        if not any(x == v for x, _ in undo):
            undo.append((v, old))
        ws.remove(v)
        if ws.try_place((v,), h):
            return True
        ws.place(v, old)
        return False

    def home(self, v: int) -> Change:
        return self.relocate(v, self.origin[v])

    def relocate(self, v: int, h: int) -> Change:
        def change() -> Undo | None:
            undo: Undo = []
            return undo if self._move(v, h, undo) else None

        return change

    def trade(self, u: int, back: list[int]) -> Change:
        """``u`` leaves its host (to the least loaded host that takes it, hosts that
        shed nothing first) and at least two of ``back`` return to it."""

        def change() -> Undo | None:
            ws = self.ws
            o = ws.assign[u]
            undo: Undo = [(u, o)]
            ws.remove(u)
            returned = sum(self._move(v, o, undo) for v in back)
            if returned >= 2:
                shedding = self._shedding()
                hosts = list(ws.ranked())
                hosts.sort(key=lambda h: h in shedding)  # stable: least loaded first
                for h in hosts:
                    if h != o and ws.try_place((u,), h):
                        return undo
            self._restore(undo)
            return None

        return change

    def eject(self, v: int, h: int, w: int) -> Change:
        """``w`` (moved to ``h``) makes room by going to another host that sheds nothing,
        then ``v`` takes its place on ``h``."""

        def change() -> Undo | None:
            undo: Undo = []
            shedding = self._shedding()
            for h2 in list(self.ws.ranked()):
                if h2 in shedding or h2 in (h, self.origin[w]):
                    continue
                if self._move(w, h2, undo):
                    if self._move(v, h, undo):
                        return undo
                    self._restore(undo)
                    undo = []
            self._restore(undo)
            return None

        return change

    def split(self, v: int) -> Change:
        """``v`` (moved, its arrival waits) stays on its host; smaller VMs staying
        there leave instead (most demanding first, each to the least loaded host that
        sheds nothing and takes it) until ``v`` fits at home, at most ``SPLIT_MOST``."""

        def change() -> Undo | None:
            ws = self.ws
            o = self.origin[v]
            size = sum(ws.demand[v])
            staying = [
                u
                for u in ws.vms_on(o)
                if ws.movable[u] and self.origin[u] == o and sum(ws.demand[u]) < size
            ]
            staying.sort(key=lambda u: (-sum(ws.demand[u]), u))
            undo: Undo = [(v, ws.assign[v])]
            ws.remove(v)
            shedding = self._shedding() | {o}
            left = 0
            for u in staying:
                if left == SPLIT_MOST:
                    break
                for h in list(ws.ranked()):
                    if h not in shedding and self._move(u, h, undo):
                        left += 1
                        break
                if left and ws.try_place((v,), o):
                    return undo
            self._restore(undo)
            return None

        return change

    def bump(self, v: int, h: int) -> Change:
        """``v`` goes to ``h`` (which sheds nothing) once a VM staying on ``h`` leaves for
        a third host that sheds nothing: the smallest such VM for which both moves pass."""

        def change() -> Undo | None:
            ws = self.ws
            shedding = self._shedding()
            staying = [u for u in ws.vms_on(h) if ws.movable[u] and self.origin[u] == h]
            staying.sort(key=lambda u: (sum(ws.demand[u]), u))
            targets = [x for x in ws.ranked() if x not in shedding and x != h]
            for w in staying:
                undo: Undo = []
                for h2 in targets:
                    if self._move(w, h2, undo):
                        if self._move(v, h, undo):
                            return undo
                        break
                self._restore(undo)
            return None

        return change

    def _shedding(self) -> set[int]:
        return {self.origin[v] for v in self.moved()}


def improve_plan(
    ws: Workspace,
    origin: Sequence[int],
    actions: list[Action],
    budget: int,
    suspend: frozenset[int] = frozenset(),
) -> list[Action]:
    """A plan at least as good as ``actions`` (same rules, checked the same way), after
    at most ``budget`` plan evaluations; ``ws`` holds the end state of the result.
    ``suspend``: VMs the plan suspends in place (``sleeping``), as for ``schedule_plan``."""
    search = _Search(ws, origin, budget, suspend)
    first = search.score()
    if first is None:
        return actions
    best, plan = first
    if best == search.floor():
        return plan  # nothing can be better: every move would be undone
    improved = True
    while improved and search.budget > 0:
        improved = False
        for change in _candidates(search, plan):
            got = search.attempt(change, best)
            if got is not None:
                best, plan = got
                improved = True
                break
            if search.budget <= 0:
                break
    return plan


def _candidates(search: _Search, plan: Sequence[Action]) -> Iterator[Change]:
    """Moves in the order tried: home, trade, relocate (each over moved VMs by key),
    eject, then (objective ``mttr``) split; ``plan`` is the current best plan."""
    ws = search.ws
    moved = sorted(search.moved(), key=lambda v: ws.vms[v].key)
    for v in moved:
        yield search.home(v)
    by_host: dict[int, list[int]] = {}
    for v in moved:
        by_host.setdefault(search.origin[v], []).append(v)
    for o, gone in sorted(by_host.items()):
        if len(gone) < 2:
            continue
        staying = [u for u in ws.vms_on(o) if ws.movable[u] and search.origin[u] == o]
        for u in sorted(staying, key=lambda u: -sum(ws.demand[u])):
            yield search.trade(u, gone)
    shedding = search._shedding()
    for v in moved:
        for h in ws.ranked():
            if h not in shedding and h not in (ws.assign[v], search.origin[v]):
                yield search.relocate(v, h)
    for v in moved:  # ejection chains: only for VMs whose arrival waits
        if ws.assign[v] not in shedding:
            continue
        for w in moved:
            h = ws.assign[w]
            if w != v and h not in shedding and h != search.origin[v]:
                yield search.eject(v, h, w)
    if not search.mttr_first:
        return
    waits = {a.vm for a in plan if a.kind == "migrate" and a.start > 0}
    waiting = [v for v in moved if ws.vkeys[v] in waits]
    for v in waiting:
        yield search.split(v)
    for v in waiting:
        for h in ws.ranked():
            if h not in shedding and h not in (ws.assign[v], search.origin[v]):
                yield search.bump(v, h)
