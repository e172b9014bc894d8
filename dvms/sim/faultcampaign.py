"""Fault campaigns (``dvms sim faults``): many seeded variations of one scenario, each
with its random faults (``faultgen``), and the safety invariants checked after each.

    seed S0, S0+1, ...  --> with_random_faults --> run --> FaultRecord
                            (campaign.run_all: in process, --jobs, --dask)
    records --> summarize: faults per kind, violations per invariant, worst seeds

The invariants (``INVARIANTS``), each counted per run:

    vm_one_host    every VM on exactly one host (two while it migrates), where the
                   world believes it is                  (World.check_invariants)
    vm_lost        no VM lost: every VM of the run is still on some host
    one_partition  no node claimed by two leaders that both apply a plan (their views;
                   two leaders of one partition id are two), checked every
                   check_period_s, each conflict once          (InvariantChecker)
    lease_freed    every node out of a partition within lease + 1 s of its last
                   update, while the run goes and at its end  (InvariantChecker)
    event_ended    every overload event ended at its origin (resolved, or failed and
                   reported) unless its origin crashed; none left open longer than
                   open_grace_s with no partition holding it
    constraints    every placed VM's constraints hold (spread, coschedule)

A run is a pure function of (scenario, scheduler, seed), so each seed is replayed
exactly by ``dvms sim faults --scenario S --runs 1 --seed X`` (the invariant report)
or ``dvms sim run S --seed X`` (every metric).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from dvms.sim.campaign import Run
from dvms.sim.faultgen import with_random_faults
from dvms.sim.invariants import LEASE_FREED, ONE_PARTITION
from dvms.sim.scenario import Scenario
from dvms.sim.schedulers import make_scheduler
from dvms.sim.world import World

__all__ = [
    "FAULT_KINDS",
    "INVARIANTS",
    "FaultRecord",
    "plan_fault_runs",
    "replay_command",
    "run_faults_one",
    "summarize",
]

FAULT_KINDS = (
    "crash",
    "freeze",
    "loss_burst",
    "dup_reorder",
    "split",
    "clock",
    "site_cut",
    "partition_crash",
)
INVARIANTS = (
    "vm_one_host",
    "vm_lost",
    ONE_PARTITION,
    LEASE_FREED,
    "event_ended",
    "constraints",
)
#: Examples of violations kept per run.
EXAMPLES = 5


@dataclass(frozen=True, slots=True)
class FaultRecord:
    """One run of a fault campaign: its faults, its violations, what it cost."""

    seed: int
    faults: dict[str, int]
    violations: dict[str, int]
    examples: list[str] = field(default_factory=list)
    #: datagrams dropped, by cause (network: lost, cut, down; engine: stale, frozen)
    dropped: dict[str, int] = field(default_factory=dict)
    overload_events: int = 0
    migrations: int = 0
    wall_s: float = 0.0
    #: CPU time of the run in its process: what it costs on a shared machine
    cpu_s: float = 0.0

    @property
    def total(self) -> int:
        return sum(self.violations.values())

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "total": self.total}


def plan_fault_runs(base: Scenario, scheduler: str, runs: int, seed: int) -> list[Run]:
    """Seeds ``seed, seed + 1, ...`` of ``base`` under ``scheduler``."""
    return [Run(replace(base, seed=seed + i), scheduler) for i in range(runs)]


def run_faults_one(run: Run) -> FaultRecord:
    """One run with its random faults drawn, then every invariant checked."""
    t0, c0 = time.perf_counter(), time.process_time()
    scn = with_random_faults(run.scenario)
    sched = make_scheduler(run.scheduler, scn.scheduler)
    world = World(scn)
    world.scheduler_name = run.scheduler
    world.scheduler = sched
    sched.attach(world)
    world.run()
    placement = world.check_invariants()
    summary = world.summary()
    violations = dict.fromkeys(INVARIANTS, 0)
    examples: list[str] = []
    for problem in placement:
        lost = " has 0 copies" in problem or "VMs in the cluster" in problem
        violations["vm_lost" if lost else "vm_one_host"] += 1
    examples += placement[:EXAMPLES]
    checker = getattr(sched, "checker", None)
    if checker is not None:
        violations[ONE_PARTITION] += checker.by_kind[ONE_PARTITION]
        violations[LEASE_FREED] += checker.by_kind[LEASE_FREED]
        examples += [e for e in summary["invariant_examples"] if e not in placement]
    violations[LEASE_FREED] += summary.get("partitions_open", 0)
    violations["event_ended"] += summary.get("overloads_open", 0)
    violations["constraints"] += summary["constraint_violations"]
    examples += summary["constraint_examples"]
    stats = world.network.statistics()
    dropped = {
        "lost": stats.lost,
        "cut": stats.cut,
        "down": stats.down,
        "stale": world.engine.stale,
        "frozen": world.engine.frozen_dropped,
        "duplicated": stats.duplicated,
    }
    return FaultRecord(
        seed=scn.seed,
        faults=scn.faults.counts(),
        violations=violations,
        examples=examples[:EXAMPLES],
        dropped=dropped,
        overload_events=summary["overload_events"],
        migrations=summary["migrations"],
        wall_s=round(time.perf_counter() - t0, 3),
        cpu_s=round(time.process_time() - c0, 3),
    )


def replay_command(scenario: str, seed: int, scheduler: str = "dvms") -> str:
    """The command that replays one seed's run and its invariant report."""
    sched = "" if scheduler == "dvms" else f" --scheduler {scheduler}"
    return f"dvms sim faults --scenario {scenario} --runs 1 --seed {seed}{sched}"


def summarize(
    records: list[FaultRecord], *, scenario: str, scheduler: str = "dvms", worst: int = 5
) -> dict[str, Any]:
    """The campaign's totals: faults per kind, violations per invariant (and in how many
    runs), the ``worst`` seeds (most violations, then most faults) with their replay
    commands."""
    faults: Counter[str] = Counter()
    violations: Counter[str] = Counter()
    runs_with: Counter[str] = Counter()
    dropped: Counter[str] = Counter()
    for r in records:
        faults.update(r.faults)
        violations.update(r.violations)
        runs_with.update(k for k, v in r.violations.items() if v)
        dropped.update(r.dropped)
    ranked = sorted(records, key=lambda r: (-r.total, -sum(r.faults.values()), r.seed))
    walls = [r.wall_s for r in records]
    cpus = [r.cpu_s for r in records]
    return {
        "scenario": scenario,
        "scheduler": scheduler,
        "runs": len(records),
        "seeds": [records[0].seed, records[-1].seed] if records else [],
        "faults": {k: faults[k] for k in FAULT_KINDS},
        "violations": {k: violations[k] for k in INVARIANTS},
        "runs_with_violations": {k: runs_with[k] for k in INVARIANTS},
        "runs_failed": sum(1 for r in records if r.total),
        "dropped": dict(sorted(dropped.items())),
        "overload_events": sum(r.overload_events for r in records),
        "migrations": sum(r.migrations for r in records),
        "run_wall_s_mean": round(sum(walls) / len(walls), 3) if walls else None,
        "run_wall_s_max": max(walls) if walls else None,
        "run_cpu_s_mean": round(sum(cpus) / len(cpus), 3) if cpus else None,
        "cpu_s": round(sum(cpus), 1),
        "worst": [
            {
                "seed": r.seed,
                "violations": r.total,
                "by_invariant": {k: v for k, v in r.violations.items() if v},
                "faults": {k: v for k, v in r.faults.items() if v},
                "examples": r.examples,
                "replay": replay_command(scenario, r.seed, scheduler),
            }
            for r in ranked[:worst]
        ],
    }
