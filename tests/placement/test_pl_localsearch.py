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
