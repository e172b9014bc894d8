"""Benchmark: the datacenter simulator at scale, per scheduler.

    .venv/bin/python bench/sim_scale.py [SCHEDULER ...] [--sizes 1000,4000,10000]
                                        [--duration 3600] [--seed 23]
                                        [--build source|compiled|both]

Each (size, scheduler) pair runs in its own process (so peak RSS is per run): the
VMPlaceS scenario (700-unit hosts, 10 VMs of 1 vCPU each, Poisson load at N_VM/300 per
s, 1 s monitor) with ``size`` hosts for ``duration`` virtual seconds, solver time from
the cost model. Prints wall time (build + run), peak RSS, virtual/wall speed, load
events, and the headline metric. Schedulers default to every registered one
(``dvms.sim.schedulers.SCHEDULERS``); name them to choose (``bench/sim_scale.py dvms
centralized``). Target: 10,000 hosts / 100,000 VMs in <= 10 min and <= 8 GB.
``--build`` (default ``compiled``) runs the source, the mypyc-compiled hot path
(``dvms.accel``, built first if needed), or both; the results are identical, only the
speed differs.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import _builds


def one(size: int, scheduler: str, duration: float, seed: int) -> dict:
    """Run in this process and return the measurements (called in a child)."""
    from dvms import accel
    from dvms.sim.run import run_scenario
    from dvms.sim.scenario import scenario_from_dict

    scn = scenario_from_dict(
        {
            "name": f"vmplaces-{size}",
            "hosts": {"count": size},
            "duration_s": duration,
            "seed": seed,
            # VMPlaceS's lease and minimum partition (the numbers in docs/simulation.md)
            "scheduler": {"partition": {"lease_s": 4.5, "min_partition_size": 4}},
        }
    )
    t0 = time.perf_counter()
    c0 = time.process_time()
    summary, _ = run_scenario(scn, scheduler)
    wall = time.perf_counter() - t0
    cpu = time.process_time() - c0
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "hosts": size,
        "scheduler": scheduler,
        "build": "compiled" if accel.active() else "source",
        "wall_s": round(wall, 1),
        # On a shared machine wall time includes waiting for a core; CPU time does not.
        "cpu_s": round(cpu, 1),
        "virtual_per_cpu": round(duration / cpu, 1),
        "peak_rss_mib": round(rss_mib),
        "virtual_per_wall": round(duration / wall, 1),
        "load_events": summary["load_events"],
        "engine_events": summary["engine_events"],
        "cumulated_violation_s": summary["cumulated_violation_s"],
        "per_host_violation_s": round(summary["cumulated_violation_s"] / size, 2),
        "migrations": summary["migrations"],
        "solver_s": summary["solver_s"],
        "invariant_violations": summary["invariant_violations"],
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("schedulers", nargs="*", help="scheduler names (default: all registered)")
    p.add_argument("--sizes", default="1000,4000,10000", help="host counts (1000,4000,10000)")
    p.add_argument("--duration", type=float, default=3600.0, help="virtual seconds (3600)")
    p.add_argument("--seed", type=int, default=23)
    p.add_argument("--build", default="compiled", help="source, compiled or both (compiled)")
    p.add_argument("--one", nargs=2, metavar=("SIZE", "SCHEDULER"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(one(int(args.one[0]), args.one[1], args.duration, args.seed)))
        return 0
    from dvms.sim.schedulers import SCHEDULERS

    names = args.schedulers or sorted(SCHEDULERS)
    builds = _builds.parse(args.build)
    _builds.prepare(builds)
    cols = ("hosts", "scheduler", "build", "wall_s", "cpu_s", "peak_rss_mib", "virtual_per_wall")
    cols += ("virtual_per_cpu", "load_events")
    cols += ("per_host_violation_s", "migrations", "solver_s", "invariant_violations")
    print(" ".join(f"{c:>20}" for c in cols), flush=True)
    for size in (int(s) for s in args.sizes.split(",")):
        for name, build in ((n, b) for n in names for b in builds):
            cmd = [sys.executable, __file__, "--one", str(size), name]
            cmd += ["--duration", str(args.duration), "--seed", str(args.seed)]
            res = subprocess.run(
                cmd, capture_output=True, text=True, check=False, env=_builds.env(build)
            )
            if res.returncode != 0:
                print(f"{size} {name} ({build}): failed\n{res.stderr}", file=sys.stderr)
                continue
            row = json.loads(res.stdout)
            if row["build"] != build:
                print(f"{size} {name}: asked for {build}, ran {row['build']}", file=sys.stderr)
                print(res.stderr, file=sys.stderr)
                continue
            print(" ".join(f"{row[c]!s:>20}" for c in cols), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
