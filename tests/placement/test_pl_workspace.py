"""The workspace's written-out copies of the model's rules (keys, resources, limits,
demands) agree with the model's own methods, for every kind of host and VM; a repair
leaves no reference cycle behind."""

import gc
import math
from dataclasses import replace

import pytest

from dvms.placement import Host, PlacementConfig, Snapshot, Vm, solve_repair
from dvms.placement import constraints as c
from dvms.placement.workspace import Workspace

HOSTS = (
    Host("plain", cpus=4, memory_mib=4096),
    Host("bare"),  # nothing described: no ceilings
    Host("nics", cpus=2, memory_mib=1024, nics=3),
    Host("over", cpus=8, memory_mib=8192, overcommit={"vcpus": 2.0, "memory_mib": 1.5}),
    Host("extra", cpus=1, memory_mib=512, capacity={"gpu": 2, "mem": 100}, overcommit={"mem": 1.5}),
)
VMS = (
    Vm("a", host="plain", cpu_demand=0.37),
    Vm("b", namespace="ns", host="bare", vcpus=3, memory_mib=700, nics=2),
    Vm("c", namespace="ns", host="extra", usage={"gpu": 1, "vcpus": 5}),
    Vm("d", state="ready", memory_mib=100, usage={"disk": 9}),
)
CONFIGS = (
    PlacementConfig(),
    PlacementConfig.btrplace(),
    PlacementConfig(overload_threshold=0.8, cpu_overcommit=None),
)


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("relief", [False, True])
def test_written_out_rules_agree_with_the_model(config, relief):
    snap = Snapshot(HOSTS, VMS)
    ws = Workspace(snap, [], config, relief=relief)
    assert ws.resources == snap.resources(relief=relief)
    assert ws.vkeys == [vm.key for vm in VMS]
    for h, host in enumerate(HOSTS):
        want = [host.limit(r, config) for r in ws.resources]
        assert ws.limits[h] == want, host.name
        assert [type(x) for x in ws.limits[h]] == [type(x) for x in want], host.name
    for v, vm in enumerate(VMS):
        assert ws.cur[v] == [vm.demand(r) for r in ws.resources], vm.name
    assert any(math.isinf(x) for row in ws.limits for x in row)


def test_launched_vms_count_in_resources_and_keys():
    snap = Snapshot(HOSTS[:1], ())
    extra = replace(VMS[3], name="e", usage={"fpga": 1})
    ws = Workspace(snap, [], PlacementConfig(), launch=[extra])
    assert "fpga" in ws.resources
    assert ws.vkeys == ["e"]


def _overloaded():
    hosts = tuple(Host(f"h{i}", cpus=4, memory_mib=16384) for i in range(4))
    demands = {0: [0.9, 0.9, 0.9, 0.9], 1: [0.5, 0.5], 2: [0.2], 3: [0.4, 0.3]}
    vms = tuple(
        Vm(f"v{h}-{k}", memory_mib=1024, host=f"h{h}", cpu_demand=d)
        for h, ds in demands.items()
        for k, d in enumerate(ds)
    )
    spread = c.Spread(("v0-0", "v1-0", "v3-0"), continuous=True)
    ban = c.Ban(("v0-1",), frozenset({"h0"}))
    return Snapshot(hosts, vms), [spread, ban]


@pytest.mark.parametrize("evals", [0, 50])
def test_a_repair_leaves_no_reference_cycle(evals):
    """A repair frees its workspace by reference counting alone: left in a cycle, it
    waits for the collector, which then walks every list of it."""
    snap, cons = _overloaded()
    config = PlacementConfig(overload_threshold=0.8, local_search_evals=evals)
    was = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        plan = solve_repair(snap, cons, config, relief=True)
        assert plan.status == "solved" and plan.actions
        assert gc.collect() == 0
    finally:
        if was:
            gc.enable()
