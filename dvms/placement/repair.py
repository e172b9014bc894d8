"""Repair and overload relief: from the current placement to a viable one, cheaply.

    target states (running / ready constraints)
    continuous constraints must already hold            -> else infeasible (BtrPlace)
    misplaced VMs = breakers of each constraint + few cheap evictions from hosts over a
                    capacity, a coschedule limit or a resource/running capacity
    stage 0: re-place only those (current host first, then least loaded, then search)
    stage 1: ... plus every movable VM on the hosts involved
    then, if a VM confined to some hosts (fence, continuous among...) found no room:
             ... plus every movable VM on those hosts
    stage 2: ... plus every movable VM
    (in each stage a VM goes first to a host where it arrives at once: arrivals.py)
    schedule the moves into a timed plan (plan.py)
    if a migration waits: move the arrivals that wait elsewhere, keep the shorter plan

An already viable placement gives an empty plan. With ``relief=True`` the measured CPU
demand (``cpu_demand``) is one more capacity: hosts above ``overload_threshold`` shed
VMs (overload relief, DVMS).
"""

from __future__ import annotations

import gc
import math
from collections.abc import Sequence

from dvms.placement import constraints as c
from dvms.placement.arrivals import Arrivals, unchain
from dvms.placement.config import PlacementConfig
from dvms.placement.explain import Refusal
from dvms.placement.filters import AmongFilter, GatherFilter, SplitAmongFilter
from dvms.placement.localsearch import improve_plan
from dvms.placement.model import PlacementError, Snapshot
from dvms.placement.plan import Action, Plan, PlanError, schedule_plan
from dvms.placement.search import place_units
from dvms.placement.workspace import Workspace

__all__ = ["solve_repair"]


#: constraints that set a VM's target state (a tuple: ``A | B`` builds a union per test)
_STATE_RULES = (c.Running, c.Ready, c.Sleeping)


def _forced_states(snapshot: Snapshot, constraints: Sequence[c.Constraint]) -> dict[str, str]:
    """The target state of every VM a running/ready/sleeping constraint names (the
    others keep theirs)."""
    states: dict[str, str] | None = None
    forced: dict[str, str] = {}
    for k in constraints:
        if isinstance(k, _STATE_RULES):
            if states is None:
                states = {vm.key: vm.state for vm in snapshot.vms}
            want = k.kind
            for key in k.vms:
                if key not in states:
                    raise PlacementError(f"{k.kind}: unknown VM {key!r}")
                if forced.get(key, want) != want:
                    raise PlacementError(f"vm {key} cannot be both {forced[key]} and {want}")
                if states[key] == "sleeping" and want != "sleeping":
                    raise PlacementError(f"vm {key} is sleeping: resume is not supported")
                forced[key] = want
    return forced


def _initial(ws: Workspace, states: Sequence[str]) -> tuple[list[int], list[int]]:
    """Host index of every VM that runs now (-1 otherwise), and of those that stay
    (running in the target), which it places."""
    origin = [-1] * len(ws.vms)
    stay = [-1] * len(ws.vms)
    h_index, now = ws.h_index, ws.now
    for v, vm in enumerate(ws.vms):
        if now[v] == "running" and vm.host is not None:
            origin[v] = h_index[vm.host]
            if states[v] == "running":
                stay[v] = origin[v]
    ws.place_all(stay)
    if stay == origin and not ws.grown:
        # what plan.py's scheduler starts from (occupancy and VMs per host before any
        # move) is the state just loaded: copied here, not summed again per plan
        ws.plan_start = (
            tuple(origin),
            [list(row) for row in ws.used],
            [set(vms) for vms in ws.host_vms],
        )
    return origin, stay


def _named(ws: Workspace, hosts: Sequence[int]) -> dict[str, str]:
    """VM key -> host name, for the VMs with a host in ``hosts`` (index per VM)."""
    keys, names = ws.vkeys, ws.hosts
    return {keys[v]: names[h].name for v, h in enumerate(hosts) if h != -1}


def _later_stages(
    ws: Workspace, origin: Sequence[int], first: set[int], queue: list[set[int]]
) -> tuple[set[int], bool]:
    """After the first stage failed: append the next stages to ``queue`` (the movable VMs
    of the hosts involved, then every movable VM); returns the last one and whether it
    frees more than the second (only then is its failure a proof)."""
    involved = {origin[v] for v in first if origin[v] != -1}
    second = first | {v for h in involved for v in ws.vms_on(h) if ws.movable[v]}
    everyone = first | {v for v in range(len(ws.vms)) if ws.assign[v] != -1 and ws.movable[v]}
    for s in (second, everyone):
        if s != first and s not in queue:
            queue.append(s)
    return everyone, everyone != second


def _freeze_continuous(ws: Workspace) -> None:
    """Continuous gather/among/splitAmong keep what already holds: members running
    together never move; members inside one group stay inside it."""
    groups: dict[tuple[int, int], frozenset[int]] = {}  # among filters share group maps
    for f in ws.continuous:
        placed = {ws.assign[v] for v in f.members if ws.assign[v] != -1}
        if isinstance(f, GatherFilter) and len(placed) == 1:
            for v in f.members:
                if ws.assign[v] != -1:
                    ws.movable[v] = False
        if isinstance(f, AmongFilter) and f.used:
            group = next(iter(f.used))
            hosts = groups.get((id(f.group_of), group))
            if hosts is None:
                hosts = frozenset(h for h, g in f.group_of.items() if g == group)
                groups[(id(f.group_of), group)] = hosts
            keys = [ws.vms[v].key for v in sorted(f.members)]
            ws.add_static("among", keys, allowed=hosts)
        if isinstance(f, SplitAmongFilter):
            for p, used in enumerate(f.used):
                if not used:
                    continue
                group = next(iter(used))
                hosts = groups.get((id(f.group_of), group))
                if hosts is None:
                    hosts = frozenset(h for h, g in f.group_of.items() if g == group)
                    groups[(id(f.group_of), group)] = hosts
                keys = [ws.vms[v].key for v, q in sorted(f.part.items()) if q == p]
                ws.add_static("splitAmong", keys, allowed=hosts)


def _broken_continuous(ws: Workspace) -> str | None:
    for f in ws.continuous:
        if f.violated():
            who = ", ".join(sorted(ws.vms[v].key for v in f.misplaced())) or "its hosts"
            return (
                f"continuous {f.rule} is already violated ({who}); a continuous "
                "constraint can only be preserved -- make it discrete to repair it"
            )
    return None


def _misplaced(ws: Workspace) -> set[int]:
    """VMs to move first: constraint breakers, then evictions that clear every host."""
    out: set[int] = set()
    for f in ws.filters:
        out |= f.misplaced()
    for h in range(len(ws.hosts)):
        if not ws.online[h]:
            out.update(ws.vms_on(h))
    _lift(ws, out)
    more: set[int] = set()
    for h in range(len(ws.hosts)):
        need = ws.overflow(h)
        if any(need):
            cands = [v for v in ws.vms_on(h) if ws.movable[v]]
            # a bound method, not a lambda: compiled, a closure over ``ws`` would keep it
            # in a reference cycle
            evicted = ws.choose_evictions(cands, ws.demand.__getitem__, need)
            _lift(ws, evicted)
            more |= evicted
        more |= _coschedule_evictions(ws, h)
    for f in ws.filters:  # set capacities, after the removals above
        more |= f.misplaced()
    _lift(ws, more)
    return out | more


def _coschedule_evictions(ws: Workspace, h: int) -> set[int]:
    """Lift VMs off ``h`` until its coschedule limit holds: the most demanding limit
    first (one coschedule-0 VM leaves rather than its five neighbours)."""
    out: set[int] = set()
    while True:
        limit = ws.host_limit(h)
        if limit == -1 or ws.count[h] <= limit:
            return out
        cands = [v for v in ws.vms_on(h) if ws.movable[v]]
        if not cands:
            return out
        worst = min(cands, key=lambda v: (ws.cos[v] if ws.cos[v] != -1 else 1 << 30, ws.cost[v]))
        out.add(worst)
        ws.remove(worst)


def _residual(ws: Workspace) -> str:
    """What still breaks the rules after placing (VMs that could not be moved)."""
    for h in range(len(ws.hosts)):
        over = [ws.resources[r] for r, x in enumerate(ws.overflow(h)) if x > 0]
        if over:
            return (
                f"{ws.hosts[h].name} stays over its {', '.join(over)} capacity: its VMs cannot move"
            )
        limit = ws.host_limit(h)
        if limit != -1 and ws.count[h] > limit:
            name = ws.hosts[h].name
            return f"too many VMs scheduled on {name} for coschedule requirement of {limit}"
    for f in ws.filters:
        if f.violated():
            who = ", ".join(sorted(ws.vms[v].key for v in f.misplaced())) or "its VMs"
            return f"{f.rule} stays violated by {who}: they cannot move"
    return ""


def _room_for(ws: Workspace, refused: Sequence[str], movable: set[int]) -> set[int] | None:
    """Before moving every VM: ``movable`` plus the movable VMs of the hosts a refused
    VM is confined to (its rack under a continuous among, its fence...), so they can
    make room there. None when the refused VM may go anywhere."""
    hosts: set[int] = set()
    for key in refused:
        allowed = ws.allowed[ws.vm(key)]
        if allowed is None:
            return None
        hosts |= allowed
    return movable | {v for h in hosts for v in ws.host_vms[h] if ws.movable[v]}


def _lift(ws: Workspace, vms: set[int]) -> None:
    for v in sorted(vms):
        if ws.assign[v] != -1:
            ws.remove(v)


def _units(ws: Workspace, vms: set[int]) -> list[tuple[int, ...]]:
    """Biggest first (relative to the largest host), most constrained first. Keys built
    in a loop, not by nested functions: compiled, those and their environment form a
    reference cycle holding the workspace."""
    tops: list[float] = []
    for r in range(len(ws.resources)):
        top = 0.0
        for lim in ws.limits:
            x = lim[r]
            if x != math.inf and x > top:
                top = x
        tops.append(top)
    keyed: list[tuple[int, float, int]] = []
    for v in vms:
        weight = 0.0
        row = ws.demand[v]
        for r in range(len(tops)):
            t = tops[r]
            if t:
                weight += row[r] / t
        allowed = ws.allowed[v]
        keyed.append((len(allowed) if allowed is not None else len(ws.hosts), -weight, v))
    keyed.sort()
    return [(v,) for _, _, v in keyed]


def _shorten(
    ws: Workspace, origin: Sequence[int], actions: list[Action], suspend: frozenset[int]
) -> list[Action]:
    """When some migration of the plan waits, move the arrivals that wait to hosts with
    room now (arrivals.py) and keep the shorter plan; ``ws`` holds its end state."""
    if all(a.start == 0 for a in actions if a.kind == "migrate"):
        return actions  # nothing waits: as short as its longest move
    before = list(ws.assign)
    if not unchain(ws, origin, ws.config.unchain_checks):
        return actions
    try:
        shorter = schedule_plan(ws, origin, list(ws.assign), suspend)
    except PlanError:
        shorter = None
    if shorter is not None and _duration(shorter) < _duration(actions):
        return shorter
    for v in range(len(ws.vms)):  # back to the first plan's end state
        if ws.assign[v] != before[v] and ws.assign[v] != -1:
            ws.remove(v)
    for v, h in enumerate(before):
        if ws.assign[v] != h and h != -1:
            ws.place(v, h)
    return actions


def _duration(actions: Sequence[Action]) -> int:
    return max((a.end for a in actions), default=0)


def solve_repair(
    snapshot: Snapshot,
    constraints: Sequence[c.Constraint] = (),
    config: PlacementConfig | None = None,
    *,
    relief: bool = False,
) -> Plan:
    """A plan that makes ``snapshot`` satisfy ``constraints`` (and, with ``relief``,
    takes every host below its measured-demand threshold); empty if already viable."""
    config = config or PlacementConfig()
    # The cyclic collector is paused while the workspace lives (its thousands of lists
    # would be walked for nothing: nothing they hold is garbage before the end), and
    # resumed only once ``_solve`` has returned and freed it: resumed earlier, the
    # first allocation would start a collection that walks the whole workspace.
    was = gc.isenabled()
    gc.disable()
    try:
        return _solve(snapshot, constraints, config, relief)
    finally:
        if was:
            gc.enable()


def _solve(
    snapshot: Snapshot, constraints: Sequence[c.Constraint], config: PlacementConfig, relief: bool
) -> Plan:
    forced = _forced_states(snapshot, constraints)
    ws = Workspace(snapshot, constraints, config, relief=relief)
    try:
        return _solve_repair(ws, forced, config)
    finally:
        ws.close()


def _solve_repair(ws: Workspace, forced: dict[str, str], config: PlacementConfig) -> Plan:
    now = ws.now
    states = [forced.get(key, now[v]) for v, key in enumerate(ws.vkeys)] if forced else list(now)
    suspend = frozenset(
        v for v, state in enumerate(now) if state == "running" and states[v] == "sleeping"
    )
    unready = sorted(
        ws.vkeys[v] for v, state in enumerate(now) if state == "ready" and states[v] == "sleeping"
    )
    if unready:
        reason = f"vm {unready[0]} is ready: only a running VM can be suspended (sleeping)"
        return Plan("infeasible", (), ws.placement(), reason, proven=True)
    origin, stay = _initial(ws, states)
    broken = _broken_continuous(ws)
    if broken:
        return Plan("infeasible", (), _named(ws, stay), broken, proven=True)
    _freeze_continuous(ws)
    boots = {v for v, state in enumerate(now) if state == "ready" and states[v] == "running"}
    first = _misplaced(ws)
    queue = [first]
    # the later stages, built when the first fails (the state is the same then); the
    # last counts as the last resort (a proof of infeasibility) only when ``final``
    everyone: set[int] | None = None
    final = False
    # why the last stage failed, and the last refusal (its hosts are the details):
    # written out only if no stage succeeds
    last: str | Refusal = ""
    refused: Refusal | None = None
    proven = False
    widened = False
    while queue:
        movable = queue.pop(0)
        _lift(ws, movable)
        departing = frozenset(origin[v] for v in movable if origin[v] != -1)
        units = _units(ws, movable | boots)
        outcome = place_units(
            ws, units, prefer_current=True, departing=departing, arrivals=Arrivals(ws, origin)
        )
        if outcome.ok:
            residual = _residual(ws)
            if residual:
                last, proven = residual, True
                _lift(ws, movable | boots)
                if everyone is None:
                    everyone, final = _later_stages(ws, origin, first, queue)
                continue
            target = list(ws.assign)
            try:
                actions = schedule_plan(ws, origin, target, suspend)
            except PlanError as exc:
                last, proven = str(exc), False
                _lift(ws, movable | boots)
                if everyone is None:
                    everyone, final = _later_stages(ws, origin, first, queue)
                continue
            actions = _shorten(ws, origin, actions, suspend)
            if config.local_search_evals:
                actions = improve_plan(ws, origin, actions, config.local_search_evals, suspend)
            return Plan("solved", tuple(actions), ws.placement())
        assert outcome.refusal is not None
        if everyone is None:
            everyone, final = _later_stages(ws, origin, first, queue)
        last, proven = outcome.refusal, outcome.proven and movable is everyone and final
        refused = outcome.refusal
        if queue == [everyone] and not widened:  # once
            widened = True
            wider = _room_for(ws, outcome.refusal.vms, movable)
            if wider and wider != everyone and wider != movable:
                queue.insert(0, wider)
    details = tuple(refused.details()) if refused is not None else ()
    return Plan("infeasible", (), _named(ws, stay), str(last), proven, details)
