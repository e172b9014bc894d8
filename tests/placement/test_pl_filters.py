"""Table tests: each filter on a small workspace, model validation, load keys, the
spec -> constraint builder and its errors."""

import math

import pytest

from dvms.placement import Host, PlacementConfig, PlacementError, Snapshot, Vm, build_constraints
from dvms.placement import constraints as c
from dvms.placement.load import HostLoad, host_loads, rank_hosts
from dvms.placement.spec import ConstraintSpec
from dvms.placement.workspace import Workspace

HOSTS = tuple(Host(f"h{i}", cpus=4, memory_mib=4096) for i in range(4))
# running: a on h0, b on h1; x is the VM being judged
RUNNING = (Vm("a", memory_mib=1024, host="h0"), Vm("b", memory_mib=1024, host="h1"))
X = Vm("x", state="ready", memory_mib=1024)


def verdicts(constraint, vm=X, running=RUNNING):
    ws = Workspace(Snapshot(HOSTS, running), [constraint] if constraint else [],
                   PlacementConfig(), launch=[vm])  # fmt: skip
    for v, one in enumerate(ws.vms):
        if one.host:
            ws.place(v, ws.h_index[one.host])
    v = ws.v_index[vm.key]
    out = {}
    for h, host in enumerate(ws.hosts):
        failure = ws.first_failure(v, h)
        out[host.name] = failure[0] if failure else "ok"
    return out


@pytest.mark.parametrize(
    ("constraint", "expected"),
    [
        (None, ["ok", "ok", "ok", "ok"]),
        (c.Ban(("x",), frozenset({"h0", "h2"})), ["ban", "ok", "ban", "ok"]),
        (c.Fence(("x",), frozenset({"h3"})), ["fence", "fence", "fence", "ok"]),
        (c.Schedule("x", "h1"), ["schedule", "ok", "schedule", "schedule"]),
        (c.Spread(("x", "a", "b")), ["spread", "spread", "ok", "ok"]),
        (c.Gather(("x", "b")), ["gather", "ok", "gather", "gather"]),
        (c.Colocate("x", "a"), ["ok", "colocate", "colocate", "colocate"]),
        (
            c.Among(("x", "a"), (frozenset({"h0", "h1"}), frozenset({"h2", "h3"}))),
            ["ok", "ok", "among", "among"],
        ),
        (c.Among(("x",), (frozenset({"h1"}),)), ["among", "ok", "among", "among"]),
        (c.Lonely(("x",)), ["lonely", "lonely", "ok", "ok"]),
        (c.Lonely(("a",)), ["lonely", "ok", "ok", "ok"]),
        (
            c.RunningCapacity(frozenset({"h0", "h2"}), 1),
            ["runningCapacity", "ok", "runningCapacity", "ok"],
        ),
        (
            c.ResourceCapacity(frozenset({"h1"}), "memory_mib", 1500),
            ["ok", "resourceCapacity", "ok", "ok"],
        ),
        (c.Coschedule(("x",), 0), ["coschedule", "coschedule", "ok", "ok"]),
    ],
)
def test_filter_table(constraint, expected):
    assert list(verdicts(constraint).values()) == expected


def test_capacity_and_offline_and_coschedule_of_existing_vms():
    running = (
        Vm("a", memory_mib=3500, host="h0"),
        Vm("b", vcpus=64, host="h1"),
        Vm("c", coschedule=0, host="h2"),
    )
    assert verdicts(None, running=running) == {
        "h0": "memory", "h1": "vcpus", "h2": "coschedule", "h3": "ok"
    }  # fmt: skip
    ws = Workspace(Snapshot((Host("h0", online=False),)), [], PlacementConfig(), launch=[X])
    assert ws.first_failure(0, 0) == ("offline", "host is offline")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cpus": -1}, "cpus must be a non-negative integer"),
        ({"memory_mib": 1.5}, "memory_mib must be a non-negative integer"),
        ({"capacity": {"gpu": -2}}, "capacity 'gpu' must be a non-negative integer"),
        ({"overcommit": {"vcpus": 0.5}}, "overcommit ratio for 'vcpus' must be >= 1.0"),
    ],
)
def test_bad_hosts(kwargs, message):
    with pytest.raises(PlacementError, match=message):
        Host("h", **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"vcpus": -1, "host": "h"}, "vcpus must be a non-negative integer"),
        ({"memory_mib": -5, "host": "h"}, "memory_mib must be"),
        ({"state": "ready", "host": "h"}, "a ready VM has no host"),
        ({"state": "running"}, "a running VM needs a host"),
        ({"state": "paused", "host": "h"}, "unknown state 'paused'"),
        ({"coschedule": -2, "host": "h"}, "coschedule must be -1 or >= 0"),
    ],
)
def test_bad_vms(kwargs, message):
    with pytest.raises(PlacementError, match=message):
        Vm("v", **kwargs)


def test_snapshot_refuses_duplicates_and_unknown_hosts():
    with pytest.raises(PlacementError, match="duplicate host 'h0'"):
        Snapshot((Host("h0"), Host("h0")))
    with pytest.raises(PlacementError, match="vm v is on unknown host 'h9'"):
        Snapshot((Host("h0"),), (Vm("v", host="h9"),))
    with pytest.raises(PlacementError, match="duplicate vm 'ns/v'"):
        Snapshot((Host("h0"),), (Vm("v", "ns", host="h0"), Vm("v", "ns", host="h0")))


def test_host_limits_and_overcommit():
    cfg = PlacementConfig()
    h = Host("h", cpus=4, memory_mib=1000, nics=3, capacity={"gpu": 2},
             overcommit={"memory_mib": 1.5, "gpu": 2.0})  # fmt: skip
    assert h.limit("vcpus", cfg) == 64  # 16 x 4
    assert h.limit("memory_mib", cfg) == 1500
    assert h.limit("nics", cfg) == 3
    assert h.limit("gpu", cfg) == 4
    assert h.limit("cpu_demand", cfg) == 4000
    assert h.limit("other", cfg) == math.inf
    assert Host("bare").limit("vcpus", cfg) == math.inf
    assert h.limit("vcpus", PlacementConfig.minimega()) == math.inf


@pytest.mark.parametrize(
    ("load", "order"),
    [
        ("cpucommit", ["c", "a", "b", "full"]),  # 0.25(a) 0.5(b) 0.0(c), full last
        ("memcommit", ["b", "c", "a", "full"]),
        ("netcommit", ["a", "b", "c", "full"]),  # raw NIC counts, not normalised
    ],
)
def test_rank_hosts_minimega_keys(load, order):
    stats = [
        HostLoad("a", cpus=8, memory_mib=1000, vms=1, cpu_commit=2, mem_commit=900, net_commit=1),
        HostLoad("b", cpus=4, memory_mib=4000, vms=1, cpu_commit=2, mem_commit=100, net_commit=5),
        HostLoad("c", cpus=2, memory_mib=1000, vms=1, cpu_commit=0, mem_commit=500, net_commit=9),
        HostLoad("full", cpus=64, memory_mib=10**6, vms=1, limit=1),
    ]
    assert rank_hosts(stats, load) == order


def test_ties_broken_by_name_and_stats_from_snapshot():
    stats = [HostLoad(n, cpus=4, memory_mib=1) for n in ("n3", "n1", "n2")]
    assert rank_hosts(stats) == ["n1", "n2", "n3"]
    snap = Snapshot(HOSTS[:2], (Vm("a", vcpus=2, nics=2, coschedule=3, host="h0"),
                                Vm("b", vcpus=1, coschedule=1, host="h0")))  # fmt: skip
    h0 = host_loads(snap)[0]
    assert (h0.vms, h0.cpu_commit, h0.net_commit, h0.limit, h0.full) == (2, 3, 2, 2, True)


KEYS = ("a", "b", "p/x")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (ConstraintSpec("sprout", vms=("a",)), "unknown constraint kind 'sprout'"),
        (ConstraintSpec("ban", vms=("zz",), hosts=("h0",)), "ban: unknown VM 'zz'"),
        (ConstraintSpec("ban", vms=("a",), hosts=("h9",)), "ban: unknown host 'h9'"),
        (ConstraintSpec("fence", vms=("a",)), "fence: needs at least one host"),
        (ConstraintSpec("preserve", vms=("a",), amount=3), "preserve: needs a resource"),
        (ConstraintSpec("runningcapacity", hosts=("h0",)), "needs an amount"),
        (
            ConstraintSpec("among", vms=("a",), groups=(("h0", "h1"), ("h1",))),
            "host groups overlap on 'h1'",
        ),
        (ConstraintSpec("lonely", vms=("a",), soft=True), "only spread, gather and fence"),
        (
            ConstraintSpec("ban", vms=("a",), hosts=("h9",), where=(3, 7)),
            r"ban \(line 3, column 7\)",
        ),
    ],
)
def test_build_errors_name_the_problem(spec, message):
    with pytest.raises(PlacementError, match=message):
        build_constraints([spec], vm_keys=KEYS, hosts=("h0", "h1"))


def test_build_every_kind_and_namespaces():
    specs = [
        ConstraintSpec("ban", vms=("a", "x"), hosts=("h0",), continuous=False),
        ConstraintSpec("spread", vms=("a", "b")),
        ConstraintSpec("gather", vms=("a", "b"), soft=True, weight=2.0),
        ConstraintSpec("Among", vms=("a",), groups=(("h0",), ("h1",))),
        ConstraintSpec("resourcecapacity", hosts=("h0",), resource="gpu", amount=1),
        ConstraintSpec("root", vms=("b",)),
        ConstraintSpec("coschedule", vms=("a",), amount=2),
    ]
    built = build_constraints(specs, vm_keys=KEYS, hosts=("h0", "h1"), namespace="p")
    assert built[0] == c.Ban(("a", "p/x"), frozenset({"h0"}), False)
    assert built[1] == c.Spread(("a", "b"), True)
    assert built[2] == c.Prefer("gather", ("a", "b"), weight=2.0)
    assert [k.kind for k in built[3:]] == ["among", "resourceCapacity", "root", "coschedule"]
