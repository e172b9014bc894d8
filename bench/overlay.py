"""Benchmark: how fast the overlay simulator runs the real cores.

    .venv/bin/python bench/overlay.py [--sizes 1000,4000,10000] [--duration 600] [--seed 1]
                                      [--build source|compiled|both]

Each size runs `dvms sim overlay --timings --json` in its own process (so peak RSS is
per run) with default maintenance traffic (Vivaldi probes, bucket refresh, housekeeping)
on the embedded WonderNetwork matrix, 5 % loss, 200 checked lookups. Prints a table:
wall time of the join phase and of the steady state, virtual/wall speed of each, peak RSS,
and the steady-state speed as a ratio to the target (10x faster than real time). On a
shared machine the wall times include waiting for a core: the CPU-time columns give the
same speeds from this run's own CPU time (note ``uptime`` with the numbers).

``--build`` (default ``both``) runs each size on the source and on the mypyc-compiled
hot path (``dvms.accel``, built first if needed); both builds give identical results
(``tests/test_accel.py``), only the speed differs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import _builds

TARGET_SPEED = 10.0


def run(nodes: int, duration: float, seed: int, build: str) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "dvms",
        "sim",
        "overlay",
        "--nodes",
        str(nodes),
        "--seed",
        str(seed),
        "--loss",
        "0.05",
        "--duration",
        str(duration),
        "--lookups",
        "200",
        "--timings",
        "--json",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=_builds.env(build))
    result = json.loads(out.stdout)
    if result["compiled"] != (build == "compiled"):
        raise SystemExit(f"asked for the {build} build, ran the other one:\n{out.stderr}")
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,4000,10000")
    ap.add_argument("--duration", type=float, default=600.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--build", default="both", help="source, compiled or both (both)")
    args = ap.parse_args()
    builds = _builds.parse(args.build)
    _builds.prepare(builds)
    header = (
        "| nodes | build | join phase (virtual s / wall s / CPU s) "
        "| steady state (virtual s / wall s / CPU s) | steady speed wall (CPU) "
        "| whole run speed wall (CPU) | msgs/node/s | exact | peak RSS | vs 10x target |"
    )
    print(header)
    print("|" + "---|" * 10)
    for nodes, build in ((int(s), b) for s in args.sizes.split(",") for b in builds):
        r = run(nodes, args.duration, args.seed, build)
        steady = r["steady_virtual_per_wall"]
        steady_cpu = r["steady_virtual_per_cpu"]
        whole = r["virtual_s"] / r["wall_s"]
        whole_cpu = r["virtual_s"] / (r["join_phase_cpu_s"] + r["steady_cpu_s"])
        rate = r["messages"] / nodes / r["virtual_s"]
        print(
            f"| {nodes} | {build} | {r['join_phase_virtual_s']:.0f} / {r['join_phase_wall_s']:.1f} "
            f"/ {r['join_phase_cpu_s']:.1f} "
            f"| {r['steady_virtual_s']:.0f} / {r['steady_wall_s']:.1f} / {r['steady_cpu_s']:.1f} "
            f"| {steady:.1f}x ({steady_cpu:.1f}x) | {whole:.1f}x ({whole_cpu:.1f}x) "
            f"| {rate:.2f} | {r['lookup_exact_ratio']} "
            f"| {r['peak_rss_mb']:.0f} MB | {steady / TARGET_SPEED:.2f} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
