"""``make demo``: a local cluster of real daemons and simulations on the embedded defaults.

1. A local cluster: ``dvms cluster up`` starts eight daemons on 127.0.0.1, each its own
   libvirt test host; a vjob with spread/coschedule/colocate constraints is submitted to
   node2, then ``vm info``, ``partitions``, ``vm kill`` and ``host`` from other nodes.
2. The overlay simulation: 1,000 nodes on the embedded WonderNetwork latency matrix with
   5 % loss; lookups checked against brute force, Vivaldi accuracy over all pairs.
3. The datacenter simulation: the VMPlaceS scenario on 64 hosts / 640 VMs for 20 virtual
   minutes, the same load trace under ``static``, ``centralized`` and ``dvms``.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import tempfile
import time
from pathlib import Path

NODES = 8

#: The demo vjob: a spread tier, a coscheduled worker pool, a pinned database and a cache
#: that follows it (docs/vjob.md).
DEMO_VJOB = """
name = "demo"

[[vms]]
name = "web[1-4]"
vcpus = 2
memory = 2048

[[vms]]
name = "worker[1-6]"
memory = 1024
coschedule = 2

[[vms]]
name = "db1"
vcpus = 4
memory = 8192

[[vms]]
name = "cache1"
memory = 1024
colocate = "db1"

[[constraints]]
kind = "spread"
vms = "web[1-4]"
"""


def _dvms(*args: str) -> int:
    print(f"   $ dvms {' '.join(args)}")
    return subprocess.run([sys.executable, "-m", "dvms", *args]).returncode


def local_cluster() -> bool:
    from dvms.node.localcluster import ClusterError, cluster_down, cluster_up

    print(f"== 1. local cluster: {NODES} real daemons on 127.0.0.1, each a libvirt test host ==")
    with tempfile.TemporaryDirectory(prefix="dvms-demo-") as d:
        tmp = Path(d)
        try:
            t0 = time.monotonic()
            rows = cluster_up(tmp / "cluster", NODES)
            print(f"   {NODES} nodes up, all seeing each other, in {time.monotonic() - t0:.1f} s")
        except ClusterError as exc:
            print(f"   cluster did not start: {exc}")
            return False
        try:
            sock = {r["name"]: r["socket"] for r in rows}
            job = tmp / "demo.toml"
            job.write_text(DEMO_VJOB)
            ok = _dvms("--socket", sock["node2"], "submit", str(job)) == 0
            ok &= _dvms("--socket", sock["node7"], "vm", "info") == 0
            ok &= _dvms("--socket", sock["node5"], "partitions", "--all") == 0
            ok &= _dvms("--socket", sock["node1"], "vm", "kill", "worker[1-3]") == 0
            ok &= _dvms("--socket", sock["node3"], "host") == 0
            return ok
        finally:
            cluster_down(tmp / "cluster")


def overlay_simulation() -> None:
    from dvms.cli.sim import print_summary
    from dvms.sim.overlay import OverlayScenario, run_overlay

    print("\n== 2. overlay simulation: 1,000 nodes, embedded latency matrix, 5% loss ==")
    print_summary(run_overlay(OverlayScenario(nodes=1000, seed=1, loss=0.05, lookups=300)))


def datacenter_simulation() -> None:
    from dvms.sim.scenario import load_scenario
    from dvms.sim.world import run_scenario

    print("\n== 3. datacenter simulation: vmplaces-64 (64 hosts, 640 VMs), 1,200 virtual s ==")
    path = Path(__file__).resolve().parents[1] / "sim" / "scenarios" / "vmplaces-64.toml"
    scn = dataclasses.replace(load_scenario(path), duration_s=1200.0)
    keys = ("cumulated_violation_s", "violations", "mean_violation_s", "migrations", "wall_s")
    heads = ("violation time (s)", "violations", "mean (s)", "migrations", "wall (s)")
    print(f"   {'scheduler':<12}" + "".join(f"{h:>20}" for h in heads))
    for name in ("static", "centralized", "dvms"):
        r, _ = run_scenario(scn, name)
        print(f"   {name:<12}" + "".join(f"{r[k]:>20.1f}" for k in keys))


def main() -> int:
    ok = local_cluster()
    overlay_simulation()
    datacenter_simulation()
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
