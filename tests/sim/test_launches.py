"""Launches in the simulated datacenter: the ``[[launches]]`` section, VM creation in the
world (demand, invariants, snapshots), the constraint check, and DVMS placing a burst of
vjobs with spread and coschedule-0 groups through ``PartitionCore.launch``."""

from __future__ import annotations

import pytest

from dvms.sim.run import run_scenario
from dvms.sim.scenario import ScenarioError, scenario_from_dict
from dvms.sim.world import World

BURST = {
    "at_s": 5.0,
    "entries": 4,
    "vjobs_per_entry": 3,
    "vms": 4,
    "spread": 3,
    "coschedule0": 1,
}


def scenario(hosts: int = 40, per_host: int = 0, **extra):
    data = {
        "duration_s": 15.0,
        "hosts": {"count": hosts},
        "vms": {"per_host": per_host},
        "launches": [BURST],
        # VMPlaceS's lease and minimum partition, as the shipped scenarios
        "scheduler": {"partition": {"lease_s": 4.5, "min_partition_size": 4}},
        **extra,
    }
    return scenario_from_dict(data)


def test_launch_section_is_parsed_and_checked() -> None:
    scn = scenario()
    (launch,) = scn.launches
    assert launch.hosts(40) == (0, 10, 20, 30)
    with pytest.raises(ScenarioError, match=r"launches\[0\]\.spread"):
        scenario_from_dict({"launches": [{"vms": 2, "spread": 2, "coschedule0": 1}]})
    with pytest.raises(ScenarioError, match=r"launches\[0\]\.entry_hosts"):
        scenario_from_dict({"hosts": {"count": 4}, "launches": [{"entry_hosts": [4]}]})
    with pytest.raises(ScenarioError, match=r"partition_crash\[0\]"):
        scenario_from_dict({"faults": {"partition_crash": [{"role": "x"}]}})


def test_created_vms_join_accounting_and_refuse_duplicates() -> None:
    w = World(scenario(hosts=3, per_host=1, launches=[]))
    results: list[tuple[bool, str]] = []
    done = lambda ok, why: results.append((ok, why))  # noqa: E731
    host = w.hosts[1].name
    w.create_vm("new", host, vcpus=2, memory_mib=2048, coschedule=0, create_s=1.0, on_done=done)
    w.create_vm("new", host, vcpus=1, memory_mib=1024, on_done=done)  # same name: refused
    w.create_vm("vm0000", host, vcpus=1, memory_mib=1024, on_done=done)  # exists: refused
    w.engine.run_until(0.5)
    assert [ok for ok, _ in results] == [False, False]
    assert w.incoming_mib[1] == 2048 and "new" not in w.vm_index  # reserved while booting
    w.engine.run_until(1.0)
    assert results[-1] == (True, "")
    v = w.vm_index["new"]
    assert w.vm_host[v] == 1 and w.incoming_mib[1] == 0
    assert w.check_invariants() == []
    snap = {vm.name: vm for vm in w.snapshot([1]).vms}
    assert snap["new"].vcpus == 2 and snap["new"].coschedule == 0
    w.set_vm_units(v, 800, 1.0)  # 8 vCPUs of demand on a 700-unit host
    assert w.overloaded(1)
    # a coschedule-0 VM with a neighbour breaks the rule: reported once, not every check
    assert w.check_constraints(1.0) == []  # no rule registered yet
    w._constraints.coschedule["new"] = 0
    assert len(w.check_constraints(1.0)) == 1 and len(w.check_constraints(2.0)) == 1
    assert w.metrics.constraint_violations == 1


def test_spread_check_sees_two_vms_on_one_host() -> None:
    w = World(scenario(hosts=3, launches=[]))
    done = lambda ok, why: None  # noqa: E731
    for name in ("a", "b"):
        w.create_vm(name, w.hosts[0].name, vcpus=1, memory_mib=1024, on_done=done)
    w.engine.run_until(0.0)
    w._constraints.spread.append(("a", "b"))
    assert w.check_constraints(0.0) == ["spread a..: 2 VMs on 1 hosts"]


def test_without_a_launch_handler_vjobs_count_as_not_placed() -> None:
    result, _ = run_scenario(scenario(), "static")
    assert result["launch_requests"] == 12 and result["launches_placed"] == 0
    assert result["launch_vms"] == 48 and result["launch_latency_p50_s"] is None


@pytest.mark.parametrize("scheduler", ["dvms", "dvms-ring", "dvms-random"])
def test_dvms_places_a_burst_with_constraints(scheduler: str) -> None:
    result, world = run_scenario(scenario(), scheduler)
    assert result["launch_requests"] == 12
    assert result["launches_placed"] == 12 and result["launch_vms_placed"] == 48
    assert result["vms_created"] == 48 and len(world.vm_names) == 48
    assert result["constraint_violations"] == 0 and result["invariant_violations"] == 0
    assert 0 < result["launch_latency_p50_s"] <= result["launch_latency_p99_s"] < 1.0
    # the world's own view: every coschedule-0 VM alone, every spread group on 3 hosts
    alone = [n for n in world.vm_names if n.endswith("-3")]
    assert len(alone) == 12
    for name in alone:
        assert len(world.host_vms[world.vm_host[world.vm_index[name]]]) == 1
    for tag in {n.rsplit("-", 1)[0] for n in world.vm_names}:
        hosts = {world.vm_host[world.vm_index[f"{tag}-{i}"]] for i in range(3)}
        assert len(hosts) == 3


def test_launched_vms_get_load_events() -> None:
    """An empty datacenter has no load until VMs are launched, then N_VM / 300 per s."""
    scn = scenario(duration_s=400.0, load={"mean_interval_per_vm_s": 30.0})
    result, _ = run_scenario(scn, "dvms")
    assert result["launches_placed"] == 12
    # 48 VMs from t ~ 5 s at 48 / 30 per s: ~630 events (Poisson sd ~25)
    assert 500 < result["load_events"] < 760
    assert result["invariant_violations"] == 0
