"""The independent checker catches what it must: hand-made bad placements and plans."""

import pytest

from dvms.placement import Action, Host, PlacementConfig, Snapshot, Vm, check_placement, check_plan
from dvms.placement import constraints as c

CFG = PlacementConfig.btrplace()
HOSTS = tuple(Host(f"n{i}", capacity={"cpu": 4}) for i in range(3))


def vm(name, host, cpu=1, **kw):
    return Vm(name, vcpus=0, memory_mib=0, host=host, usage={"cpu": cpu}, **kw)


SNAP = Snapshot(HOSTS, (vm("a", "n0"), vm("b", "n1"), vm("c", "n2")))


@pytest.mark.parametrize(
    ("constraint", "placement", "needle"),
    [
        (c.Ban(("a",), frozenset({"n1"})), {"a": "n1"}, "ban a on n1"),
        (c.Fence(("a",), frozenset({"n2"})), {"a": "n1"}, "fence a on n1"),
        (c.Spread(("a", "b")), {"a": "n1"}, "spread a and b share n1"),
        (c.Gather(("a", "c")), {}, "gather a, c are on n0, n2"),
        (c.Colocate("a", "b"), {}, "colocate a, b are on n0, n1"),
        (c.Among(("a", "b"), (frozenset({"n0"}), frozenset({"n1"}))), {}, "among"),
        (c.Lonely(("a",)), {"b": "n0"}, "lonely n0 mixes"),
        (c.RunningCapacity(frozenset({"n0", "n1"}), 1), {}, "runningCapacity 2 > 1"),
        (c.ResourceCapacity(frozenset({"n2"}), "cpu", 0), {}, "resourceCapacity 1 > 0"),
        (c.Root(("a",)), {"a": "n1"}, "root a moved"),
        (c.Schedule("a", "n2"), {}, "schedule a is not on n2"),
        (c.Coschedule(("a",), 0), {"b": "n0"}, "coschedule requirement of 1"),
        (c.Ready(("a",)), {}, "ready a does not end ready"),
    ],
)
def test_check_placement_finds_each_violation(constraint, placement, needle):
    final = {**SNAP.placement(), **placement}
    problems = check_placement(SNAP, [constraint], final, CFG)
    assert any(needle in p for p in problems), problems
    assert check_placement(SNAP, [], SNAP.placement(), CFG) == []


def test_check_placement_capacity_and_lost_vms():
    final = {"a": "n0", "b": "n0", "c": "n0"}
    heavy = Snapshot(HOSTS, (vm("a", "n0", 2), vm("b", "n1", 2), vm("c", "n2", 2)))
    assert "end: cpu on n0 is 6 > 4" in check_placement(heavy, [], final, CFG)
    problems = check_placement(SNAP, [], {"a": "n0", "b": "n1"}, CFG)
    assert problems == ["end: c changed state without a running/ready constraint"]
    assert check_placement(SNAP, [], {"a": "zz"}, CFG) == ["unknown host 'zz'"]


def mig(name, src, dst, start=0, end=1):
    return Action("migrate", name, start, end, src, dst)


def test_plan_well_formedness():
    assert any("but it is on n0" in p for p in check_plan(SNAP, [], [mig("a", "n1", "n2")], CFG))
    twice = [mig("a", "n0", "n1", 0, 2), mig("a", "n1", "n2", 1, 3)]
    assert any("two actions at once" in p for p in check_plan(SNAP, [], twice, CFG))
    boot = [Action("boot", "a", 0, 1, dst="n1")]
    assert any("boot of running a" in p for p in check_plan(SNAP, [], boot, CFG))


def test_plan_capacity_counts_both_hosts_during_a_migration():
    snap = Snapshot(HOSTS, (vm("a", "n0", 3), vm("b", "n1", 3)))
    together = [mig("a", "n0", "n1"), mig("b", "n1", "n0")]
    problems = check_plan(snap, [], together, CFG)
    assert "t=0: cpu on n1 is 6 > 4" in problems
    ordered = [mig("b", "n1", "n2", 0, 1), mig("a", "n0", "n1", 1, 2)]
    assert check_plan(snap, [], ordered, CFG) == []


def test_plan_migration_caps():
    snap = Snapshot(HOSTS, tuple(vm(f"v{i}", "n0") for i in range(3)))
    three = [mig(f"v{i}", "n0", "n1") for i in range(3)]
    assert any("3 migrations out" in p for p in check_plan(snap, [], three, CFG))


def test_plan_continuous_spread_and_root():
    cons = [c.Spread(("a", "b"), continuous=True)]
    overlap = [mig("b", "n1", "n2", 0, 2), mig("a", "n0", "n1", 1, 3)]
    assert any("t=1: spread" in p for p in check_plan(SNAP, cons, overlap, CFG))
    after = [mig("b", "n1", "n2", 0, 2), mig("a", "n0", "n1", 2, 3)]
    assert check_plan(SNAP, cons, after, CFG) == []
    assert any("root a moved" in p for p in check_plan(SNAP, [c.Root(("a",))], after, CFG))


def test_plan_preserve_needs_an_allocation():
    cons = [c.Preserve(("a",), "cpu", 3)]
    assert any("preserve a has 1 cpu < 3" in p for p in check_plan(SNAP, cons, [], CFG))
    grow = [Action("allocate", "a", 0, 1, dst="n0", resource="cpu", amount=3)]
    assert check_plan(SNAP, cons, grow, CFG) == []
    moved = [mig("a", "n0", "n1")]  # a migration grants the preserved amount on arrival
    assert check_plan(SNAP, cons, moved, CFG) == []
