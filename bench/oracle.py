"""An exact repair model with OR-Tools CP-SAT: the optimum the engine is measured against.

Benchmark and test code only (``ortools`` is in the ``test`` extra, never a runtime
dependency of dvms). It reads the same ``Snapshot``, constraint records and
``PlacementConfig`` as ``solve_repair`` and builds its own model of the *end state*:

    x[v, h] = 1  <=>  VM v runs on host h at the end
    every running VM (and every ready VM forced running) on exactly one online host
    capacity per resource (relief: measured CPU demand <= cpus * overload_threshold)
    ban / fence / root as domains, spread (<= 1 member per host), gather (same host),
    among (one group chosen for all members), lonely, running/resource capacity on a set

Objectives, one solve each (the engine optimises none of them explicitly):

- ``migrations``: running VMs that end on another host than now;
- ``memory``: MiB of the VMs that move;
- ``mttr``: the plan's duration, scheduled exactly: each moved VM migrates once, at
  most ``max_migrations_out`` / ``max_migrations_in`` at once per host, a VM occupies
  both hosts while it migrates and no capped resource is exceeded at any time from a
  host's first arrival on (the engine's rules, plan.py: an arrival waits for room, so a
  host over its limit now takes nothing before it has shed enough). Continuous
  constraints between steps are not modelled, a relaxation: the engine can only be
  slower than this optimum, never faster.

The optimum of the end-state model is itself a lower bound of what a plan can achieve
(a plan may need extra pivot migrations to break cycles), so every ratio reported
against it is conservative. ``solve`` returns the value and whether CP-SAT proved it
optimal within the time cap; when it did not, ``bound`` is a proven lower bound (CP-SAT's,
or one known without search: the VMs that must leave each host for ``migrations``; for
``mttr`` those VMs in rounds of ``max_migrations_out``, each at least its shortest
migration, and one migration more when a VM that must leave fits now on none of the
hosts it may go to).
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from ortools.sat.python import cp_model

from dvms.placement import constraints as c
from dvms.placement.config import PlacementConfig
from dvms.placement.model import Snapshot

__all__ = ["OBJECTIVES", "OracleResult", "solve"]

OBJECTIVES = ("migrations", "memory", "mttr")

#: Constraint kinds the model knows; anything else is refused (never silently dropped).
_KNOWN = (
    c.Ban,
    c.Fence,
    c.Spread,
    c.Gather,
    c.Among,
    c.Lonely,
    c.Root,
    c.Running,
    c.Ready,
    c.RunningCapacity,
    c.ResourceCapacity,
    c.Schedule,
    c.Colocate,
    c.Preserve,
)


@dataclass(frozen=True, slots=True)
class OracleResult:
    """``status``: ``optimal``, ``feasible`` (time cap hit), ``infeasible`` (proven) or
    ``unknown`` (time cap hit, nothing found). ``value`` is the best objective found,
    ``bound`` CP-SAT's proven lower bound; ``placement`` the end host of every VM;
    ``starts`` (``mttr`` only) the second each moved VM starts migrating."""

    status: str
    value: int | None
    bound: int | None
    seconds: float
    placement: dict[str, str]
    starts: dict[str, int] = field(default_factory=dict)


def _resources(snapshot: Snapshot, relief: bool) -> list[str]:
    return list(snapshot.resources(relief=relief))


def solve(
    snapshot: Snapshot,
    constraints: Sequence[c.Constraint],
    config: PlacementConfig,
    *,
    relief: bool = False,
    objective: str = "migrations",
    time_limit_s: float = 10.0,
    workers: int = 2,
    upper: int | None = None,
    max_migrations: int | None = None,
    hint: dict[str, str] | None = None,
    hint_starts: dict[str, int] | None = None,
) -> OracleResult:
    """The best end state for ``objective`` (see the module docstring). ``upper``, a
    known achievable value (the engine's), bounds the search: the plan horizon for
    ``mttr``. ``max_migrations`` caps the number of migrations (MTTR at no more
    migrations than the engine's); ``hint`` is an end placement to start from and
    ``hint_starts`` (``mttr``) when each of its migrations starts."""
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; expected one of {OBJECTIVES}")
    for k in constraints:
        if not isinstance(k, _KNOWN):
            raise ValueError(f"the oracle does not model {k.kind}")
    t0 = time.perf_counter()
    m = cp_model.CpModel()
    hosts = list(snapshot.hosts)
    h_of = {h.name: i for i, h in enumerate(hosts)}
    states = {vm.key: vm.state for vm in snapshot.vms}
    for k in constraints:
        if isinstance(k, c.Running | c.Ready):
            for key in k.vms:
                states[key] = k.kind
    vms = [vm for vm in snapshot.vms if states[vm.key] == "running"]
    # ``preserve``: the end state allocates at least ``amount`` (never less than now);
    # the step-by-step model keeps today's use, which only makes it more optimistic
    grow: dict[str, dict[str, int]] = {}
    for k in constraints:
        if isinstance(k, c.Preserve):
            for key in k.vms:
                grow.setdefault(key, {})[k.resource] = k.amount
    future = [
        replace(
            vm, usage={**vm.usage, **{r: max(a, vm.demand(r)) for r, a in grow[vm.key].items()}}
        )
        if vm.key in grow
        else vm
        for vm in vms
    ]
    v_of = {vm.key: i for i, vm in enumerate(vms)}
    domain: list[set[int]] = [{i for i, h in enumerate(hosts) if h.online} for _ in vms]
    for vm_i, vm in enumerate(vms):
        if vm.state == "sleeping":
            domain[vm_i] &= {h_of[vm.host]} if vm.host else set()
    where_now = {vm.key: vm for vm in snapshot.vms}
    for k in constraints:
        if isinstance(k, c.Ban):
            for key in k.vms:
                if key in v_of:
                    domain[v_of[key]] -= {h_of[n] for n in k.hosts}
        elif isinstance(k, c.Fence):
            for key in k.vms:
                if key in v_of:
                    domain[v_of[key]] &= {h_of[n] for n in k.hosts}
        elif isinstance(k, c.Schedule) and k.vm in v_of:
            domain[v_of[k.vm]] &= {h_of[k.host]}
        elif isinstance(k, c.Root):
            for key in k.vms:
                vm = where_now[key]
                if key in v_of and vm.host is not None and vm.state == "running":
                    domain[v_of[key]] &= {h_of[vm.host]}
    x: dict[tuple[int, int], cp_model.IntVar] = {}
    for v, dom in enumerate(domain):
        for h in sorted(dom):
            x[v, h] = m.new_bool_var(f"x{v}_{h}")
        m.add_exactly_one(x[v, h] for h in sorted(dom))
    by_host: list[list[int]] = [[] for _ in hosts]
    for v, h in x:
        by_host[h].append(v)
    resources = _resources(snapshot, relief)
    for r in resources:
        for h, host in enumerate(hosts):
            lim = host.limit(r, config)
            if lim == math.inf:
                continue
            terms = [(future[v].demand(r), x[v, h]) for v in by_host[h] if future[v].demand(r)]
            if terms and sum(d for d, _ in terms) > lim:
                m.add(sum(d * b for d, b in terms) <= int(lim))
    for k in constraints:
        _constraint(m, k, x, v_of, h_of, hosts, future, by_host)
    moved = _moved(m, x, vms, h_of)
    leave = _must_leave(hosts, future, domain, h_of, resources, config)
    for h, k in leave.items():
        m.add(sum(moved[v] for v in moved if h_of[vms[v].host] == h) >= k)  # redundant
    if max_migrations is not None:
        m.add(sum(moved.values()) <= max_migrations)
    for key, name in (hint or {}).items():
        if key in v_of:
            for h in range(len(hosts)):
                if (v_of[key], h) in x:
                    m.add_hint(x[v_of[key], h], hosts[h].name == name)
    cost = [vm.duration("migrate", config) for vm in vms]
    if objective == "migrations":
        m.minimize(sum(moved.values()))
    elif objective == "memory":
        m.minimize(sum(vms[v].memory_mib * b for v, b in moved.items()))
    starts: dict[int, cp_model.IntVar] = {}
    if objective == "mttr":
        m.minimize(_mttr(m, x, vms, h_of, moved, cost, config, hosts, resources, upper, starts))
        for key, t in (hint_starts or {}).items():
            if key in v_of and v_of[key] in starts:
                m.add_hint(starts[v_of[key]], t)
    floor = 0  # a bound known without search, for when CP-SAT stops early
    if objective == "migrations":
        floor = sum(leave.values())
    elif objective == "mttr":
        cost_on = {}
        for v, vm in enumerate(vms):
            if vm.host is not None:
                h = h_of[vm.host]
                cost_on[h] = min(cost_on.get(h, cost[v]), cost[v])
        floor = max(
            (-(-k // config.max_migrations_out) * cost_on[h] for h, k in leave.items()), default=0
        )
        late = _forced_to_wait(hosts, vms, future, domain, h_of, resources, config)
        if late and cost:
            floor = max(floor, min(cost) + max(cost[v] for v in late))
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = time_limit_s
    solver.parameters.num_workers = workers
    status = solver.solve(m)
    secs = time.perf_counter() - t0
    name = {
        cp_model.OPTIMAL: "optimal",
        cp_model.FEASIBLE: "feasible",
        cp_model.INFEASIBLE: "infeasible",
    }.get(status, "unknown")
    if name in ("optimal", "feasible"):
        where = {vms[v].key: hosts[h].name for (v, h), b in x.items() if solver.value(b)}
        value = round(solver.objective_value)
        bound = max(floor, math.ceil(solver.best_objective_bound - 1e-6))
        began = {vms[v].key: solver.value(s) for v, s in starts.items() if solver.value(moved[v])}
        return OracleResult(name, value, bound, secs, where, began)
    if name == "unknown":
        return OracleResult(name, None, floor, secs, {})
    return OracleResult(name, None, None, secs, {})


def _must_leave(hosts, vms, domain, h_of, resources, config) -> dict[int, int]:
    """Per host, a lower bound of how many of its VMs leave: the ones banned from it,
    then the fewest (largest first) that bring each resource under its limit."""
    out: dict[int, int] = {}
    for h, host in enumerate(hosts):
        here = [v for v, vm in enumerate(vms) if vm.host == host.name and vm.state == "running"]
        forced = [v for v in here if h not in domain[v]]
        stay = [v for v in here if h in domain[v]]
        k = 0
        for r in resources:
            lim = host.limit(r, config)
            if lim == math.inf:
                continue
            excess = sum(vms[v].demand(r) for v in stay) - lim
            sizes = sorted((vms[v].demand(r) for v in stay), reverse=True)
            n = 0
            while excess > 0 and n < len(sizes):
                excess -= sizes[n]
                n += 1
            k = max(k, n)
        if forced or k:
            out[h] = len(forced) + k
    return out


def _forced_to_wait(hosts, vms, future, domain, h_of, resources, config) -> list[int]:
    """VMs that must leave their host (it is outside their domain) and fit now on none
    of the hosts they may go to: until a first migration ends every host holds at least
    what it holds now, so such a VM starts after one migration (a bound for ``mttr``)."""
    now = [[0] * len(resources) for _ in hosts]
    for vm in vms:
        if vm.host is not None and vm.state == "running":
            for i, r in enumerate(resources):
                now[h_of[vm.host]][i] += vm.demand(r)
    limits = [[host.limit(r, config) for r in resources] for host in hosts]
    out = []
    for v, vm in enumerate(vms):
        if vm.host is None or vm.state != "running" or h_of[vm.host] in domain[v]:
            continue
        need = [future[v].demand(r) for r in resources]
        if not any(
            all(u + d <= lim for u, d, lim in zip(now[h], need, limits[h], strict=True))
            for h in domain[v]
        ):
            out.append(v)
    return out


def _moved(m, x, vms, h_of) -> dict[int, cp_model.IntVar]:
    """1 when a VM running now ends elsewhere."""
    out = {}
    for v, vm in enumerate(vms):
        if vm.state == "running" and vm.host is not None:
            stay = x.get((v, h_of[vm.host]))
            b = m.new_bool_var(f"moved{v}")
            if stay is None:
                m.add(b == 1)
            else:
                m.add(b + stay == 1)
            out[v] = b
    return out


def _mttr(m, x, vms, h_of, moved, cost, config, hosts, resources, upper, starts) -> cp_model.IntVar:
    """The plan's duration, scheduled exactly: every moved VM migrates once in
    ``[s, s + cost)``; at most ``max_migrations_out`` (``_in``) at once per source
    (destination); a VM occupies its source until its migration ends and its
    destination from its migration's start, and no capped resource is ever exceeded on
    any host from the first arrival on (a host over its limit now may stay over it
    while it only sheds, as in the engine, where an arrival waits for room). Continuous
    constraints between steps are not modelled (a relaxation). ``starts`` receives the
    start variable of every moved VM."""
    horizon = sum(cost[v] for v in moved) + 1
    if upper is not None:
        horizon = min(horizon, upper + 1)
    d = m.new_int_var(0, horizon, "duration")
    start = {v: m.new_int_var(0, horizon, f"s{v}") for v in moved}
    starts.update(start)
    n = len(hosts)
    outgoing: list[list] = [[] for _ in range(n)]
    incoming: list[list] = [[] for _ in range(n)]
    occupancy: list[list] = [[] for _ in range(n)]  # (interval, VM) of arrivals, boots
    staying: list[list] = [[] for _ in range(n)]  # (VM, end of its stay) on its host now
    arriving: list[list] = [[] for _ in range(n)]  # (start, x) of VMs that may arrive
    for v, b in moved.items():
        src = h_of[vms[v].host]
        end = m.new_int_var(0, horizon, f"e{v}")
        m.add(end == start[v] + cost[v]).only_enforce_if(b)
        m.add(end == 0).only_enforce_if(b.Not())
        m.add(start[v] == 0).only_enforce_if(b.Not())
        m.add(d >= end)
        move = m.new_optional_fixed_size_interval_var(start[v], cost[v], b, f"m{v}")
        outgoing[src].append(move)
        # on the source from 0 until the migration ends (or the whole plan: stays)
        stay_end = m.new_int_var(0, horizon, f"se{v}")
        m.add(stay_end == end).only_enforce_if(b)
        m.add(stay_end == horizon).only_enforce_if(b.Not())
        staying[src].append((v, stay_end))
        for h in range(n):
            if h != src and (v, h) in x:
                incoming[h].append(
                    m.new_optional_fixed_size_interval_var(start[v], cost[v], x[v, h], "")
                )
                size = m.new_int_var(0, horizon, "")
                m.add(size == horizon - start[v]).only_enforce_if(x[v, h])
                occupancy[h].append(
                    (m.new_optional_interval_var(start[v], size, horizon, x[v, h], ""), v)
                )
                arriving[h].append((start[v], x[v, h]))
    for v in range(len(vms)):
        if v not in moved:  # a ready VM booting: present from 0 (boots are not timed here)
            for h in range(n):
                if (v, h) in x:
                    occupancy[h].append((m.new_optional_interval_var(
                        0, horizon, horizon, x[v, h], ""), v))  # fmt: skip
    # redundant linear bounds (the same rules, seen by the LP relaxation): the longest
    # migration, and per host the migration seconds over its parallel slots
    work_out: list[list] = [[] for _ in range(n)]
    work_in: list[list] = [[] for _ in range(n)]
    for v, b in moved.items():
        m.add(d >= cost[v] * b)
        work_out[h_of[vms[v].host]].append(cost[v] * b)
        for h in range(n):
            if h != h_of[vms[v].host] and (v, h) in x:
                work_in[h].append(cost[v] * x[v, h])
    for h in range(n):
        if work_out[h]:
            m.add(config.max_migrations_out * d >= sum(work_out[h]))
            # rounds: at most max_migrations_out start within any window of the shortest
            # duration, so n migrations out of h need ceil(n / cap) such windows
            here = [v for v in moved if h_of[vms[v].host] == h]
            rounds = m.new_int_var(0, len(here), f"rounds{h}")
            m.add(config.max_migrations_out * rounds >= sum(moved[v] for v in here))
            m.add(d >= min(cost[v] for v in here) * rounds)
        if work_in[h]:
            m.add(config.max_migrations_in * d >= sum(work_in[h]))
    for h in range(n):
        if outgoing[h]:
            m.add_cumulative(outgoing[h], [1] * len(outgoing[h]), config.max_migrations_out)
        if incoming[h]:
            m.add_cumulative(incoming[h], [1] * len(incoming[h]), config.max_migrations_in)
        limits = [hosts[h].limit(r, config) for r in resources]
        now = [sum(vm.demand(r) for vm in vms if vm.host == hosts[h].name) for r in resources]
        over = any(u > lim for u, lim in zip(now, limits, strict=True))
        if over and not arriving[h]:
            continue  # over its limit now and only sheds: nothing has to wait for room
        # a host over its limit now is held to it from its first arrival on (the engine
        # starts an arrival only when the host has room, and then keeps it within)
        begin = _first_arrival(m, arriving[h], horizon) if over else 0
        here = occupancy[h] + [(_stay(m, begin, end, horizon), v) for v, end in staying[h]]
        for r, lim in zip(resources, limits, strict=True):
            use = [(iv, vms[v].demand(r)) for iv, v in here if vms[v].demand(r)]
            if lim != math.inf and sum(a for _, a in use) > lim:
                m.add_cumulative([iv for iv, _ in use], [a for _, a in use], int(lim))
    return d


def _first_arrival(m, arriving: list, horizon: int) -> cp_model.IntVar:
    """The start of the first migration onto a host (``horizon`` when none arrives)."""
    first = m.new_int_var(0, horizon, "")
    starts = []
    for start, chosen in arriving:
        s = m.new_int_var(0, horizon, "")
        m.add(s == start).only_enforce_if(chosen)
        m.add(s == horizon).only_enforce_if(chosen.Not())
        starts.append(s)
    m.add_min_equality(first, starts)
    return first


def _stay(m, begin, end, horizon: int) -> cp_model.IntervalVar:
    """A VM on its host now, counted from ``begin`` until ``end`` (empty if it has left
    by then)."""
    if isinstance(begin, int):
        return m.new_interval_var(begin, end, end, "")
    until = m.new_int_var(0, horizon, "")
    m.add_max_equality(until, [begin, end])
    return m.new_interval_var(begin, m.new_int_var(0, horizon, ""), until, "")


def _constraint(m, k, x, v_of, h_of, hosts, vms, by_host) -> None:
    members = [v_of[key] for key in getattr(k, "vms", ()) if key in v_of]
    if isinstance(k, c.Spread):
        for h in range(len(hosts)):
            here = [x[v, h] for v in members if (v, h) in x]
            if len(here) > 1:
                m.add_at_most_one(here)
    elif isinstance(k, c.Gather | c.Colocate):
        if isinstance(k, c.Colocate):
            members = [v_of[key] for key in (k.vm, k.target) if key in v_of]
        for a, b in itertools.pairwise(members):
            for h in range(len(hosts)):
                xa, xb = x.get((a, h)), x.get((b, h))
                if xa is None and xb is None:
                    continue
                if xa is None or xb is None:
                    m.add((xa if xa is not None else xb) == 0)
                else:
                    m.add(xa == xb)
    elif isinstance(k, c.Among):
        groups = [[h_of[n] for n in g] for g in k.groups]
        pick = [m.new_bool_var(f"among{id(k)}_{g}") for g in range(len(groups))]
        m.add_exactly_one(pick)
        group_of = {h: g for g, hs in enumerate(groups) for h in hs}
        for v in members:
            for h in range(len(hosts)):
                if (v, h) not in x:
                    continue
                if h not in group_of:
                    m.add(x[v, h] == 0)
                else:
                    m.add_implication(x[v, h], pick[group_of[h]])
    elif isinstance(k, c.Lonely):
        inside = set(members)
        for h in range(len(hosts)):
            mine = [x[v, h] for v in by_host[h] if v in inside]
            other = [x[v, h] for v in by_host[h] if v not in inside]
            if mine and other:
                any_mine = m.new_bool_var("")
                m.add_max_equality(any_mine, mine)
                for b in other:
                    m.add_implication(any_mine, b.Not())
    elif isinstance(k, c.RunningCapacity):
        terms = [x[v, h_of[n]] for n in k.hosts for v in by_host[h_of[n]]]
        if terms:
            m.add(sum(terms) <= k.amount)
    elif isinstance(k, c.ResourceCapacity):
        terms = [
            vms[v].demand(k.resource) * x[v, h_of[n]] for n in k.hosts for v in by_host[h_of[n]]
        ]
        if terms:
            m.add(sum(terms) <= k.amount)


def engine_cost(plan, snapshot: Snapshot) -> dict[str, int]:
    """The three objectives of an engine plan, counted like the oracle counts them
    (a pivot is two migrations and moves the memory twice)."""
    mem = {vm.key: vm.memory_mib for vm in snapshot.vms}
    migr = [a for a in plan.actions if a.kind == "migrate"]
    return {
        "migrations": len(migr),
        "memory": sum(mem[a.vm] for a in migr),
        "mttr": plan.duration,
    }
