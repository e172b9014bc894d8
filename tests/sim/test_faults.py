"""Fault runs of the DVMS scheduler on a small smoke scenario: message loss, a leader
crash while it solves or applies a plan, a member crash while the leader collects
states or acts. Each keeps every invariant, and every overload event ends resolved or
failed-and-released (none left in flight for long, no partition left behind)."""

from __future__ import annotations

import pytest

from dvms.sim.run import run_scenario
from dvms.sim.scenario import scenario_from_dict

SMALL_SMOKE = {
    "name": "smoke-small",
    "seed": 23,
    "duration_s": 120.0,
    "hosts": {"count": 64},
    "vms": {"per_host": 11},
    # 660 of 700 units from the start and load events 5x as often as VMPlaceS's:
    # overloads all along the run, some unsolvable
    "load": {"initial": "mu", "mean_interval_per_vm_s": 60.0},
    "scheduler": {"partition": {"lease_s": 4.5, "min_partition_size": 4}},
}

FAULTS = {
    "none": {},
    "loss10": {"message_loss": 0.1},
    "leader-acting": {"partition_crash": [{"role": "leader", "phase": "acting", "after_s": 20}]},
    "leader-solving": {"partition_crash": [{"role": "leader", "phase": "solving", "after_s": 20}]},
    "member-collecting": {
        "partition_crash": [{"role": "member", "phase": "collecting", "after_s": 20}]
    },
    "member-acting": {"partition_crash": [{"role": "member", "phase": "acting", "after_s": 20}]},
}


def check_run(r: dict) -> None:
    assert r["invariant_violations"] == 0, r["invariant_examples"]
    assert r["overload_events"] > 0 and r["overloads_resolved"] > 0
    ended = r["overloads_resolved"] + r["overloads_failed"]
    assert (
        ended + r["overloads_in_flight"] + r["overloads_lost_with_origin"] == (r["overload_events"])
    )
    assert r["overloads_open"] == 0  # nothing in flight for more than 30 s
    assert r["partitions_open"] == 0


@pytest.mark.parametrize("fault", list(FAULTS))
def test_small_smoke_under_faults(fault: str) -> None:
    scn = scenario_from_dict({**SMALL_SMOKE, "faults": FAULTS[fault]})
    r, world = run_scenario(scn, "dvms")
    check_run(r)
    crashes = FAULTS[fault].get("partition_crash", [])
    assert len(r["partition_crashes"]) == len(crashes), r["partition_crashes"]
    assert sum(not up for up in world.host_up) == len(crashes)
