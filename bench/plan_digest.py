"""The engine alone on the instances of plan_quality.py: a digest of every plan, CPU time.

    python bench/plan_digest.py [--sizes 8,16,32] [--per-mix 3] [--evals 100]
                                [--repeat 5] [--cold] [--json]

For each partition size and engine (greedy, local search ``migrations``, local search
``mttr``, the two with ``--evals`` plans) it solves the instances of
``bench/plan_quality.py`` (same seeds, no oracle) and prints a SHA-256 over every plan
(actions and end placement, in order) and the CPU time per repair: the best of
``--repeat`` passes over the instances, the pass's mean per repair (the other processes
of a shared machine only ever add time). Two trees give the same plans when their
digests match; ``--json`` prints one document for a script to compare.

``--cold`` also times what a daemon pays: each instance built anew and solved once
right after a 64 MiB memory sweep has evicted the engine's code and data from the
CPU caches (as the oracle's solves do in plan_quality.py, or other work between two
repairs); ``cold_cpu_ms_per_repair`` is the mean over ``--repeat`` rounds.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._builds import build_label
from bench.plan_quality import MIXES, _config, instance
from dvms.placement import solve_repair


def _digest_plan(plan) -> str:
    actions = ";".join(str(a) for a in plan.actions)
    placement = ",".join(f"{k}={v}" for k, v in sorted(plan.placement.items()))
    return f"{plan.status}|{actions}|{placement}|{plan.reason}"


def _cold(size: int, cfg, args, sweep: bytearray) -> float:
    """Mean CPU seconds of a first solve of a fresh instance, caches evicted."""
    total, n = 0.0, 0
    for _ in range(max(1, args.repeat)):
        for mix in MIXES:
            for seed in range(args.per_mix):
                snap, cons = instance(size, mix, seed)  # new objects: nothing cached
                sweep[:] = b"\1" * len(sweep)
                c0 = time.process_time()
                solve_repair(snap, cons, cfg, relief=True)
                total += time.process_time() - c0
                n += 1
    return total / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="8,16,32", help="partition sizes (hosts)")
    ap.add_argument("--per-mix", type=int, default=3, help="instances per size and mix")
    ap.add_argument("--evals", type=int, default=100, help="local search budget (plans)")
    ap.add_argument("--repeat", type=int, default=5, help="timed passes (the best is kept)")
    ap.add_argument(
        "--cold", action="store_true", help="also time a fresh instance's solve, caches evicted"
    )
    ap.add_argument("--json", action="store_true", help="print one JSON document")
    args = ap.parse_args()
    sweep = bytearray(64 << 20) if args.cold else bytearray()
    variants = {"greedy": (0, "migrations")}
    if args.evals:
        variants["ls migrations"] = (args.evals, "migrations")
        variants["ls mttr"] = (args.evals, "mttr")
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        cases = [instance(size, mix, seed) for mix in MIXES for seed in range(args.per_mix)]
        for name, (budget, objective) in variants.items():
            cfg = _config(budget, objective)
            best = float("inf")
            digest = ""
            for _ in range(max(1, args.repeat)):
                h = hashlib.sha256()
                c0 = time.process_time()
                plans = [solve_repair(snap, cons, cfg, relief=True) for snap, cons in cases]
                cpu = time.process_time() - c0
                for plan in plans:
                    h.update(_digest_plan(plan).encode())
                    h.update(b"\n")
                digest = h.hexdigest()[:16]
                best = min(best, cpu / len(cases))
            row = {"hosts": size, "engine": name, "instances": len(cases),
                   "digest": digest, "cpu_ms_per_repair": round(1e3 * best, 3)}  # fmt: skip
            if args.cold:
                row["cold_cpu_ms_per_repair"] = round(1e3 * _cold(size, cfg, args, sweep), 3)
            rows.append(row)
            if not args.json:
                cold = f" cold {row['cold_cpu_ms_per_repair']:.3f}" if args.cold else ""
                cpu = f"cpu {row['cpu_ms_per_repair']:.3f}{cold} ms/repair"
                print(f"{size:>3} hosts {name:<14} {len(cases)} plans digest {digest} {cpu}",
                      flush=True)  # fmt: skip
    if args.json:
        print(json.dumps({"build": build_label(), "rows": rows}, indent=1))
    else:
        print(f"build: {build_label()}")


if __name__ == "__main__":
    main()
