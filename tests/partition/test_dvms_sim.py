"""The DVMS scheduler on the simulated datacenter: it resolves overloads, keeps the
invariants, beats doing nothing, and is deterministic with the solver-time model."""

import dataclasses

import pytest

from dvms.sim.run import run_scenario
from dvms.sim.scenario import SCENARIO_DIR, load_scenario

SCENARIOS = SCENARIO_DIR
WALL = ("wall_s", "virtual_per_wall")


@pytest.fixture(scope="module")
def scn():
    return dataclasses.replace(load_scenario(SCENARIOS / "vmplaces-64.toml"), duration_s=1200.0)


@pytest.fixture(scope="module")
def runs(scn):
    return {name: run_scenario(scn, name)[0] for name in ("static", "dvms")}


def test_dvms_resolves_overloads_without_breaking_invariants(runs):
    r = runs["dvms"]
    assert r["invariant_violations"] == 0
    assert r["overload_events"] > 0
    assert r["overloads_resolved"] >= 0.8 * r["overload_events"]
    assert r["migrations"] > 0
    assert r["mean_partition_size"] >= 4  # the scenario's minimum partition size


def test_dvms_cuts_violation_time_against_doing_nothing(runs):
    assert runs["dvms"]["cumulated_violation_s"] < 0.5 * runs["static"]["cumulated_violation_s"]


@pytest.mark.parametrize("scheduler", ["dvms-ring", "dvms-random"])
def test_other_recruitment_strategies_work_too(scn, scheduler):
    r = run_scenario(scn, scheduler)[0]
    assert r["invariant_violations"] == 0 and r["overloads_resolved"] > 0


def test_same_seed_same_result(scn, runs):
    again = run_scenario(scn, "dvms")[0]
    strip = lambda d: {k: v for k, v in d.items() if k not in WALL}  # noqa: E731
    assert strip(again) == strip(runs["dvms"])


def test_dvms_runs_feed_the_vivaldi_map(scn, tmp_path):
    from dvms.sim.figures import vivaldi_map

    _, world = run_scenario(scn, "dvms")
    coords, parts = world.extras["vivaldi_map"]()
    assert len(coords) == len(world.hosts) and all(len(c) == 2 for c in coords)
    assert parts and all(0 <= h < len(world.hosts) for p in parts for h in p)
    vivaldi_map(coords, world.site_of, world.sites, parts, tmp_path / "map.png")
    assert (tmp_path / "map.png").stat().st_size > 1000
