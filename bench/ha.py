"""High availability in the simulator: a campaign of one HA scenario over many seeds.

    python bench/ha.py [--scenario ha-crash] [--seeds 20] [--first-seed 23] [--jobs N]
                       [--guardians N] [--hosts N] [--duration S] [--quiet]
                       [--loopback SIZES] [--json]

Each seed draws other HA VMs, node ids and load (the fault schedule is the scenario's).
Printed per seed as it ends: HA VMs, restarts, restart p50 / p99 / max (from the host's
failure to the new copy running), VMs lost, seconds of double run, copies fenced, the
run's invariant violations (``World.check_invariants``) and its CPU seconds; ``--quiet``
prints only the seeds that miss a target. Then the worst seed (most lost, then most
double run, then the slowest p99) with the command that replays it, the CPU time of
the campaign, and whether every seed meets the targets: ha_lost = 0,
ha_double_run_s = 0, ha_restart_p99_s <= 20, no invariant violation. Exits 1 if one
does not. ``--guardians`` overrides ``[ha.protocol] guardians``; ``--hosts`` /
``--duration`` shrink the scenario (faults on missing hosts or after the end are
dropped) for a quick look. ``--loopback 1,10,100`` adds the loopback daemons' rows
(``bench/ha_loopback.py``: restart p50 / p99 of that many HA VMs lost at once, and p99
over the lease measured in the same run); ``--seeds 0`` measures only those.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dvms.sim.campaign import Run, default_jobs, plan_runs
from dvms.sim.run import run_scenario
from dvms.sim.scenario import Scenario, load_scenario

KEYS = (
    "ha_vms",
    "host_failures",
    "ha_restarts",
    "ha_restart_p50_s",
    "ha_restart_p99_s",
    "ha_restart_max_s",
    "ha_lost",
    "ha_double_run_s",
    "ha_fenced",
    "invariant_violations",
)
TARGET_P99_S = 20.0


def shrink(scn: Scenario, hosts: int | None, duration: float | None) -> Scenario:
    if hosts is None and duration is None:
        return scn
    n = hosts or scn.hosts.count
    end = duration or scn.duration_s
    faults = scn.faults
    crash = tuple(c for c in faults.crash if c.host < n and c.at_s < end)
    faults = replace(faults, crash=crash)
    for name in ("freeze", "split"):
        items = getattr(faults, name)
        kept = []
        for f in items:
            if f.at_s >= end:
                continue
            if name == "split":
                f = replace(f, hosts=tuple(h for h in f.hosts if h < n))
                if not f.hosts:
                    continue
            elif f.host >= n:
                continue
            kept.append(f)
        faults = replace(faults, **{name: tuple(kept)})
    return replace(scn, hosts=replace(scn.hosts, count=n), duration_s=end, faults=faults)


def ok(row: dict[str, Any]) -> bool:
    p99 = row["ha_restart_p99_s"]
    return (
        row["ha_lost"] == 0
        and row["ha_double_run_s"] == 0
        and (p99 is None or p99 <= TARGET_P99_S)
        and not row["invariant_violations"]
    )


def run_row(run: Run) -> dict[str, Any]:
    """One seed: its HA metrics and the CPU seconds it took (a worker's task)."""
    t0 = time.process_time()
    summary, _world = run_scenario(run.scenario, run.scheduler)
    cpu = time.process_time() - t0
    return {"seed": summary["seed"], **{k: summary.get(k) for k in KEYS}, "cpu_s": round(cpu, 1)}


def severity(row: dict[str, Any]) -> tuple[Any, ...]:
    return (
        row["ha_lost"],
        row["ha_double_run_s"],
        row["invariant_violations"] or 0,
        row["ha_restart_p99_s"] or 0.0,
    )


def replay(scn: Scenario, seed: int, args: argparse.Namespace) -> str:
    """The command that runs seed ``seed`` alone again."""
    if args.guardians is None and args.hosts is None and args.duration is None:
        return f"dvms sim run {scn.name} --scheduler dvms --seed {seed} --json"
    extra = "".join(
        f" --{k} {v}"
        for k, v in (
            ("guardians", args.guardians),
            ("hosts", args.hosts),
            ("duration", args.duration),
        )
        if v is not None
    )
    return f"python bench/ha.py --scenario {scn.name} --seeds 1 --first-seed {seed}{extra}"


COLS = ("seed", *KEYS, "cpu_s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", default="ha-crash")
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--first-seed", type=int, default=None)
    ap.add_argument("--jobs", type=int, default=1, help="worker processes (0: one per CPU)")
    ap.add_argument("--guardians", type=int, default=None, help="[ha.protocol] guardians")
    ap.add_argument("--hosts", type=int, default=None)
    ap.add_argument("--duration", type=float, default=None)
    ap.add_argument("--loopback", default="", help="HA VMs lost at once on loopback daemons")
    ap.add_argument("--quiet", action="store_true", help="print only the seeds that fail")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    loopback: list[dict[str, Any]] = []
    if args.loopback:
        from bench.ha_loopback import loopback_rows, print_rows

        loopback = loopback_rows([int(x) for x in args.loopback.split(",")], nodes=6)
        if not args.json:
            print_rows(loopback)
        if args.seeds == 0:
            if args.json:
                print(json.dumps({"loopback": loopback}))
            return
    scn = shrink(load_scenario(args.scenario), args.hosts, args.duration)
    if args.guardians is not None:
        proto = replace(scn.ha.protocol, guardians=args.guardians)
        scn = replace(scn, ha=replace(scn.ha, protocol=proto))
    if args.first_seed is not None:
        scn = replace(scn, seed=args.first_seed)
    jobs = args.jobs or default_jobs()
    runs = plan_runs(scn, ["dvms"], args.seeds)
    if not args.json:
        print(" | ".join(COLS), flush=True)
    t0 = time.perf_counter()
    rows: list[dict[str, Any]] = []
    if jobs <= 1:
        for run in runs:
            rows.append(run_row(run))
            _print(rows[-1], args)
    else:
        # spawn: a fresh interpreter per worker; rows are printed as seeds end
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
            for fut in as_completed([pool.submit(run_row, run) for run in runs]):
                rows.append(fut.result())
                _print(rows[-1], args)
        rows.sort(key=lambda r: r["seed"])
    wall = time.perf_counter() - t0
    worst = max(rows, key=severity)
    failing = [r["seed"] for r in rows if not ok(r)]
    cpu = sum(r["cpu_s"] for r in rows)
    out = {
        "scenario": scn.name,
        "hosts": scn.hosts.count,
        "duration_s": scn.duration_s,
        "guardians": scn.ha.protocol.guardians,
        "seeds": len(rows),
        "all_ok": not failing,
        "failing_seeds": failing,
        "worst": worst,
        "replay": replay(scn, worst["seed"], args),
        "runs": rows,
        "wall_s": round(wall, 1),
        "loopback": loopback,
        "cpu_s": round(cpu, 1),
        "jobs": jobs,
    }
    if args.json:
        print(json.dumps(out))
    else:
        print(f"worst seed {worst['seed']}: " + ", ".join(f"{k}={worst[k]}" for k in KEYS))
        print(f"replay: {out['replay']}")
        print(
            f"{len(rows)} seeds of {scn.name} ({scn.hosts.count} hosts, {scn.duration_s:g} s, "
            f"{scn.ha.protocol.guardians} guardians): {len(failing)} miss a target "
            f"{failing[:20]}; CPU {cpu:.0f} s ({cpu / len(rows):.1f} s a seed), "
            f"wall {wall:.0f} s with {jobs} job(s)"
        )
    sys.exit(0 if not failing else 1)


def _print(row: dict[str, Any], args: argparse.Namespace) -> None:
    if args.json or (args.quiet and ok(row)):
        return
    print(" | ".join(str(row[c]) for c in COLS), flush=True)


if __name__ == "__main__":
    main()
