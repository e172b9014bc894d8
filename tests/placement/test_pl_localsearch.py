"""Local search after a repair: never worse than the greedy plan, always checked."""

import random
from dataclasses import replace

import pytest

from dvms.placement import Host, PlacementConfig, Snapshot, Vm, check_plan, solve_repair
from dvms.placement import constraints as c

BASE = PlacementConfig(migration_mib_per_s=125.0, overload_threshold=0.9)


def partition(seed: int, size: int = 8):
    """VMPlaceS-like load: 7-core hosts, 10 VMs each, demands N(60, 20) in tenths."""
    rng = random.Random(seed)
    hosts = tuple(Host(f"h{i}", cpus=7, memory_mib=32768) for i in range(size))
    vms = []
    for h in range(size):
        for k in range(10):
            d = min(100, max(0, round(rng.gauss(60, 20) / 10) * 10))
            vms.append(Vm(f"v{h}-{k}", vcpus=1, memory_mib=rng.choice([1024, 2048]),
                          host=f"h{h}", cpu_demand=d / 100))  # fmt: skip
    keys = [vm.key for vm in vms]
    cons = [c.Spread(tuple(rng.sample(keys, 3)), False), c.Ban(tuple(keys[:2]), frozenset({"h0"}))]
    return Snapshot(hosts, tuple(vms)), cons


def score(plan):
    return (plan.migrations, plan.duration)


def test_local_search_never_worse_and_checked() -> None:
    better = 0
    searched = replace(BASE, local_search_evals=100)
    for seed in range(60):
        snap, cons = partition(seed)
        greedy = solve_repair(snap, cons, BASE, relief=True)
        plan = solve_repair(snap, cons, searched, relief=True)
        assert plan.status == greedy.status, seed
        if plan.status != "solved":
            continue
        assert check_plan(snap, cons, plan.actions, searched, relief=True) == [], seed
        assert score(plan) <= score(greedy), seed
        better += score(plan) < score(greedy)
    assert better >= 1  # the pass does something on this sample


def test_off_by_default_and_validated() -> None:
    assert PlacementConfig().local_search_evals == 0
    with pytest.raises(ValueError, match="local_search_evals"):
        PlacementConfig(local_search_evals=-1)


def test_mttr_objective_ranks_duration_first_and_checked() -> None:
    """Under ``objective="mttr"`` no plan is longer than the greedy one, and on this
    sample some are shorter than both the greedy plan and the migrations-first one."""
    shorter = 0
    by_migrations = replace(BASE, local_search_evals=100)
    by_mttr = replace(by_migrations, objective="mttr")
    for seed in range(60):
        snap, cons = partition(seed)
        greedy = solve_repair(snap, cons, BASE, relief=True)
        first = solve_repair(snap, cons, by_migrations, relief=True)
        plan = solve_repair(snap, cons, by_mttr, relief=True)
        assert plan.status == greedy.status, seed
        if plan.status != "solved":
            continue
        assert check_plan(snap, cons, plan.actions, by_mttr, relief=True) == [], seed
        assert (plan.duration, plan.migrations) <= (greedy.duration, greedy.migrations), seed
        shorter += plan.duration < min(greedy.duration, first.duration)
    assert shorter >= 1


def test_objective_validated() -> None:
    assert PlacementConfig().objective == "migrations"
    with pytest.raises(ValueError, match="unknown objective 'fast'"):
        PlacementConfig(objective="fast")


def _searching(snap, cons, config, budget=10_000):
    """A local search over ``snap`` as the repair starts it: every VM on its host."""
    from dvms.placement.localsearch import _Search
    from dvms.placement.workspace import Workspace

    ws = Workspace(snap, cons, config, relief=True)
    origin = [ws.h_index[vm.host] if vm.host else -1 for vm in snap.vms]
    ws.place_all(origin)
    return _Search(ws, origin, budget, frozenset())


def _with_starts_stops_and_growth(snap, cons, rng):
    """The partition with VMs that grow (``preserve``), and timed boots, shutdowns
    and allocations, so that every term of the bound has something to bound."""
    timed = {"boot": 7, "shutdown": 5, "allocate": 2}
    vms = [replace(vm, durations=timed) for vm in snap.vms]
    vms += [Vm(f"new{i}", state="ready", memory_mib=1024, cpu_demand=0.3, durations=timed)
            for i in range(2)]  # fmt: skip
    grow = tuple(vm.name for vm in rng.sample(vms[:-2], 3))
    return Snapshot(snap.hosts, tuple(vms)), [*cons, c.Preserve(grow, "cpu_demand", 1000)]


@pytest.mark.parametrize("caps", [(1, 1), (2, 2), (1, 3)])
@pytest.mark.parametrize("objective", ["migrations", "mttr"])
@pytest.mark.parametrize("extras", [False, True])
def test_bound_never_exceeds_the_scheduled_plan(caps, objective, extras) -> None:
    """The bound that spares a plan's scheduling is, component by component, at most
    what the scheduled plan scores: else the search would drop moves that improve.
    Random end states reached by the search's own moves, with (``extras``) VMs that
    start, stop and grow; the load order a move left stale is up to date whenever it
    is read."""
    config = replace(BASE, max_migrations_out=caps[0], max_migrations_in=caps[1],
                     objective=objective)  # fmt: skip
    rng = random.Random(7)
    checked = tight = 0
    for seed in range(25):
        snap, cons = partition(seed, size=6)
        if extras:
            snap, cons = _with_starts_stops_and_growth(snap, cons, rng)
        search = _searching(snap, cons, config)
        ws = search.ws
        if extras:  # the new VMs start on h0 and h1, two VMs of h5 stop
            ws.place(ws.v_index["new0"], 0)
            ws.place(ws.v_index["new1"], 1)
            for vm in snap.vms[50:52]:
                ws.remove(ws.v_index[vm.key])
        runs = [v for v in range(len(ws.vms)) if search.origin[v] != -1 and ws.assign[v] != -1]
        for _ in range(16):
            undo: list = []
            for _ in range(rng.randint(1, 6)):
                search._move(rng.choice(runs), rng.randrange(len(ws.hosts)), undo)
            got = search.score()
            if got is None:  # a cycle no pivot breaks
                continue
            bound = search.bound(undo)
            assert all(b <= s for b, s in zip(bound, got[0], strict=True)), (seed, bound, got)
            assert search.rate(got[1]) == got[0]
            checked += 1
            tight += bound == got[0]
            assert ws.order == sorted((ws._key(h), h) for h in range(len(ws.hosts)))
            if rng.random() < 0.5:
                search._restore(undo)
            else:  # the next moves start from this state
                search.changed()
    # neither vacuous nor trivial (growth leaves many states with no plan)
    assert checked > (80 if extras else 200) and 0 < tight < checked


@pytest.mark.parametrize(
    ("moved", "end"),
    [
        # h0 makes room for A's growth only once B has left: 9 s, then 20 s
        ({"B": "h2"}, 29),
        # C's growth fits on h1 at once, to the last unit, even while D is there
        ({"B": "h2", "D": "h2"}, 29),
        ({"D": "h0", "A": "h2"}, 20),
        # A and C leave instead of growing in place: C waits for A to leave h0
        ({"A": "h2", "C": "h0"}, 18),
    ],
)
def test_bound_of_growth_is_the_plan_where_it_decides(moved, end) -> None:
    """Plans whose length is set by the allocations of growing VMs (``preserve``):
    the bound equals the scheduled plan's length. A growth counts where the VM stays,
    and waits for a departure only when it does not fit before one."""
    from dvms.placement.plan import schedule_plan

    hosts = tuple(Host(f"h{i}", cpus=2, memory_mib=32768) for i in range(3))
    durations = {"allocate": 20}
    demand = {"A": ("h0", 0.8), "B": ("h0", 0.8), "C": ("h1", 0.85), "D": ("h1", 0.8)}
    vms = tuple(
        Vm(name, memory_mib=1024, host=host, cpu_demand=d, durations=durations)
        for name, (host, d) in demand.items()
    )
    grow = [c.Preserve(("A",), "cpu_demand", 1500), c.Preserve(("C",), "cpu_demand", 1000)]
    search = _searching(Snapshot(hosts, vms), grow, BASE)
    ws = search.ws
    for name, host in moved.items():
        ws.remove(ws.v_index[name])
        ws.place(ws.v_index[name], ws.h_index[host])
    search.changed()
    plan = schedule_plan(ws, search.origin, list(ws.assign))
    assert search.rate(plan)[1] == end
    assert search.bound([])[1] == end


def test_proven_only_at_the_best_reachable_score() -> None:
    """Every end state of a small partition: ``proven(s)`` holds only for the least
    score of them all, and for it on some instances (else the shortcut never runs)."""
    import itertools

    from dvms.placement.plan import PlanError, schedule_plan

    hosts = tuple(Host(f"h{i}", cpus=2, memory_mib=32768) for i in range(3))
    proved = 0
    for seed in range(30):
        rng = random.Random(seed)
        # a third of the instances: every migration lasts the same, whatever it moves
        durations = {"migrate": 10} if seed % 3 == 0 else {}
        # h0 holds three VMs, often more than it may (1.8 cores)
        vms = tuple(
            Vm(
                f"v{i}",
                memory_mib=rng.choice([1024, 2048]),
                host=f"h{i % 3 if i < 6 else 0}",
                cpu_demand=rng.choice([0.3, 0.5, 0.7, 0.9]),
                durations=durations,
            )
            for i in range(7)
        )
        cons = [c.Ban(("v0",), frozenset({"h0"}))] if seed % 2 else []
        for objective in ("migrations", "mttr"):
            config = replace(BASE, objective=objective)
            search = _searching(Snapshot(hosts, vms), cons, config)
            ws = search.ws
            scores = []
            for target in itertools.product(range(3), repeat=len(vms)):
                for v in range(len(vms)):
                    ws.remove(v)
                if not all(ws.try_place((v,), h) for v, h in enumerate(target)):
                    for v in range(len(vms)):
                        if ws.assign[v] != -1:
                            ws.remove(v)
                    ws.place_all(search.origin)
                    continue
                try:
                    actions = schedule_plan(ws, search.origin, target)
                except PlanError:
                    continue
                scores.append(search.rate(actions))
            if not scores:  # more load than the three hosts hold
                continue
            least = min(scores)
            for s in set(scores):
                assert not search.proven(s) or s == least, (seed, objective, s, least)
            proved += search.proven(least)
    assert proved >= 5


@pytest.mark.parametrize("evals", [2, 5, 30])
def test_screening_by_the_bound_changes_no_plan(evals, monkeypatch) -> None:
    """A move the bound screens out costs its evaluation like a scheduled one: for
    any budget, even one that runs out, the plans are those of a search that
    schedules every move."""
    from dvms.placement.localsearch import _Search

    configs = [replace(BASE, local_search_evals=evals, objective=o) for o in ("migrations", "mttr")]
    cases = [(partition(seed), config) for seed in range(40) for config in configs]
    screened = [solve_repair(snap, cons, config, relief=True) for (snap, cons), config in cases]
    monkeypatch.setattr(_Search, "bound", lambda self, touched: (0, 0, 0))
    for ((snap, cons), config), plan in zip(cases, screened, strict=True):
        assert solve_repair(snap, cons, config, relief=True) == plan
