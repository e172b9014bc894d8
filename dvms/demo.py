"""``make demo``: a local cluster of real daemons and simulations on the embedded defaults.

1. A local cluster: ``dvms cluster up`` starts eight daemons on 127.0.0.1, each its own
   libvirt test host; a vjob with spread/coschedule/colocate constraints is submitted to
   node2, then ``vm info`` and ``partitions`` from other nodes. Then an overload: three
   4-vCPU VMs pinned to a host with no VM yet get a synthetic CPU load (``dvms debug
   load``: test hosts measure no CPU, so the demo *says* what they use) of 3 CPUs each,
   9 on 8 CPUs; that host's overload check starts a DVMS partition that migrates one of
   them away; the demo shows ``partitions``, ``vm info`` and the hosts' demand before and
   after.
2. The overlay simulation: 1,000 nodes on the embedded WonderNetwork latency matrix with
   5 % loss; lookups checked against brute force, Vivaldi accuracy over all pairs.
3. The datacenter simulation: the VMPlaceS scenario on 64 hosts / 640 VMs for 20 virtual
   minutes, the same load trace under ``static``, ``centralized`` and ``dvms``.
"""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dvms.runtime.client import ControlError, call

NODES = 8
#: The synthetic load per hot VM, CPUs.
HOT_LOAD = 3.0
#: How long the demo waits for the partition to relieve the hot host, seconds
#: (``--relief-timeout``: a slow machine may need longer); it polls every host's load
#: meanwhile, each query waiting at most ``RELIEF_QUERY_TIMEOUT_S``.
RELIEF_TIMEOUT_S = 30.0
RELIEF_POLL_S = 0.5
RELIEF_QUERY_TIMEOUT_S = 10.0
#: Timeout of one ``vm_info`` query of a node, seconds.
QUERY_TIMEOUT_S = 30.0

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

#: Three 4-vCPU VMs pinned to the hot host, in two launches: a launch counts a new VM's
#: demand as its vCPUs, so one launch never puts more vCPUs than CPUs (8) on a host.
HOT_VJOB = """
name = "batch-{part}"

[[vms]]
name = "{names}"
vcpus = 4
memory = 1024
schedule = "{host}"
"""


def _dvms(*args: str) -> int:
    print(f"   $ dvms {' '.join(args)}", flush=True)
    return subprocess.run([sys.executable, "-m", "dvms", *args]).returncode


def local_cluster(relief_timeout_s: float = RELIEF_TIMEOUT_S) -> bool:
    from dvms.runtime.localcluster import ClusterError, cluster_down, cluster_up

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
            ok &= _dvms("--socket", sock["node7"], "vm", "info", "--all") == 0
            ok &= _dvms("--socket", sock["node5"], "partitions", "--all") == 0
            return ok and overload(tmp, sock, relief_timeout_s)
        finally:
            cluster_down(tmp / "cluster")


def _idle_host(sock: dict[str, str]) -> str:
    """A host with no VM yet (the demo vjob's coschedule-2 workers would refuse company)."""
    vms = call(sock["node1"], "vm_info", {}, timeout=QUERY_TIMEOUT_S)["vms"]
    used = {v["host"] for v in vms}
    return next((h for h in sock if h not in used), "node8")


def overload(tmp: Path, sock: dict[str, str], relief_timeout_s: float = RELIEF_TIMEOUT_S) -> bool:
    """Overload an idle host with synthetic load and show the partition relieving it."""
    cluster = str(tmp / "cluster")
    host = _idle_host(sock)
    print(f"\n   -- an overload: three 4-vCPU VMs pinned to {host} (12 vCPUs on 8 CPUs) --")
    for part, names in (("a", "batch[1-2]"), ("b", "batch3")):
        job = tmp / f"batch-{part}.toml"
        job.write_text(HOT_VJOB.format(part=part, names=names, host=host))
        if _dvms("--socket", sock["node3"], "submit", str(job)) != 0:
            return False
    before = _placement(sock)
    _dvms("--socket", sock["node2"], "vm", "info", "--all")
    print(f"   test hosts measure no CPU: give each a synthetic load of {HOT_LOAD:g} CPUs")
    print("   (dvms debug, for test hosts only; --dir sets it on every node, so the load")
    print("   follows a VM that migrates)")
    ok = True
    for vm in ("batch1", "batch2", "batch3"):
        ok &= _dvms("debug", "load", "--dir", cluster, vm, f"{HOT_LOAD:g}") == 0
    if not ok:
        return False
    t0 = time.monotonic()
    _dvms("debug", "loads", "--dir", cluster)
    print(f"   waiting for {host}'s overload check and a DVMS partition to relieve it ...")
    relieved = _wait_relieved(sock, host, t0, relief_timeout_s)  # from the last load set
    if relieved is None:
        print(f"   {host} still overloaded after {relief_timeout_s:g} s")
        _dvms("--socket", sock["node1"], "partitions", "--all")
        return False
    after = _placement(sock)
    moves = [
        f"{vm}: {before[vm]} -> {after[vm]}"
        for vm in sorted(after)
        if after[vm] != before.get(vm, after[vm])
    ]
    print(f"   relieved {relieved:.1f} s after the load was set; migrated: {', '.join(moves)}")
    ok &= _dvms("--socket", sock["node1"], "partitions", "--all") == 0
    ok &= _dvms("--socket", sock["node6"], "vm", "info", "--all") == 0
    ok &= _dvms("debug", "loads", "--dir", cluster) == 0
    return ok


def _placement(sock: dict[str, str]) -> dict[str, str]:
    vms = call(sock["node1"], "vm_info", {}, timeout=QUERY_TIMEOUT_S)["vms"]
    return {v["name"]: v["host"] for v in vms}


def _wait_relieved(sock: dict[str, str], host: str, t0: float, timeout_s: float) -> float | None:
    """Seconds until no host is overloaded and a batch VM has left ``host``, or None."""
    while time.monotonic() - t0 < timeout_s:
        try:
            hosts = [call(s, "debug_loads", timeout=RELIEF_QUERY_TIMEOUT_S) for s in sock.values()]
            hot = next(h for h in hosts if h["host"] == host)
            left = [v for v in hot["vms"] if not v["here"] and v["vm"].startswith("batch")]
            if left and not any(h["overloaded"] for h in hosts):
                return time.monotonic() - t0
        except ControlError as exc:
            print(f"   (a node did not answer: {exc})")
        time.sleep(RELIEF_POLL_S)
    return None


def overlay_simulation() -> None:
    from dvms.cli.sim import print_summary
    from dvms.sim.overlay import OverlayScenario, run_overlay

    print("\n== 2. overlay simulation: 1,000 nodes, embedded latency matrix, 5% loss ==")
    print_summary(run_overlay(OverlayScenario(nodes=1000, seed=1, loss=0.05, lookups=300)))


def datacenter_simulation() -> None:
    from dvms.sim.run import run_scenario
    from dvms.sim.scenario import SCENARIO_DIR, load_scenario

    print("\n== 3. datacenter simulation: vmplaces-64 (64 hosts, 640 VMs), 1,200 virtual s ==")
    path = SCENARIO_DIR / "vmplaces-64.toml"
    scn = dataclasses.replace(load_scenario(path), duration_s=1200.0)
    keys = ("cumulated_violation_s", "violations", "mean_violation_s", "migrations", "wall_s")
    heads = ("violation time (s)", "violations", "mean (s)", "migrations", "wall (s)")
    print(f"   {'scheduler':<12}" + "".join(f"{h:>20}" for h in heads))
    for name in ("static", "centralized", "dvms"):
        r, _ = run_scenario(scn, name)
        print(f"   {name:<12}" + "".join(f"{r[k]:>20.1f}" for k in keys))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dvms.demo", description="make demo: a local cluster and simulations"
    )
    parser.add_argument(
        "--relief-timeout",
        type=float,
        default=RELIEF_TIMEOUT_S,
        metavar="SECONDS",
        help=f"wait this long for the overloaded host's relief ({RELIEF_TIMEOUT_S:g})",
    )
    args = parser.parse_args(argv)
    ok = local_cluster(args.relief_timeout)
    overlay_simulation()
    datacenter_simulation()
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
