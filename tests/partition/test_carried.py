"""Constraints of running VMs (``dvms.partition.carried``): a launched VM keeps the
constraints of its vjob that name it, its host reports them, and a leader's overload
repair honours them, so relieving one host never breaks a running vjob's constraint.

The repair setup: h0 = {a: 2.0, x: 2.5 CPUs} is overloaded (4 CPUs), h1 = {b: 0.5},
h2 = {z: 1.0}; ring recruitment builds {h1, h0} first. With nothing carried the solver
moves ``a`` onto h1 (the control row); each constraint ``a`` carries forbids that, and
the repair moves ``x`` instead."""

from __future__ import annotations

from dataclasses import replace

import pytest

from dvms.partition.carried import carried_by, in_partition, running_constraints
from dvms.partition.config import PartitionConfig
from dvms.partition.messages import LaunchVm, WireConstraint
from dvms.partition.solve import snapshot_of
from dvms.placement import check_placement
from dvms.placement.spec import ConstraintSpec
from dvms.testing.cluster import FakeCluster, FakeVm

RING = replace(PartitionConfig(), recruitment="ring", min_partition_size=2)
W = WireConstraint

REPAIR_ROWS = {
    "nothing carried (control)": ((), "h1"),
    "spread(a, b)": ((W("spread", ("a", "b")),), "h0"),
    "ban(a, h1)": ((W("ban", ("a",), ("h1",)),), "h0"),
    "fence(a, h0 h2)": ((W("fence", ("a",), ("h0", "h2")),), "h0"),
    "gather(a, z), z outside": ((W("gather", ("a", "z")),), "h0"),
    "colocate(a -> z), z outside": ((W("colocate", ("a", "z")),), "h0"),
    "among(a, z), z outside": ((W("among", ("a", "z"), groups=(("h0", "h2"), ("h1",))),), "h0"),
    "lonely(a, x)": ((W("lonely", ("a", "x")),), None),  # may go where b left
    "root(a)": ((W("root", ("a",)),), "h0"),
}


def repair_cluster(carried: tuple[WireConstraint, ...]) -> FakeCluster:
    c = FakeCluster(3, seed=1, config=RING, ids=range(1, 4), monitor=False)
    placement = {
        0: [FakeVm("a", demand=2.0, constraints=carried), FakeVm("x", demand=2.5)],
        1: [FakeVm("b", demand=0.5, constraints=carried)],
        2: [FakeVm("z", demand=1.0, constraints=carried)],
    }
    for pos, vms in placement.items():
        for vm in vms:
            c.hosts[pos].vms[vm.key] = vm
            c.expected_vms.add(vm.key)
            c.initial_vms.add(vm.key)
    return c


def violations(c: FakeCluster) -> list[str]:
    """What the carried constraints say about the whole cluster (capacity aside)."""
    states = tuple(h.state() for h in c.hosts)
    snap = snapshot_of(states)
    where = {vm.key: vm.host for vm in snap.vms}
    carriers = [(v.namespace, v.name, v.constraints) for s in states for v in s.vms]
    built, problems = running_constraints(carriers, where, [h.name for h in snap.hosts])
    assert problems == []
    baseline = set(check_placement(snap, (), where))
    return sorted(set(check_placement(snap, built, where)) - baseline)


@pytest.mark.parametrize("row", list(REPAIR_ROWS))
def test_an_overload_repair_keeps_running_vms_constraints(row):
    carried, a_ends_on = REPAIR_ROWS[row]
    c = repair_cluster(carried)
    before = violations(c)  # gather/colocate/among with z: broken from the start
    c.poke(0)
    c.run(5.0)
    (done,) = c.done.values()
    assert done.ok, done.reason
    if a_ends_on is not None:
        assert [c.hosts[p].name for p in c.host_of("a")] == [a_ends_on]
    assert not any(h.overloaded() for h in c.hosts)
    assert set(violations(c)) <= set(before)  # the repair broke nothing
    assert c.vm_problems() == [] and c.violations == []


def test_a_constraint_already_broken_is_not_enforced():
    """lonely(a) while x shares a's host: the engine could only preserve it, so it
    would fail every event near ``a``; it is left out and the overload is relieved."""
    c = repair_cluster((W("lonely", ("a",)),))
    c.poke(0)
    c.run(5.0)
    (done,) = c.done.values()
    assert done.ok, done.reason


def test_launched_vms_carry_their_vjob_constraints():
    c = FakeCluster(4, seed=2, rtt_s=50e-6, solve_delay=0.005, driver_delay=0.1)
    vms = [LaunchVm("w0", "shop", 1, 512), LaunchVm("w1", "shop", 1, 512, colocate="w0")]
    spread = W("spread", ("w0", "db"))
    vms.append(LaunchVm("db", "shop", 1, 512))
    eid = c.launch(0, vms, [spread, W("runningcapacity", hosts=("h1",), amount=9)])
    c.run(3.0)
    assert c.done[(0, eid)].ok, c.done[(0, eid)].reason
    carried = {k: vm.constraints for h in c.hosts for k, vm in h.vms.items()}
    assert carried["shop/w0"] == (spread,)
    assert carried["shop/w1"] == (W("gather", ("w1", "w0")),)
    assert carried["shop/db"] == (spread,)


def test_carried_by_keeps_fences_not_schedule_and_skips_host_constraints():
    vm = LaunchVm("a", "", 1, 512, schedule="h3")  # where to launch it, not a pin
    cons = [
        W("spread", ("a", "b")),
        W("spread", ("b", "c")),
        W("resourcecapacity", ("a",)),
        W("fence", ("a",), ("h3", "h4")),
    ]
    assert carried_by(vm, cons) == (W("spread", ("a", "b")), W("fence", ("a",), ("h3", "h4")))


WHERE = {"ns/a": "h0", "ns/b": "h1"}  # ns/c runs outside the partition
HOSTS = ("h0", "h1")
S = ConstraintSpec
IN_PARTITION = [
    (S("spread", ("a", "b", "c")), [S("spread", ("a", "b"))]),
    (S("lonely", ("c",)), []),
    (S("ban", ("a", "c"), ("h1", "h9")), [S("ban", ("a",), ("h1",))]),
    (S("ban", ("a",), ("h9",)), []),
    (S("fence", ("a",), ("h1", "h9")), [S("fence", ("a",), ("h1",))]),
    (S("fence", ("a",), ("h9",)), [S("fence", ("a",), ("h0",))]),
    (S("gather", ("a", "b")), [S("gather", ("a", "b"))]),
    (S("gather", ("a", "c")), [S("fence", ("a",), ("h0",))]),
    (S("colocate", ("b", "c")), [S("fence", ("b",), ("h1",))]),
    (
        S("among", ("a", "b"), groups=(("h0", "h9"), ("h1",))),
        [S("among", ("a", "b"), groups=(("h0",), ("h1",)))],
    ),
    (S("among", ("a", "c"), groups=(("h0", "h1"), ("h9",))), [S("fence", ("a",), ("h0", "h1"))]),
    (S("among", ("a", "c"), groups=(("h9",),)), [S("fence", ("a",), ("h0",))]),
    (S("runningcapacity", ("a",), ("h0",), amount=1), []),
]


@pytest.mark.parametrize("spec,expected", IN_PARTITION, ids=[s.kind for s, _ in IN_PARTITION])
def test_in_partition(spec, expected):
    assert in_partition(spec, "ns", WHERE, HOSTS) == expected


def test_a_namespaced_vjobs_qualified_names_are_carried_and_kept() -> None:
    """``dvms submit`` of a vjob in namespace ``lab`` names its VMs ``lab/g1``...: each VM
    still carries the constraints naming it, and a partition builds them."""
    spread = W("spread", ("lab/g1", "lab/g2", "lab/g3"))
    g2 = LaunchVm("g2", "lab", 1, 96)
    assert carried_by(g2, [spread, W("spread", ("lab/g4", "lab/g5"))]) == (spread,)
    where = {"lab/g1": "h1", "lab/g2": "h2", "lab/g3": "h3"}
    built, problems = running_constraints([("lab", "g2", (spread,))], where, ["h1", "h2", "h3"])
    assert problems == [] and len(built) == 1
    # g2 moved onto g3's host breaks it
    from dvms.placement import Host, Snapshot, Vm

    hosts = tuple(Host(h, cpus=2, memory_mib=1024) for h in ("h1", "h2", "h3"))
    vms = tuple(Vm(k.split("/")[1], "lab", 1, 96, host=h) for k, h in where.items())
    moved = {**where, "lab/g2": "h3"}
    assert check_placement(Snapshot(hosts, vms), built, moved)
