"""Benchmark: how complete a cluster-wide view is, from one routing table (what
cluster-wide commands asked before) and from a crawl of the overlay (what they ask now).

    .venv/bin/python bench/crawl.py [--sizes 300:4,1000:20] [--seed 5]

Each size ``N:K`` joins N simulated nodes with bucket size K (constant 20 ms RTT, the
real overlay core on the discrete-event engine), then one node crawls. Prints, per size:
the largest routing table and the share of the cluster it holds (the old view at best),
the share the crawl found, its RPCs (per node), its duration in virtual time with
``crawl_parallelism`` = 32, and the ratio crawl / table coverage.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

from dvms.overlay.config import KademliaConfig
from dvms.overlay.core import CrawlDone
from dvms.sim.overlay import OverlayScenario, OverlaySim


def run(nodes: int, k: int, seed: int) -> dict:
    t0 = time.perf_counter()
    cfg = replace(KademliaConfig(), k=k)
    scn = OverlayScenario(
        nodes=nodes, seed=seed, latency="const:20", duration_s=60.0, lookups=0, kademlia=cfg
    )
    sim = OverlaySim(scn)
    sim.schedule()
    sim.engine.run_until(40.0)
    node = sim.engine.nodes[nodes // 2]
    done: list = []
    sim.engine.on_emit = lambda n, ev, now: (
        done.append(ev.result) if n is node and isinstance(ev, CrawlDone) else None
    )
    _cid, effects = node.core.crawl(now=sim.engine.now)
    sim.engine.apply(node, effects)
    end = sim.engine.now + cfg.crawl_timeout_s + 1.0
    while not done and sim.engine.now < end:
        sim.engine.run_until(sim.engine.now + 0.05)
    (res,) = done
    table = max(len(n.core.table) for n in sim.engine.nodes) + 1  # itself included
    return {
        "nodes": nodes,
        "k": k,
        "table": table,
        "found": len(res.answered),
        "rpcs": res.rpcs,
        "virtual_s": res.finished - res.started,
        "wall_s": time.perf_counter() - t0,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="300:4,1000:20", help="N:K pairs, comma-separated")
    ap.add_argument("--seed", type=int, default=5)
    args = ap.parse_args()
    print("| nodes | k | largest table (share) | crawl found (share) | RPCs (per node) "
          "| crawl, virtual | crawl / table | wall |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for pair in args.sizes.split(","):
        n, k = (int(x) for x in pair.split(":"))
        r = run(n, k, args.seed)
        print(
            f"| {n:,} | {k} | {r['table']} ({r['table'] / n:.0%}) "
            f"| {r['found']:,} ({r['found'] / n:.0%}) | {r['rpcs']:,} ({r['rpcs'] / n:.1f}) "
            f"| {r['virtual_s']:.2f} s | {r['found'] / r['table']:.1f}x | {r['wall_s']:.0f} s |"
        )


if __name__ == "__main__":
    main()
