"""The engine's proofs against an exact CP model (OR-Tools CP-SAT, bench/oracle.py).

On small repair instances (within ``exhaustive_hosts`` x ``exhaustive_vms``) the engine
may answer "infeasible" with ``proven=True``: the exact model must agree. Where the
engine solves, the model must find the end state feasible too, and never need more
migrations than the engine made.
"""

from __future__ import annotations

import random

import pytest

pytest.importorskip("ortools", reason="ortools (the test extra) is not installed")

from bench.oracle import solve
from dvms.placement import Host, PlacementConfig, Snapshot, Vm, solve_repair
from dvms.placement import constraints as c


def _instance(seed: int) -> tuple[Snapshot, list[c.Constraint]]:
    """3-4 hosts, up to 10 VMs, tight memory, a spread/ban/fence/among mix."""
    rng = random.Random(seed)
    n = rng.randint(3, 4)
    hosts = tuple(
        Host(f"h{i}", cpus=4, memory_mib=rng.choice([4096, 6144, 8192])) for i in range(n)
    )
    vms = [
        Vm(f"v{i}", vcpus=1, memory_mib=rng.choice([1024, 2048, 3072]), host=f"h{rng.randrange(n)}",
           cpu_demand=rng.choice([0.5, 1.0, 2.0]))
        for i in range(rng.randint(4, 10))
    ]  # fmt: skip
    keys = [vm.key for vm in vms]
    names = [h.name for h in hosts]
    cons: list[c.Constraint] = []
    if rng.random() < 0.7:
        cons.append(c.Spread(tuple(rng.sample(keys, min(len(keys), rng.randint(2, n + 1)))), False))
    if rng.random() < 0.5:
        cons.append(c.Ban(tuple(rng.sample(keys, 2)), frozenset(rng.sample(names, 1))))
    if rng.random() < 0.5:
        cons.append(c.Fence(tuple(rng.sample(keys, 2)), frozenset(rng.sample(names, 2))))
    if rng.random() < 0.3:
        groups = (frozenset(names[:2]), frozenset(names[2:]))
        cons.append(c.Among(tuple(rng.sample(keys, 3)), groups))
    return Snapshot(hosts, tuple(vms)), cons


def test_oracle_agrees_with_the_engines_proofs() -> None:
    config = PlacementConfig(overload_threshold=0.9)
    proofs = solved = 0
    for seed in range(120):
        snap, cons = _instance(seed)
        plan = solve_repair(snap, cons, config, relief=True)
        exact = solve(snap, cons, config, relief=True, time_limit_s=20.0, workers=1)
        assert exact.status in ("optimal", "infeasible"), (seed, exact.status)
        if plan.status == "infeasible" and plan.proven:
            proofs += 1
            assert exact.status == "infeasible", (seed, plan.reason)
        if plan.status == "solved":
            solved += 1
            assert exact.status == "optimal", seed
            assert exact.value is not None and exact.value <= plan.migrations, seed
    # the sample must exercise both answers, or the test proves nothing
    assert proofs >= 5 and solved >= 5, (proofs, solved)
