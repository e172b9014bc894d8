"""Throughput of concurrent launches: the ``launch-burst`` scenario, one row.

    python bench/launch_burst.py [--json] [--scenario launch-burst]

100 entry nodes submit 10 vjobs of 5 VMs each at the same virtual instant into an empty
1,000-host datacenter (dvms/sim/scenarios/launch-burst.toml); every vjob forms its own
partition. Printed: VMs placed per virtual second (VMs placed / time from the burst to
the last placement: every submission is at the same instant, so the longest launch
latency is the burst's makespan), p50 / p99 / max launch latency, conflicts between
partitions (ISP acknowledgements that refuse: the node is already in another
partition), constraint violations, and the wall time of the simulation. Target:
>= 1,000 placements per virtual second, 0 violations. The latency is the protocol's
(messages on a 50 us LAN, solver time from the measured cost model), not the boot.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dvms.partition.messages import IspAck
from dvms.sim.run import run_scenario
from dvms.sim.scenario import load_scenario
from dvms.sim.schedulers.dvms import DvmsScheduler

TARGET_PER_S = 1000.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--scenario", default="launch-burst")
    args = ap.parse_args()
    refused = 0
    observe = DvmsScheduler._observe

    def counting(self: DvmsScheduler, src: Any, dst: Any, msg: Any) -> None:
        nonlocal refused
        if isinstance(msg, IspAck) and not msg.accepted:
            refused += 1
        observe(self, src, dst, msg)

    DvmsScheduler._observe = counting  # type: ignore[method-assign]
    t0 = time.perf_counter()
    summary, world = run_scenario(load_scenario(args.scenario), "dvms")
    wall = time.perf_counter() - t0
    lat = world.metrics.launch_latencies
    makespan = max(lat) if lat else 0.0
    placed = summary["launch_vms_placed"]
    row = {
        "scenario": args.scenario,
        "vms_placed": placed,
        "vms": summary["launch_vms"],
        "vjobs_placed": summary["launches_placed"],
        "makespan_s": round(makespan, 6),
        "placements_per_s": round(placed / makespan) if makespan else None,
        "target_per_s": TARGET_PER_S,
        "latency_p50_ms": round(1e3 * summary["launch_latency_p50_s"], 2),
        "latency_p99_ms": round(1e3 * summary["launch_latency_p99_s"], 2),
        "latency_max_ms": round(1e3 * makespan, 2),
        "partition_conflicts": refused,
        "partitions": summary["partitions"],
        "constraint_violations": summary["constraint_violations"],
        "invariant_violations": summary["invariant_violations"],
        "solver_s": summary["solver_s"],
        "wall_s": round(wall, 1),
        "stamp": _stamp(),
    }
    if args.json:
        print(json.dumps(row, indent=2))
    else:
        for k, v in row.items():
            print(f"{k:<24} {v}")


def _stamp() -> str:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, check=False).stdout.strip()  # fmt: skip
    load = Path("/proc/loadavg").read_text().split()[0] if Path("/proc/loadavg").exists() else "?"
    return (
        f"commit {commit} · {platform.machine()} Python {platform.python_version()} · load {load}"
    )


if __name__ == "__main__":
    main()
