"""High availability in the simulator: the real HA core on every DVMS node."""

from __future__ import annotations

from dataclasses import replace

from dvms.sim.run import run_scenario
from dvms.sim.scenario import Scenario, load_scenario, scenario_from_dict

HA_KEYS = ("ha_vms", "ha_restarts", "ha_lost", "ha_double_run_s", "ha_fenced", "ha_restart_p99_s")


def _small(seed: int = 5) -> Scenario:
    return replace(load_scenario("ha-small"), seed=seed)


def test_failed_hosts_ha_vms_run_again_once_within_20_s() -> None:
    summary, _ = run_scenario(_small(), "dvms")
    assert summary["ha_vms"] == 60
    assert summary["host_failures"] == 3 + 1 + 5
    assert summary["ha_restarts"] >= 1
    assert summary["ha_fenced"] >= 1  # the frozen host's watchdog, the split-off owners
    assert summary["ha_lost"] == 0
    assert summary["ha_double_run_s"] == 0
    assert summary["ha_restart_p99_s"] <= 20
    assert summary["invariant_violations"] == 0


def test_same_seed_same_ha_result() -> None:
    a, _ = run_scenario(_small(7), "dvms")
    b, _ = run_scenario(_small(7), "dvms")
    assert {k: a[k] for k in HA_KEYS} == {k: b[k] for k in HA_KEYS}


def test_without_ha_no_ha_metrics() -> None:
    scn = scenario_from_dict({"duration_s": 20.0, "hosts": {"count": 8}, "vms": {"per_host": 2}})
    summary, _ = run_scenario(scn, "dvms")
    assert "ha_vms" not in summary


def test_shipped_ha_scenario_loads() -> None:
    scn = load_scenario("ha-crash")
    assert scn.hosts.count == 1000 and scn.ha.fraction == 0.1 and len(scn.faults.crash) == 20
