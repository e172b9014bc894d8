"""Fault campaigns: seeded random faults, a short campaign that keeps every invariant,
and campaigns whose runs break an invariant on purpose, to show the checks can fail."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from dvms.partition.membership import Membership
from dvms.sim.campaign import Run, run_all
from dvms.sim.faultcampaign import (
    INVARIANTS,
    FaultRecord,
    plan_fault_runs,
    replay_command,
    run_faults_one,
    summarize,
)
from dvms.sim.faultgen import random_faults, with_random_faults
from dvms.sim.scenario import RandomFaults, ScenarioError, load_scenario, scenario_from_dict
from dvms.sim.schedulers import SCHEDULERS, DvmsScheduler, register_scheduler
from dvms.sim.world import World

ROOT = Path(__file__).resolve().parents[2]

RATES = {
    "crashes_per_run": 2.0,
    "freezes_per_run": 2.0,
    "loss_bursts_per_run": 2.0,
    "dup_reorders_per_run": 2.0,
    "splits_per_run": 1.0,
    "clock_hosts": 0.2,
}

#: The campaigns ``make test`` runs: 24 hosts, 45 virtual s, overloads all along.
TINY = {
    "name": "faults-tiny",
    "seed": 1,
    "duration_s": 45.0,
    "hosts": {"count": 24},
    "vms": {"per_host": 11},
    "load": {"initial": "mu", "mean_interval_per_vm_s": 60.0},
    "scheduler": {"partition": {"lease_s": 4.5, "min_partition_size": 4}},
}


def test_random_faults_are_seeded() -> None:
    rates = RandomFaults(**RATES)  # type: ignore[arg-type]
    a = random_faults(rates, 50, 600.0, 7)
    assert a == random_faults(rates, 50, 600.0, 7)
    assert a != random_faults(rates, 50, 600.0, 8)
    runs = [random_faults(rates, 50, 600.0, s) for s in range(40)]
    for kind in ("crash", "freeze", "loss_burst", "dup_reorder", "split"):
        assert sum(r.counts()[kind] for r in runs) > 0, kind
    assert all(len(r.clock) == 10 for r in runs)
    for r in runs:
        windows: dict[int, list[tuple[float, float]]] = {}
        for c in r.crash:
            windows.setdefault(c.host, []).append((c.at_s, c.recover_at_s or 600.0))
        for f in r.freeze:
            windows.setdefault(f.host, []).append((f.at_s, f.resume_at_s or 600.0))
        for spans in windows.values():  # one crash or freeze at a time per host
            spans.sort()
            assert all(b[0] > a[1] for a, b in itertools.pairwise(spans))


def test_with_random_faults_adds_valid_entries_once() -> None:
    scn = scenario_from_dict(
        {**TINY, "faults": {"clock": [{"host": 0, "offset_s": 5.0}], "random": RATES}}
    )
    drawn = with_random_faults(scn)
    assert not drawn.faults.random.enabled()
    assert drawn.faults.clock[0].offset_s == 5.0  # the scenario's own entry stays
    assert [c.host for c in drawn.faults.clock].count(0) == 1
    assert with_random_faults(drawn) is drawn
    assert replace(drawn) == drawn  # a valid scenario (replace re-checks every entry)


@pytest.mark.parametrize(
    ("random", "message"),
    [
        ({"freeze_s": [5.0]}, "faults.random.freeze_s: expected [low, high]"),
        ({"split_hosts": [0.5, 1.5]}, "faults.random.split_hosts: expected [low, high] within"),
        ({"crashes_per_run": -1}, "faults.random.crashes_per_run: must be a finite number"),
        ({"clock_hosts": 2}, "faults.random.clock_hosts: must be in [0, 1]"),
    ],
)
def test_random_rates_are_checked(random: dict, message: str) -> None:
    with pytest.raises(ScenarioError, match=message.replace("[", r"\[")):
        scenario_from_dict({**TINY, "faults": {"random": random}})


def test_shipped_campaign_scenarios() -> None:
    big = load_scenario("faults-200")
    assert big.hosts.count == 200 and big.duration_s == 600
    assert big.faults.random.enabled()
    assert load_scenario("faults-small").faults.random.enabled()


def test_short_campaign_keeps_every_invariant() -> None:
    """Four seeds of crashes with restarts, duplication/reordering and clock offsets on
    24 hosts: 0 violations of every invariant."""
    rates = {k: RATES[k] for k in ("crashes_per_run", "dup_reorders_per_run", "clock_hosts")}
    base = scenario_from_dict({**TINY, "faults": {"random": rates}})
    records = run_all(plan_fault_runs(base, "dvms", 4, 1), task=run_faults_one)
    out = summarize(records, scenario="tiny")
    assert out["runs"] == 4 and out["seeds"] == [1, 4]
    assert out["faults"]["crash"] > 0 and out["faults"]["clock"] > 0
    assert out["overload_events"] > 0 and out["migrations"] > 0
    assert out["violations"] == dict.fromkeys(INVARIANTS, 0), out["worst"]
    assert out["runs_failed"] == 0


def test_short_campaign_of_every_kind_keeps_every_invariant() -> None:
    """Every fault kind, freezes, loss bursts and splits included: 0 violations of every
    invariant. (Before leaders held a lease on their members, a leader cut off from a
    member went on counting on it after it had joined another partition: one_partition.)"""
    rates = {**RATES, "splits_per_run": 3.0}
    base = scenario_from_dict({**TINY, "faults": {"random": rates}})
    records = run_all(plan_fault_runs(base, "dvms", 3, 11), task=run_faults_one)
    out = summarize(records, scenario="tiny")
    assert all(out["faults"][k] > 0 for k in ("freeze", "loss_burst", "split")), out["faults"]
    assert out["violations"] == dict.fromkeys(INVARIANTS, 0), out["worst"]
    assert out["runs_failed"] == 0


class _Teleport(DvmsScheduler):
    """DVMS plus a bug: at 20 s one VM appears on a second host too."""

    def attach(self, world: World) -> None:
        super().attach(world)

        def copy() -> None:
            vms = world.cluster.vms
            vms[world.hosts[1].name]["vm0000"] = vms[world.hosts[0].name]["vm0000"]

        world.engine.at(20.0, copy)


def _never_freed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Members that ignore Dissolve and their lease: never out of a partition."""
    monkeypatch.setattr(Membership, "_on_dissolve", lambda self, *a: None)
    monkeypatch.setattr(Membership, "_check_lease", lambda self, *a: None)


@pytest.mark.parametrize(
    ("bug", "invariant"), [("teleport", "vm_one_host"), ("never-freed", "lease_freed")]
)
def test_a_broken_invariant_is_reported(
    bug: str, invariant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"test-{bug}"
    if bug == "teleport":
        register_scheduler(name, lambda params: _Teleport(params, name=name))
    else:
        _never_freed(monkeypatch)
        register_scheduler(name, lambda params: DvmsScheduler(params, name=name))
    try:
        base = scenario_from_dict({**TINY, "duration_s": 35.0})
        records = run_all(plan_fault_runs(base, name, 2, 3), task=run_faults_one)
    finally:
        del SCHEDULERS[name]
    out = summarize(records, scenario="tiny", scheduler=name)
    assert out["violations"][invariant] > 0 and out["runs_failed"] == 2
    assert out["runs_with_violations"][invariant] == 2
    worst = out["worst"][0]
    assert worst["by_invariant"][invariant] > 0 and worst["examples"]
    assert worst["replay"] == replay_command("tiny", worst["seed"], name)
    assert f"--seed {worst['seed']}" in worst["replay"] and f"--scheduler {name}" in worst["replay"]


def test_summary_ranks_worst_seeds_and_is_json() -> None:
    def rec(seed: int, bad: int, faults: int) -> FaultRecord:
        return FaultRecord(
            seed,
            {"crash": faults},
            {**dict.fromkeys(INVARIANTS, 0), "one_partition": bad},
            wall_s=1.0,
        )

    out = summarize([rec(1, 0, 3), rec(2, 4, 1), rec(3, 0, 5), rec(4, 4, 2)], scenario="s", worst=3)
    assert [w["seed"] for w in out["worst"]] == [4, 2, 3]
    assert (
        out["violations"]["one_partition"] == 8
        and out["runs_with_violations"]["one_partition"] == 2
    )
    assert out["faults"]["crash"] == 11 and out["runs_failed"] == 2
    assert out["worst"][0]["replay"] == "dvms sim faults --scenario s --runs 1 --seed 4"
    json.dumps(out)


def test_cli_prints_totals_and_replay_commands(tmp_path: Path) -> None:
    scn = tmp_path / "s.toml"
    scn.write_text(
        'name = "s"\nseed = 2\nduration_s = 30\n[hosts]\ncount = 12\n'
        "[faults.random]\ncrashes_per_run = 2.0\nclock_hosts = 0.2\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-m", "dvms", "sim", "faults", "--scenario", str(scn), "--runs", "2"]
    out = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "2 runs, seeds 2..3" in out.stdout and "result        no violation" in out.stdout
    assert f"replay: dvms sim faults --scenario {scn} --runs 1 --seed 2" in out.stdout
    bad = subprocess.run([*argv[:-1], "0"], capture_output=True, text=True, env=env, timeout=60)
    assert bad.returncode != 0 and "--runs: must be >= 1" in bad.stderr


def test_sim_run_draws_the_same_faults_as_the_campaign() -> None:
    """``dvms sim run S --seed X`` replays a campaign's run: run_scenario draws the
    scenario's random faults from its seed, as the campaign does."""
    from dvms.sim.run import run_scenario

    scn = scenario_from_dict(
        {**TINY, "duration_s": 20.0, "faults": {"random": {"crashes_per_run": 3.0}}}
    )
    _summary, world = run_scenario(scn, "dvms")
    assert world.scenario.faults == with_random_faults(scn).faults
    assert world.scenario.faults.crash


def test_a_daemon_frozen_at_the_end_is_not_a_stuck_partition() -> None:
    """Seed 3 of this 32-host campaign froze host 13's daemon from 39.4 s to the end
    while it was a partition member: the end-of-run check counted it in
    ``partitions_open`` (``lease_freed``), though a stopped daemon can free nothing; it
    is left out like a crashed one (and checked again if it resumes)."""
    rates = {k: RATES[k] for k in RATES if k != "splits_per_run"}
    scn = scenario_from_dict(
        {**TINY, "seed": 3, "duration_s": 60.0, "hosts": {"count": 32}, "faults": {"random": rates}}
    )
    freeze = with_random_faults(scn).faults.freeze
    assert any(f.host == 13 and f.resume_at_s is None for f in freeze)
    record = run_faults_one(Run(scn, "dvms"))
    assert record.violations == dict.fromkeys(INVARIANTS, 0), record.examples
