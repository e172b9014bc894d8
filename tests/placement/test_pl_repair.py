"""Repair and overload relief: few moves, ordered plans, pivots, caps, continuity."""

import pytest

from dvms.placement import (
    Host,
    PlacementConfig,
    Snapshot,
    Vm,
    check_plan,
    overloaded_hosts,
    solve_repair,
)
from dvms.placement import constraints as c

BTR = PlacementConfig.btrplace()


def cpu_hosts(*caps):
    return tuple(Host(f"n{i}", capacity={"cpu": cap}) for i, cap in enumerate(caps))


def vm(name, host, cpu, **kw):
    return Vm(name, vcpus=0, memory_mib=0, host=host, usage={"cpu": cpu}, **kw)


def solve_and_check(snap, cons, cfg=BTR, **kw):
    plan = solve_repair(snap, cons, cfg, **kw)
    if plan.status == "solved":
        assert check_plan(snap, cons, plan.actions, cfg, **kw) == []
    return plan


def test_viable_placement_gives_empty_plan():
    snap = Snapshot(cpu_hosts(4, 4), (vm("a", "n0", 2), vm("b", "n1", 2)))
    plan = solve_and_check(snap, [c.Spread(("a", "b"))])
    assert plan.status == "solved" and plan.actions == ()
    assert str(plan) == "already viable: empty plan"


def test_capacity_overflow_moves_the_cheapest_vm():
    vms = (
        vm("big", "n0", 4, durations={"migrate": 30}),
        vm("small", "n0", 2, durations={"migrate": 2}),
        vm("mid", "n0", 2, durations={"migrate": 10}),
    )
    plan = solve_and_check(Snapshot(cpu_hosts(6, 6), vms), [])
    assert plan.status == "solved"
    assert [(a.kind, a.vm, a.dst) for a in plan.actions] == [("migrate", "small", "n1")]


def test_zero_slack_swap_uses_a_pivot_host():
    snap = Snapshot(cpu_hosts(4, 4, 4), (vm("a", "n0", 4), vm("b", "n1", 4)))
    # n2 must end empty (a discrete cap), so the two VMs must swap; n2 can hold a detour
    cons = [
        c.Ban(("a",), frozenset({"n0"})),
        c.Ban(("b",), frozenset({"n1"})),
        c.ResourceCapacity(frozenset({"n2"}), "cpu", 0),
    ]
    plan = solve_and_check(snap, cons)
    assert plan.status == "solved" and plan.migrations == 3
    assert [(a.vm, a.src, a.dst) for a in plan.actions] == [
        ("a", "n0", "n2"),
        ("b", "n1", "n0"),
        ("a", "n2", "n1"),
    ]


def test_moves_avoid_hosts_that_must_be_left_first():
    snap = Snapshot(cpu_hosts(4, 4, 4), (vm("a", "n0", 4), vm("b", "n1", 4)))
    cons = [c.Ban(("a",), frozenset({"n0", "n2"})), c.Ban(("b",), frozenset({"n1"}))]
    plan = solve_and_check(snap, cons)
    # b could take a's place (a cycle: three moves); n2 is free now: two moves
    assert plan.migrations == 2 and plan.placement == {"a": "n1", "b": "n2"}


def test_unbreakable_cycle_is_reported():
    snap = Snapshot(cpu_hosts(4, 4), (vm("a", "n0", 4), vm("b", "n1", 4)))
    cons = [c.Ban(("a",), frozenset({"n0"})), c.Ban(("b",), frozenset({"n1"}))]
    plan = solve_and_check(snap, cons)
    assert plan.status == "infeasible"
    assert "a (n0 -> n1), b (n1 -> n0)" in plan.reason and "no pivot host" in plan.reason
    assert plan.placement == {"a": "n0", "b": "n1"}


def test_moves_wait_for_room_at_their_destination():
    # c must leave n1 before a can arrive there
    snap = Snapshot(cpu_hosts(4, 4, 4), (vm("a", "n0", 3), vm("c", "n1", 3)))
    cons = [c.Fence(("a",), frozenset({"n1"})), c.Fence(("c",), frozenset({"n2"}))]
    plan = solve_and_check(snap, cons)
    first, second = plan.actions
    assert (first.vm, second.vm) == ("c", "a") and second.start >= first.end


def test_per_host_migration_caps():
    vms = tuple(vm(f"v{i}", "n0", 1) for i in range(6))
    snap = Snapshot(cpu_hosts(6, 10), vms)
    cons = [c.Ban(tuple(v.key for v in vms), frozenset({"n0"}))]
    plan = solve_and_check(snap, cons)
    assert plan.migrations == 6
    for t in range(plan.duration):
        live = [a for a in plan.actions if a.start <= t < a.end]
        assert len(live) <= 2
    wide = PlacementConfig.btrplace().__class__(load="fill", max_migrations_out=6,
                                                max_migrations_in=6)  # fmt: skip
    assert solve_and_check(snap, cons, wide).duration == 1


def test_continuous_spread_never_overlaps_during_the_plan():
    snap = Snapshot(cpu_hosts(8, 8, 8), (vm("a", "n0", 1), vm("b", "n1", 1)))
    cons = [c.Spread(("a", "b"), continuous=True), c.Fence(("a",), frozenset({"n1"}))]
    plan = solve_and_check(snap, cons)
    assert plan.status == "solved"
    b_move = next(a for a in plan.actions if a.vm == "b")
    a_move = next(a for a in plan.actions if a.vm == "a")
    assert a_move.start >= b_move.end


def test_continuous_constraint_already_broken_cannot_be_repaired():
    snap = Snapshot(cpu_hosts(8, 8), (vm("a", "n0", 1), vm("b", "n0", 1)))
    plan = solve_and_check(snap, [c.Spread(("a", "b"), continuous=True)])
    assert plan.status == "infeasible" and "continuous spread is already violated" in plan.reason
    assert solve_and_check(snap, [c.Spread(("a", "b"), continuous=False)]).migrations == 1


def test_root_vm_never_moves_so_others_do():
    snap = Snapshot(cpu_hosts(4, 4), (vm("a", "n0", 3), vm("b", "n0", 3)))
    plan = solve_and_check(snap, [c.Root(("a",))])
    assert [(x.vm, x.dst) for x in plan.actions] == [("b", "n1")]
    plan = solve_and_check(snap, [c.Root(("a", "b"))])
    assert plan.status == "infeasible" and "n0 stays over its cpu capacity" in plan.reason


def test_running_and_ready_states():
    snap = Snapshot(cpu_hosts(4, 4), (vm("a", "n0", 3), Vm("r", state="ready", usage={"cpu": 2})))
    plan = solve_and_check(snap, [c.Running(("r",)), c.Ready(("a",))])
    kinds = sorted((x.kind, x.vm) for x in plan.actions)
    assert kinds == [("boot", "r"), ("shutdown", "a")]
    with pytest.raises(ValueError, match="both running and ready"):
        solve_repair(snap, [c.Running(("a",)), c.Ready(("a",))], BTR)


def test_preserve_grows_in_place_or_moves():
    snap = Snapshot(cpu_hosts(6, 6), (vm("a", "n0", 2), vm("b", "n0", 2)))
    plan = solve_and_check(snap, [c.Preserve(("a",), "cpu", 3)])
    assert [(x.kind, x.vm, x.amount) for x in plan.actions] == [("allocate", "a", 3)]
    plan = solve_and_check(snap, [c.Preserve(("a", "b"), "cpu", 4)])
    assert plan.migrations == 1


def test_gather_among_lonely_and_capacities_repair():
    hosts = cpu_hosts(10, 10, 10, 10)
    vms = tuple(vm(f"v{i}", f"n{i % 4}", 1) for i in range(8))
    cons = [
        c.Gather(("v0", "v1")),
        c.Among(("v2", "v3"), (frozenset({"n0", "n1"}), frozenset({"n2", "n3"}))),
        c.Lonely(("v4",)),
        c.RunningCapacity(frozenset({"n3"}), 1),
        c.ResourceCapacity(frozenset({"n1", "n2"}), "cpu", 3),
    ]
    plan = solve_and_check(Snapshot(hosts, vms), cons)
    assert plan.status == "solved" and 0 < plan.migrations <= 5


def test_overload_relief_uses_measured_demand():
    hosts = tuple(Host(f"h{i}", cpus=4, memory_mib=65536) for i in range(3))
    vms = (
        Vm("a", vcpus=4, host="h0", cpu_demand=3.0),
        Vm("b", vcpus=4, host="h0", cpu_demand=2.0),
        Vm("c", vcpus=4, host="h1", cpu_demand=0.5),
    )
    snap = Snapshot(hosts, vms)
    cfg = PlacementConfig()
    assert overloaded_hosts(snap, cfg) == ["h0"]
    assert solve_and_check(snap, [], cfg).actions == ()  # commitment alone is fine
    plan = solve_and_check(snap, [], cfg, relief=True)
    assert [(x.vm, x.src, x.dst) for x in plan.actions] == [("b", "h0", "h2")]
    assert solve_and_check(snap, [c.Ban(("b",), frozenset({"h2"}))], cfg, relief=True).actions[
        0
    ].dst in ("h1",)


def test_vm_on_offline_host_is_evacuated():
    hosts = (Host("n0", capacity={"cpu": 4}, online=False), Host("n1", capacity={"cpu": 4}))
    plan = solve_and_check(Snapshot(hosts, (vm("a", "n0", 1),)), [])
    assert [(x.vm, x.dst) for x in plan.actions] == [("a", "n1")]


def test_continuous_among_keeps_vms_in_their_group():
    hosts = cpu_hosts(4, 4, 8, 8)
    vms = (vm("a", "n0", 3), vm("b", "n0", 3), vm("c", "n1", 1))
    groups = (frozenset({"n0", "n1"}), frozenset({"n2", "n3"}))
    cont = [c.Among(("a", "b"), groups, continuous=True)]
    plan = solve_and_check(Snapshot(hosts, vms), cont)
    assert [(x.vm, x.dst) for x in plan.actions] == [("b", "n1")] or [
        (x.vm, x.dst) for x in plan.actions
    ] == [("a", "n1")]
    # discrete among may jump groups (the bigger hosts are less loaded)
    plan = solve_and_check(Snapshot(hosts, vms), [c.Among(("a", "b"), groups)])
    assert plan.status == "solved"


def test_blocked_plan_ends_even_when_a_detour_does_not_help():
    # found by hypothesis: pivots used to bounce a VM between hosts forever
    hosts = (Host("h0", cpus=1, memory_mib=1024), Host("h1", cpus=2, memory_mib=1024))
    hosts += tuple(Host(f"h{i}", cpus=1, memory_mib=1024) for i in (2, 3, 4))
    vms = (
        Vm("r0", vcpus=2, memory_mib=1024, host="h0"),
        Vm("r1", vcpus=0, memory_mib=512, host="h1"),
        Vm("r2", vcpus=0, memory_mib=256, host="h2"),
        Vm("r3", vcpus=0, memory_mib=256, host="h0"),
    )
    cfg = PlacementConfig(cpu_overcommit=1.0)
    plan = solve_and_check(Snapshot(hosts, vms), [c.RunningCapacity(frozenset({"h2"}), 0)], cfg)
    assert plan.status in ("solved", "infeasible")
    assert plan.status == "solved" and plan.migrations <= 5
