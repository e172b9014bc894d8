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

and keeps a move when the re-scheduled plan (plan.py) is better on (migrations,
duration, MiB moved). Deterministic, no clock: the budget is a number of plan
evaluations (``PlacementConfig.local_search_evals``), so one seed gives one result.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from dvms.placement.plan import Action, PlanError, schedule_plan
from dvms.placement.workspace import Workspace

__all__ = ["improve_plan"]

Score = tuple[int, int, int]
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
        return (len(moves), end, sum(mem[a.vm] for a in moves)), actions

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
        if ws.try_unit((v,), h) is None:
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
                    if h != o and ws.try_unit((u,), h) is None:
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
    improved = True
    while improved and search.budget > 0:
        improved = False
        for change in _candidates(search):
            got = search.attempt(change, best)
            if got is not None:
                best, plan = got
                improved = True
                break
            if search.budget <= 0:
                break
    return plan


def _candidates(search: _Search) -> Iterator[Change]:
    """Moves in the order tried: home, trade, relocate (each over moved VMs by key)."""
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
