"""Placing units (a VM, or a VM with its colocate followers) on a ``Workspace``.

Three passes, each only if the previous one failed:

1. **greedy** in the given order (minimega's batch order for launches): every unit goes
   on the first host of the load order that passes the whole filter pipeline (a full
   scan ranked by soft score when the unit has preferences; the current host first when
   repairing, then a host where the VM would arrive at once: ``arrivals.py``).
2. **greedy, most constrained first**: units with the fewest feasible hosts first
   (counted up to ``constrained_cap``; units with more are equally unconstrained).
3. **backtracking** (depth first, most constrained unit next, forward checking, empty
   identical hosts tried once). Unbounded for small instances (``exhaustive_hosts`` x
   ``exhaustive_vms``), so "infeasible" there is a proof; bounded by ``search_budget``
   nodes otherwise.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterable, Sequence

from dvms.placement.arrivals import Arrivals
from dvms.placement.explain import Refusal
from dvms.placement.filters import AmongFilter, CapacityOnSet, SplitAmongFilter, StaticFilter
from dvms.placement.workspace import Workspace

__all__ = ["SearchOutcome", "place_units"]

Unit = tuple[int, ...]


class SearchOutcome:
    """What ``place_units`` found: ``ok``, or the ``refusal`` and whether the search
    ``proven`` that no placement exists; ``nodes`` the backtracking visited. A plain
    class: compiled, a dataclass's ``__init__`` is generated Python code."""

    __slots__ = ("nodes", "ok", "proven", "refusal")

    def __init__(
        self, ok: bool, refusal: Refusal | None = None, proven: bool = False, nodes: int = 0
    ) -> None:
        self.ok = ok
        self.refusal = refusal
        self.proven = proven
        self.nodes = nodes


class _Budget(Exception):
    pass


class Placer:
    def __init__(
        self,
        ws: Workspace,
        *,
        prefer_current: bool = False,
        departing: frozenset[int] = frozenset(),
        arrivals: Arrivals | None = None,
    ) -> None:
        self.ws = ws
        self.prefer_current = prefer_current
        #: hosts some placed VM will leave (repair): tried after the others
        self.departing = departing
        #: repair: hosts where a VM arrives without waiting are tried first
        self.arrivals = arrivals
        self.nodes = 0
        self.budget: int | None = None
        #: hosts no constraint names (``_anonymous_hosts``), found when a search needs it
        self._anonymous: set[int] | None = None
        self._types: dict[Unit, tuple] = {}
        self._floor: dict[tuple, int] = {}

    # -- host choice ----------------------------------------------------------------

    def _current(self, unit: Unit) -> int:
        host = self.ws.vms[unit[0]].host
        return self.ws.h_index.get(host, -1) if host is not None else -1

    def _scored(self, unit: Unit) -> bool:
        return any(self.ws.prefer[v] for v in unit)

    def pick(self, unit: Unit) -> int | None:
        """The preferred host that takes the whole unit now, or None."""
        ws = self.ws
        if self.prefer_current:
            cur = self._current(unit)
            if cur != -1 and ws.accepts(unit, cur):
                return cur
        local = self._local(unit)
        if self._scored(unit):
            ok = [h for h in ws.ranked() if ws.accepts(unit, h)]
            if not ok:
                return None
            if local:
                return self._note(unit, min(ok, key=self._rank(unit, local)), ok, local)
            return min(ok, key=lambda h: (ws.keys[h][0], -self._score(unit, h), ws.keys[h]))
        least = self._least(unit)
        if least is None or not local:
            return least
        # image locality: only hosts holding the images can beat the least loaded one
        key = self._rank(unit, local)
        best, best_key = least, key(least)
        for h in sorted(local):
            if h != least and key(h) < best_key and ws.accepts(unit, h):
                best, best_key = h, key(h)
        return self._note(unit, best, [least], local)

    def _least(self, unit: Unit) -> int | None:
        """The least loaded host that takes the whole unit now (no soft score)."""
        ws = self.ws
        allowed = ws.allowed[unit[0]]
        few = allowed is not None and len(allowed) * 8 < len(ws.order)
        if self.arrivals is not None:  # a host with room now: the arrival waits for nobody
            h = self._pick_free(unit, allowed if few else None)
            if h is not None:
                return h
        away = self.departing  # arrive where nobody has to leave first: fewer waits, no cycles
        if few:
            assert allowed is not None
            hosts = sorted((h for h in allowed if ws.online[h]), key=lambda h: ws.keys[h])
            for h in hosts:
                if h not in away and ws.accepts(unit, h):
                    return h
            for h in hosts:
                if h in away and ws.accepts(unit, h):
                    return h
            return None
        # the workspace keeps the load order split by ``departing`` (see place_units):
        # nothing moves while we look
        for _, h in ws.order_stay if away else ws.order:
            if ws.accepts(unit, h):
                return h
        for _, h in ws.order_away:
            if (allowed is None or h in allowed) and ws.accepts(unit, h):
                return h
        return None

    def _pick_free(self, unit: Unit, allowed: frozenset[int] | None) -> int | None:
        """The least loaded host that takes ``unit`` and where it would arrive at once
        (room with the host's leavers still on it, under ``max_migrations_in``)."""
        ws, arrivals = self.ws, self.arrivals
        assert arrivals is not None
        if allowed is not None:
            hosts = sorted((h for h in allowed if ws.online[h]), key=lambda h: ws.keys[h])
        else:
            hosts = [h for _, h in ws.order]
        for h in hosts:
            if ws.accepts(unit, h) and arrivals.free(unit, h):
                return h
        return None

    def _score(self, unit: Unit, h: int) -> float:
        return sum(self.ws.score(v, h) for v in unit)

    def _local(self, unit: Unit) -> dict[int, float]:
        """Image-locality score of each host holding some of the unit's images."""
        maps = [self.ws.locality[v] for v in unit if self.ws.locality[v]]
        if len(maps) <= 1:
            return maps[0] if maps else {}
        out: dict[int, float] = {}
        for m in maps:
            for h, score in m.items():
                out[h] = out.get(h, 0.0) + score
        return out

    def _rank(self, unit: Unit, local: dict[int, float]) -> Callable[[int], tuple]:
        """Sort key of a host for ``unit``: full hosts last, soft preferences, then the
        load lowered by the image-locality score (locality.py), then the name."""
        ws, weight = self.ws, self.ws.config.image_locality_weight
        scored = self._scored(unit)

        def key(h: int) -> tuple:
            full, load, name = ws.keys[h]
            prefer = -self._score(unit, h) if scored else 0.0
            return (full, prefer, load - weight * local.get(h, 0.0), name)

        return key

    def _note(self, unit: Unit, chosen: int, ok: Sequence[int], local: dict[int, float]) -> int:
        """Record for ``dvms solve`` when the image-locality score changed the choice
        (``ok``: hosts taking the unit, among them the one chosen without the score);
        the note itself is written only for the choices that last (``locality_note``)."""
        plain = min(ok, key=self._rank(unit, {}))
        if plain == chosen:
            self.ws.locality_notes.pop(unit[0], None)
        else:
            self.ws.locality_notes[unit[0]] = (unit, chosen, plain, local)
        return chosen

    def count(self, unit: Unit, cap: int) -> int:
        """How many hosts take ``unit`` now, counted up to ``cap``."""
        ws = self.ws
        allowed = ws.allowed[unit[0]]
        hosts: Iterable[int]
        if allowed is not None and len(allowed) < len(ws.order):
            hosts = sorted(h for h in allowed if ws.online[h])
        else:
            hosts = (h for _, h in ws.order)
        n = 0
        for h in hosts:
            if ws.accepts(unit, h):
                n += 1
                if n >= cap:
                    break
        return n

    def candidates(self, unit: Unit) -> list[int]:
        """Every host taking ``unit`` now, preferred first."""
        ws = self.ws
        ok = [h for h in ws.ranked() if ws.accepts(unit, h)]
        local = self._local(unit)
        if local:
            ok.sort(key=self._rank(unit, local))
        elif self._scored(unit):
            ok.sort(key=lambda h: (ws.keys[h][0], -self._score(unit, h), ws.keys[h]))
        if self.prefer_current:
            cur = self._current(unit)
            if cur in ok:
                ok.remove(cur)
                ok.insert(0, cur)
        return ok

    # -- passes ---------------------------------------------------------------------

    def greedy(self, units: Sequence[Unit]) -> Refusal | None:
        """Place units in order; on the first refusal undo everything and return why."""
        placed: list[Unit] = []
        for unit in units:
            h = self.pick(unit)
            if h is None:
                refusal = self.ws.refusal(unit)
                self.undo(placed)
                return refusal
            self.ws.try_unit(unit, h)
            placed.append(unit)
        return None

    def undo(self, units: Sequence[Unit]) -> None:
        for unit in reversed(units):
            for v in reversed(unit):
                self.ws.remove(v)

    def dfs(self, units: list[Unit]) -> bool:
        """Depth first: the most constrained unit next; identical units (same type) go
        to non-decreasing host indices; identical empty hosts are tried once."""
        self.nodes += 1
        if self.budget is not None and self.nodes > self.budget:
            raise _Budget
        if not units:
            return True
        if not self._bound_ok(units):
            return False
        best: Unit | None = None
        best_hosts: list[int] = []
        types: set[tuple] = set()
        for unit in units:
            kind = self._type(unit)
            if kind in types:
                continue  # an identical unit already stands for it
            types.add(kind)
            floor = self._floor.get(kind, 0)
            hosts = [h for h in self.candidates(unit) if h >= floor]
            if not hosts:
                return False
            if best is None or len(hosts) < len(best_hosts):
                best, best_hosts = unit, hosts
                if len(hosts) == 1:
                    break
        assert best is not None
        rest = [u for u in units if u is not best]
        kind = self._type(best)
        old_floor = self._floor.get(kind, 0)
        seen: set[tuple] = set()
        for h in best_hosts:
            sig = self._signature(h)
            if sig is not None:
                if sig in seen:
                    continue
                seen.add(sig)
            if self.ws.try_unit(best, h) is not None:
                continue
            self._floor[kind] = h
            if self.dfs(rest):
                return True
            self._floor[kind] = old_floor
            self.undo([best])
        return False

    def _bound_ok(self, units: list[Unit]) -> bool:
        """A relaxation: per capped resource, the remaining VMs need no more than the
        free total, and no more slots than the hosts could hold of the smallest one."""
        ws = self.ws
        online = [h for h in range(len(ws.hosts)) if ws.online[h]]
        for r in range(len(ws.resources)):
            if any(ws.limits[h][r] == math.inf for h in online):
                continue
            need = [ws.demand[v][r] for u in units for v in u if ws.demand[v][r] > 0]
            if not need:
                continue
            free = [max(0.0, ws.limits[h][r] - ws.used[h][r]) for h in online]
            smallest = min(need)
            # named totals: mypyc miscompiles ``sum(a) > sum(b)`` (both ``float | 0``)
            need_total: float = sum(need)
            free_total: float = sum(free)
            if need_total > free_total or sum(f // smallest for f in free) < len(need):
                return False
        return True

    def _type(self, unit: Unit) -> tuple:
        """Units with equal types can swap hosts in any solution."""
        kind = self._types.get(unit)
        if kind is None:
            ws = self.ws
            members = []
            for v in unit:
                vm = ws.vms[v]
                members.append((
                    tuple(ws.demand[v]), ws.cos[v], ws.movable[v], ws.allowed[v],
                    tuple(map(id, ws.vm_filters[v])), tuple(map(id, ws.vm_hooks[v])),
                    tuple(map(id, ws.prefer[v])), tuple(sorted(ws.locality[v].items())),
                    tuple(v in f.members for f in ws.global_checks),
                    vm.host if self.prefer_current else None,
                ))  # fmt: skip
            kind = self._types[unit] = tuple(members)
        return kind

    # -- symmetry -------------------------------------------------------------------

    def _anonymous_hosts(self) -> set[int]:
        """Hosts no constraint names: empty ones with equal limits are interchangeable."""
        ws = self.ws
        named: set[int] = set()
        seen: set[int] = set()  # among filters share their host -> group maps
        for f in ws.filters:
            if isinstance(f, StaticFilter):
                named |= f.banned | (f.allowed or frozenset())
            elif isinstance(f, AmongFilter | SplitAmongFilter) and id(f.group_of) not in seen:
                seen.add(id(f.group_of))
                named |= set(f.group_of)
            elif isinstance(f, CapacityOnSet):
                named |= f.hosts
        for prefs in ws.prefer:
            for p in prefs:
                named |= {ws.h_index[n] for n in p.hosts}
        if self.prefer_current:
            named |= {ws.h_index[vm.host] for vm in ws.vms if vm.host is not None}
        for scores in ws.locality:
            named |= set(scores)
        return set(range(len(ws.hosts))) - named

    def _signature(self, h: int) -> tuple | None:
        ws = self.ws
        if self._anonymous is None:
            self._anonymous = self._anonymous_hosts()
        if h not in self._anonymous or ws.count[h]:
            return None
        host = ws.hosts[h]
        return (tuple(ws.limits[h]), host.cpus, host.memory_mib, host.nics)


def place_units(
    ws: Workspace,
    units: Sequence[Unit],
    *,
    prefer_current: bool = False,
    departing: frozenset[int] = frozenset(),
    arrivals: Arrivals | None = None,
) -> SearchOutcome:
    """Place every unit (greedy, then harder); on failure the workspace is unchanged.
    ``departing`` hosts (repair: VMs will leave them) are tried after the others;
    with ``arrivals`` (repair) the greedy passes try hosts with room now first."""
    ws.split_order(departing)
    placer = Placer(ws, prefer_current=prefer_current, departing=departing, arrivals=arrivals)
    try:
        return _place(ws, units, placer)
    finally:
        ws.split_order(None)


def _place(ws: Workspace, units: Sequence[Unit], placer: Placer) -> SearchOutcome:
    refusal = placer.greedy(units)
    if refusal is None:
        return SearchOutcome(True)
    # pass 2: most constrained first, judged from the state before any unit is placed
    # (counted up to a cap: units x hosts checks would grow quadratically)
    cap = ws.config.constrained_cap
    sizes = {u: placer.count(u, cap) for u in units}
    by_size = sorted(units, key=lambda u: sizes[u])
    if placer.greedy(by_size) is None:
        return SearchOutcome(True)
    starved = [u for u in units if sizes[u] == 0]
    if starved:
        return SearchOutcome(False, ws.refusal(starved[0]), proven=True)
    return _backtrack(placer, list(by_size), refusal)


def _backtrack(placer: Placer, units: list[Unit], refusal: Refusal) -> SearchOutcome:
    ws, config = placer.ws, placer.ws.config
    n_vms = sum(len(u) for u in units)
    online = sum(ws.online)
    exhaustive = online <= config.exhaustive_hosts and n_vms <= config.exhaustive_vms
    placer.budget = None if exhaustive else config.search_budget
    if not exhaustive and n_vms * online > 400_000:
        note = "too many VMs and hosts to try every placement; none found"
        return SearchOutcome(False, _noted(refusal, note), proven=False)
    old_limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old_limit, len(units) + 200))
    try:
        if placer.dfs(units):
            return SearchOutcome(True, nodes=placer.nodes)
        note = "no placement exists: every way of placing them was tried"
        return SearchOutcome(False, _noted(refusal, note), proven=True, nodes=placer.nodes)
    except _Budget:
        # undo the partial assignment left by the interrupted search
        mine = {v for u in units for v in u}
        for v in sorted(mine):
            if ws.assign[v] != -1:
                ws.remove(v)
        note = f"none found in {placer.budget} tries ([placement] search_budget); one may exist"
        return SearchOutcome(False, _noted(refusal, note), proven=False, nodes=placer.nodes)
    finally:
        sys.setrecursionlimit(old_limit)


def _noted(refusal: Refusal, note: str) -> Refusal:
    return Refusal(refusal.vms, refusal.hosts, note)
