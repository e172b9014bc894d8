"""Arrivals that would wait: repairs send VMs where they arrive at once (arrivals.py)."""

from dataclasses import replace

from dvms.placement import Host, PlacementConfig, Snapshot, Vm, check_plan, solve_repair
from dvms.placement import constraints as c
from dvms.placement.arrivals import Arrivals
from dvms.placement.workspace import Workspace

BTR = PlacementConfig.btrplace()


def hosts(*caps: int) -> tuple[Host, ...]:
    return tuple(Host(f"n{i}", capacity={"cpu": cap}) for i, cap in enumerate(caps))


def vm(name: str, host: str, cpu: int) -> Vm:
    return Vm(name, vcpus=0, memory_mib=0, host=host, usage={"cpu": cpu})


def chain_instance() -> tuple[Snapshot, list[c.Constraint]]:
    """n0 is over its capacity (a1 leaves); b1 is banned from n1. b1 goes first (it is
    the more constrained) to n2, the least loaded host; then a1 fits only on n1, once
    b1 has left it: a chain of two migrations. a1 on n2 and b1 on n3 is one round."""
    snap = Snapshot(
        hosts(100, 100, 100, 100),
        (vm("a1", "n0", 50), vm("a2", "n0", 60), vm("b1", "n1", 30), vm("b2", "n1", 30),
         vm("c1", "n2", 50), vm("d1", "n3", 65)),
    )  # fmt: skip
    return snap, [c.Ban(("b1",), frozenset({"n1"}))]


def test_an_arrival_that_would_wait_goes_where_there_is_room_now() -> None:
    snap, cons = chain_instance()
    chained = solve_repair(snap, cons, replace(BTR, unchain_checks=0))
    assert chained.placement["a1"] == "n1" and chained.duration == 2  # a1 waits for b1
    plan = solve_repair(snap, cons, BTR)
    assert check_plan(snap, cons, plan.actions, BTR) == []
    assert plan.migrations == chained.migrations == 2
    assert (plan.placement["a1"], plan.placement["b1"]) == ("n2", "n3")
    assert plan.duration == 1 and all(a.start == 0 for a in plan.actions)


def test_arrivals_are_spread_under_the_incoming_cap() -> None:
    # n2 is nearly empty and would take all four; two of them go to n3 and n4 instead
    snap = Snapshot(
        hosts(20, 20, 1000, 100, 100),
        (vm("a", "n0", 10), vm("b", "n0", 10), vm("c", "n1", 10), vm("d", "n1", 10),
         vm("f", "n3", 80), vm("g", "n4", 80)),
    )  # fmt: skip
    cons = [c.Ban(("a", "b"), frozenset({"n0"})), c.Ban(("c", "d"), frozenset({"n1"}))]
    plan = solve_repair(snap, cons, BTR)
    assert check_plan(snap, cons, plan.actions, BTR) == []
    assert plan.migrations == 4 and plan.duration == 1
    # the greedy choice alone does it, before any arrival is moved afterwards
    assert solve_repair(snap, cons, replace(BTR, unchain_checks=0)).duration == 1
    into = [a.dst for a in plan.actions]
    assert max(into.count(h) for h in into) <= BTR.max_migrations_in


def test_room_now_counts_the_vms_still_leaving() -> None:
    snap, cons = chain_instance()
    ws = Workspace(snap, cons, BTR)
    origin = [ws.h_index[v.host] for v in ws.vms]
    for v, h in enumerate(origin):
        ws.place(v, h)
    arr = Arrivals(ws, origin)
    a1, b1 = ws.vm("a1"), ws.vm("b1")
    ws.remove(b1)  # b1 leaves n1 but holds its room until its migration ends
    ws.remove(a1)
    n1, n2 = ws.h_index["n1"], ws.h_index["n2"]
    assert not arr.free((a1,), n1)  # 30 + 30 (b1, leaving) + 50 > 100
    assert arr.free((a1,), n2)  # 50 + 50 <= 100
    ws.place(a1, n1)
    assert arr.waits(n1) and not arr.waits(n2)
