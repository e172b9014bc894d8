"""High availability in the simulator: the ``ha-crash`` scenario over many seeds.

    python bench/ha.py [--scenario ha-crash] [--seeds 20] [--first-seed 23] [--jobs N]
                       [--hosts N] [--duration S] [--loopback SIZES] [--json]

Each seed draws other HA VMs, node ids and load (the fault schedule is the scenario's).
Printed per seed: HA VMs, restarts, restart p50 / p99 / max (from the host's failure to
the new copy running), VMs lost, seconds of double run, copies fenced; then the worst
seed (most lost, then most double run, then the slowest p99) and whether every seed
meets the targets: ha_lost = 0, ha_double_run_s = 0, ha_restart_p99_s <= 20.
``--hosts`` / ``--duration`` shrink the scenario (faults on missing hosts or after the
end are dropped) for a quick look. ``--loopback 1,10,100`` adds the loopback daemons'
rows (``bench/ha_loopback.py``: restart p50 / p99 of that many HA VMs lost at once, and
p99 over the lease measured in the same run); ``--seeds 0`` measures only those.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dvms.sim.campaign import default_jobs, plan_runs, run_all
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
    return row["ha_lost"] == 0 and row["ha_double_run_s"] == 0 and (p99 is None or p99 <= 20)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", default="ha-crash")
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--first-seed", type=int, default=None)
    ap.add_argument("--jobs", type=int, default=1, help="worker processes (0: one per CPU)")
    ap.add_argument("--hosts", type=int, default=None)
    ap.add_argument("--duration", type=float, default=None)
    ap.add_argument("--loopback", default="", help="HA VMs lost at once on loopback daemons")
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
    if args.first_seed is not None:
        scn = replace(scn, seed=args.first_seed)
    jobs = args.jobs or default_jobs()
    t0 = time.perf_counter()
    records = run_all(plan_runs(scn, ["dvms"], args.seeds), jobs=jobs)
    wall = time.perf_counter() - t0
    rows = [{"seed": r.summary["seed"], **{k: r.summary.get(k) for k in KEYS}} for r in records]
    worst = max(
        rows,
        key=lambda r: (r["ha_lost"], r["ha_double_run_s"], r["ha_restart_p99_s"] or 0.0),
    )
    out = {
        "scenario": scn.name,
        "hosts": scn.hosts.count,
        "duration_s": scn.duration_s,
        "seeds": len(rows),
        "all_ok": all(ok(r) for r in rows),
        "worst": worst,
        "runs": rows,
        "wall_s": round(wall, 1),
        "loopback": loopback,
    }
    if args.json:
        print(json.dumps(out))
        return
    cols = ("seed", *KEYS[:-1])
    print(" | ".join(cols))
    for r in rows:
        print(" | ".join(str(r[c]) for c in cols))
    print(f"worst seed {worst['seed']}: " + ", ".join(f"{k}={worst[k]}" for k in KEYS))
    print(f"all {len(rows)} seeds meet the targets: {out['all_ok']} (wall {wall:.0f} s)")


if __name__ == "__main__":
    main()
