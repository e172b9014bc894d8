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
(``PlacementConfig.local_search_evals``: each move the filters accept), so one seed
gives one result.

What it costs is kept small for the common case, a repair whose greedy plan is
already best: a lower bound over every end state the moves reach (``proven``) ends
the pass before any move. A move is scheduled only when a lower bound of its own plan
(``bound``: counts, longest migration, per-host migration caps, arrivals that must
wait for a departure) could beat the best; the hosts' load order is brought up to
date only when a move reads it, since most moves are undone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from dvms.placement.plan import Action, PlanError, plan_start, schedule_plan
from dvms.placement.workspace import Workspace

__all__ = ["improve_plan"]

Score = tuple[int, int, int]
#: ``split``: at most this many smaller VMs leave instead of one whose arrival waits
SPLIT_MOST = 3
#: relative slack when comparing sums of demands taken in different orders
ROUNDING = 1e-9
Undo = list[tuple[int, int]]
#: see ``_Search.others``: (longest start or stop, hosts where a VM stops,
#: host -> [(growing VM, its allocation's duration)])
Others = tuple[int, set[int], dict[int, list[tuple[int, int]]]]
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
        #: hosts whose place in the load order may be out of date
        self.stale: set[int] = set()
        # what most repairs never need (their first plan is proven best): built on use
        self._mib: list[int] = []
        self._occ: list[list[float]] = []
        self._others: Others | None = None
        self.base: list[int] = []

    def mib(self) -> list[int]:
        """The memory of each VM (MiB), what its migration moves."""
        if not self._mib:
            self._mib = [vm.memory_mib for vm in self.ws.vms]
        return self._mib

    def occupancy(self) -> list[list[float]]:
        """What each host holds before the plan, per resource."""
        if not self._occ:
            self._occ = plan_start(self.ws, self.origin)[1]
        return self._occ

    def score(self) -> tuple[Score, list[Action]] | None:
        """The plan of the workspace's current end state, or None (cycle, no budget)."""
        if self.budget <= 0:
            return None
        self.budget -= 1
        self.sync()  # the scheduler's pivots read the load order
        try:
            actions = schedule_plan(self.ws, self.origin, list(self.ws.assign), self.suspend)
        except PlanError:
            return None
        return self.rate(actions), actions

    def changed(self) -> None:
        """Note the VMs on another host than before the plan (``bound`` starts there)."""
        origin, assign = self.origin, self.ws.assign
        self.base = [v for v, o in enumerate(origin) if o != -1 and assign[v] not in (-1, o)]

    def others(self) -> Others:
        """What the search never changes, since it never starts nor stops a VM: the
        longest start or stop, the hosts where a VM stops (their room frees at a time
        the bound does not know), and per host the growing VMs that run there before
        the plan, each with its allocation's duration (made if it stays home)."""
        if self._others is None:
            ws, origin, assign = self.ws, self.origin, self.ws.assign
            cfg, suspend = ws.config, self.suspend
            longest = 0
            stops: set[int] = set()
            for v, o in enumerate(origin):
                a = assign[v]
                if (o == -1) != (a == -1):
                    kind = "boot" if o == -1 else "suspend" if v in suspend else "shutdown"
                    longest = max(longest, ws.vms[v].duration(kind, cfg))
                    if a == -1:
                        stops.add(o)
            grow: dict[int, list[tuple[int, int]]] = {}
            for v in sorted(ws.grown):
                if origin[v] != -1:
                    grow.setdefault(origin[v], []).append((v, ws.vms[v].duration("allocate", cfg)))
            self._others = (longest, stops, grow)
        return self._others

    def bound(self, touched: Undo) -> Score:
        """A lower bound on the score of the plan of the current end state, without
        scheduling it. Each VM that changes hosts migrates at least once; the plan
        lasts at least its longest action: a migration, a start or stop, a growing
        VM's allocation if it stays home; per host, at least
        ``ceil(n / max_migrations_out)`` of its shortest departure (``_in`` for
        arrivals); and, when what arrives on a host (VMs, growth of the VMs that stay)
        does not all fit at once on what it held before the plan, its shortest
        departure then the shortest of what arrives (a host makes room only when a
        migration away from it ends).

        ``touched``: the VMs a move changed, since the state where ``changed`` was
        last called (only these and the VMs changed then may be on another host)."""
        ws, origin, assign, cost = self.ws, self.origin, self.ws.assign, self.ws.cost
        moves = mib = end = 0
        mib_of = self.mib()
        arrivals: dict[int, list[int]] = {}
        out: dict[int, list[int]] = {}
        seen: set[int] = set()
        for v in (*self.base, *(x for x, _ in touched)):
            if v in seen:
                continue
            seen.add(v)
            o, a = origin[v], assign[v]
            if o == a or a == -1:
                continue
            moves += 1
            mib += mib_of[v]
            end = max(end, cost[v])
            arrivals.setdefault(a, []).append(v)
            out.setdefault(o, []).append(v)
        longest, stops, grow = self.others()
        end = max(end, longest)
        cfg = ws.config
        first_out: dict[int, int] = {}  # host: when a migration away from it ends, soonest
        for h, gone in out.items():
            quickest = first_out[h] = min(cost[v] for v in gone)
            end = max(end, -(-len(gone) // cfg.max_migrations_out) * quickest)
        for come in arrivals.values():
            end = max(end, -(-len(come) // cfg.max_migrations_in) * min(cost[v] for v in come))
        for h in set(arrivals) | set(grow):
            come = arrivals.get(h, [])
            growing = [(v, d) for v, d in grow.get(h, ()) if assign[v] == h]
            if growing:
                end = max(end, max(d for _, d in growing))
            waits = (come or growing) and h in first_out and h not in stops
            if waits and self._crowded(h, come, growing):
                quickest = min([cost[v] for v in come] + [d for _, d in growing])
                end = max(end, first_out[h] + quickest)
        return (end, moves, mib) if self.mttr_first else (moves, end, mib)

    def _crowded(self, h: int, come: list[int], growing: list[tuple[int, int]]) -> bool:
        """Does what arrives on ``h`` (the VMs of ``come``, the growth of ``growing``)
        not all fit before any VM leaves it? Only when it misses by more than the
        rounding of a sum taken in another order than the scheduler's: a bound must
        never be above the plan."""
        occ, lim = self.occupancy()[h], self.ws.limits[h]
        demand, cur = self.ws.demand, self.ws.cur
        for r in range(len(occ)):
            total = occ[r] + sum(demand[v][r] for v in come)
            total += sum(max(0.0, demand[v][r] - cur[v][r]) for v, _ in growing)
            if total > lim[r] + ROUNDING * max(1.0, abs(lim[r])):
                return True
        return False

    def rate(self, actions: list[Action]) -> Score:
        """The score of a plan, in the order the objective ranks plans."""
        ws = self.ws
        moves = [a for a in actions if a.kind == "migrate"]
        end = max((a.end for a in actions), default=0)
        mib = sum(ws.vms[ws.v_index[a.vm]].memory_mib for a in moves)
        if self.mttr_first:
            return (end, len(moves), mib)
        return (len(moves), end, mib)

    def proven(self, best: Score) -> bool:
        """Is ``best`` the least score of every plan this search can reach? Its end
        states all respect the capacities, so each host must shed at least the fewest
        of its VMs whose demands cover its overflow on every resource (a VM that may
        not stay leaves anyway); each migration lasts at least the shortest one and
        moves at least the smallest VM's memory."""
        ws, origin, assign = self.ws, self.origin, self.ws.assign
        staying: list[list[int]] = [[] for _ in ws.hosts]
        for v, h in enumerate(origin):
            if h != -1 and assign[v] != -1:  # runs before and after the plan
                staying[h].append(v)
        # what a host held before the plan bounds what its staying VMs use, unless a
        # VM grows (``preserve``)
        held = self.occupancy() if not ws.grown else None
        demand, movable = ws.demand, ws.movable
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
                if movable[v] and allowed is not None and h not in allowed:
                    moves += 1
                else:
                    keep.append(v)
            lim = ws.limits[h]
            if held is not None and _within(held[h], lim):
                continue  # no overflow
            most = 0
            for r in range(len(lim)):
                over: float = -lim[r]
                for v in keep:
                    over += demand[v][r]
                if over <= 0:
                    continue
                shed = sorted((demand[v][r] for v in keep if movable[v]), reverse=True)
                n = 0
                for d in shed:
                    if over <= 0:
                        break
                    over -= d
                    n += 1
                if over > 0:
                    return False  # no end state: nothing to compare with
                most = max(most, n)
            moves += most
        if not moves:
            return False
        least = (best[1], best[0]) if self.mttr_first else (best[0], best[1])
        if least[0] != moves:
            return False
        movers = [
            v for v in range(len(ws.vms)) if movable[v] and origin[v] != -1 and assign[v] != -1
        ]
        if least[1] != min(ws.cost[v] for v in movers):
            return False
        mib = self.mib()
        return best[2] == moves * min(mib[v] for v in movers)

    def moved(self) -> list[int]:
        ws, origin = self.ws, self.origin
        return [
            v
            for v in range(len(ws.vms))
            if origin[v] != -1 and ws.assign[v] not in (-1, origin[v]) and ws.movable[v]
        ]

    def attempt(self, change: Change, best: Score) -> tuple[Score, list[Action]] | None:
        """Apply ``change`` (returns the (vm, old host) it moved, or None when refused),
        keep it if the plan improves on ``best``; else undo it. A move the filters
        accept costs one evaluation of the budget, scheduled or not: the search goes
        the same way as if every such move were scheduled, only faster."""
        undo = change()
        if undo is None:
            return None
        if self.budget > 0 and self.bound(undo) >= best:  # no better whatever its schedule
            self.budget -= 1
            self._restore(undo)
            return None
        got = self.score()
        if got is not None and got[0] < best:
            return got
        self._restore(undo)
        return None

    def _restore(self, undo: Undo) -> None:
        for v, _ in undo:
            if self.ws.assign[v] != -1:
                self._remove(v)
        for v, h in undo:
            self._place(v, h)

    # The load order of the hosts is brought up to date only when a move reads it
    # (``ranked``): most moves are undone, and a host's key is then what it was.
    def _place(self, v: int, h: int) -> None:
        self.ws.place(v, h, rekey=False)
        self.stale.add(h)

    def _remove(self, v: int) -> None:
        self.stale.add(self.ws.assign[v])
        self.ws.remove(v, rekey=False)

    def _try(self, v: int, h: int) -> bool:
        if not self.ws.fits(v, h):
            return False
        self._place(v, h)
        return True

    def sync(self) -> None:
        """Bring the workspace's load order up to date."""
        if self.stale:
            self.ws.refresh(self.stale)
            self.stale.clear()

    def ranked(self) -> list[int]:
        """The online hosts, least loaded first, in the current state."""
        self.sync()
        return list(self.ws.ranked())

    def _move(self, v: int, h: int, undo: Undo) -> bool:
        """Move ``v`` to ``h`` if every filter agrees; else leave it where it is."""
        ws = self.ws
        old = ws.assign[v]
        if h != old and not ws.could_take(v, h):
            return False  # refused whether or not v leaves its host: nothing to undo
        if not any(x == v for x, _ in undo):
            undo.append((v, old))
        self._remove(v)
        if self._try(v, h):
            return True
        self._place(v, old)
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
            self._remove(u)
            returned = sum(self._move(v, o, undo) for v in back)
            if returned >= 2:
                shedding = self._shedding()  # fewer once VMs came back
                hosts = self.ranked()
                hosts.sort(key=lambda h: h in shedding)  # stable: least loaded first
                for h in hosts:
                    if h != o and self._try(u, h):
                        return undo
            self._restore(undo)
            return None

        return change

    def eject(self, v: int, h: int, w: int, shedding: set[int]) -> Change:
        """``w`` (moved to ``h``) makes room by going to another host that sheds nothing
        (``shedding``: the hosts that do), then ``v`` takes its place on ``h``."""

        def change() -> Undo | None:
            undo: Undo = []
            for h2 in self.ranked():
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

    def split(self, v: int, shedding: set[int]) -> Change:
        """``v`` (moved, its arrival waits) stays on its host; smaller VMs staying
        there leave instead (most demanding first, each to the least loaded host that
        sheds nothing and takes it) until ``v`` fits at home, at most ``SPLIT_MOST``.
        ``shedding``: the hosts that shed VMs, its host among them."""

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
            self._remove(v)
            left = 0
            for u in staying:
                if left == SPLIT_MOST:
                    break
                for h in self.ranked():
                    if h not in shedding and self._move(u, h, undo):
                        left += 1
                        break
                if left and self._try(v, o):
                    return undo
            self._restore(undo)
            return None

        return change

    def bump(self, v: int, h: int, shedding: set[int]) -> Change:
        """``v`` goes to ``h`` (which sheds nothing) once a VM staying on ``h`` leaves for
        a third host that sheds nothing (``shedding``: the hosts that do): the smallest
        such VM for which both moves pass."""

        def change() -> Undo | None:
            ws = self.ws
            staying = [u for u in ws.vms_on(h) if ws.movable[u] and self.origin[u] == h]
            staying.sort(key=lambda u: (sum(ws.demand[u]), u))
            targets = [x for x in self.ranked() if x not in shedding and x != h]
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


def _within(used: Sequence[float], lim: Sequence[float]) -> bool:
    for r in range(len(lim)):  # noqa: SIM110 (compiled: a loop, not a generator)
        if used[r] > lim[r]:
            return False
    return True


def improve_plan(
    ws: Workspace,
    origin: Sequence[int],
    actions: list[Action],
    budget: int,
    suspend: frozenset[int] = frozenset(),
) -> list[Action]:
    """A plan at least as good as ``actions`` (same rules, checked the same way), after
    at most ``budget`` plan evaluations, ``actions`` counted as the first: it must be
    the plan ``schedule_plan`` gives for the end state ``ws`` holds, and ``ws`` holds
    the end state of the result.
    ``suspend``: VMs the plan suspends in place (``sleeping``), as for ``schedule_plan``."""
    if budget <= 0:
        return actions
    search = _Search(ws, origin, budget - 1, suspend)  # ``actions`` is the first plan
    best, plan = search.rate(actions), actions
    if search.proven(best):
        return plan  # nothing can be better: every move would be undone
    improved = True
    while improved and search.budget > 0:
        improved = False
        search.changed()
        for change in _candidates(search, plan):
            got = search.attempt(change, best)
            if got is not None:
                best, plan = got
                improved = True
                break
            if search.budget <= 0:
                break
    search.sync()
    return plan


def _candidates(search: _Search, plan: Sequence[Action]) -> Iterator[Change]:
    """Moves in the order tried: home, trade, relocate (each over moved VMs by key),
    eject, then (objective ``mttr``) split; ``plan`` is the current best plan."""
    ws = search.ws
    moved = sorted(search.moved(), key=lambda v: ws.vms[v].key)
    # every move tried is undone before the next: the same hosts shed all along
    shedding = search._shedding()
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
    for v in moved:
        for h in search.ranked():
            if h not in shedding and h not in (ws.assign[v], search.origin[v]):
                yield search.relocate(v, h)
    for v in moved:  # ejection chains: only for VMs whose arrival waits
        if ws.assign[v] not in shedding:
            continue
        for w in moved:
            h = ws.assign[w]
            if w != v and h not in shedding and h != search.origin[v]:
                yield search.eject(v, h, w, shedding)
    if not search.mttr_first:
        return
    waits = {a.vm for a in plan if a.kind == "migrate" and a.start > 0}
    waiting = [v for v in moved if ws.vkeys[v] in waits]
    for v in waiting:
        yield search.split(v, shedding)
    for v in waiting:
        for h in search.ranked():
            if h not in shedding and h not in (ws.assign[v], search.origin[v]):
                yield search.bump(v, h, shedding)
