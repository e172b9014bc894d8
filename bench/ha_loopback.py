"""High availability on loopback daemons: restart time of 1, 10 and 100 HA VMs lost at
once (their host's daemon killed with SIGKILL; test:/// hosts die with it).

    python bench/ha_loopback.py [--sizes 1,10,100] [--nodes 6] [--json]

Per size: a fresh local cluster (the default [ha] config: 10 s lease renewed every 2 s),
``size`` HA VMs launched on node2 (namespace ``vm launch`` with ``schedule``, which says
where to launch, not a pin), node2 killed; every live node's hypervisor is read every
0.2 s (``debug_domains``) until each VM runs again. Printed: restart p50 / p99 / max,
seconds from the kill to the copy running, and p99 divided by the lease (the baseline,
from the same config: a restart cannot come before the lease ends).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dvms.ha import HaConfig
from dvms.runtime.client import call
from dvms.runtime.localcluster import cluster_down, cluster_up
from dvms.sim.metrics import percentile

POLL_S = 0.2
#: A size whose VMs are not all running again after this long is reported as such, s.
GIVE_UP_S = 120.0


def _running(socks: dict[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for node, sock in socks.items():
        try:
            rows = call(sock, "debug_domains", {}, timeout=5.0)["domains"]
        except Exception:  # a node busy or gone: read it at the next poll
            continue
        for d in rows:
            if d["state"] == "running" and d["generation"] >= 2:
                out[d["name"]] = node
    return out


def measure(size: int, nodes: int, work: Path) -> dict[str, Any]:
    d = work / f"c{size}"
    rows = cluster_up(d, nodes, host_cpus=max(8, 2 * size), metrics=False)
    try:
        socks = {r["name"]: r["socket"] for r in rows}
        pids = {r["name"]: r["pid"] for r in rows}
        ns = ["namespace", "bench"]
        for words in (["vm", "config", "ha", "restart"], ["vm", "config", "memory", "64"],
                      ["vm", "config", "schedule", "node2"]):  # fmt: skip
            call(socks["node1"], "ns", {"words": [*ns, *words]})
        launched = call(
            socks["node1"], "ns", {"words": [*ns, "vm", "launch", "kvm", str(size)]}, timeout=300
        )
        if not launched.get("ok"):
            raise RuntimeError(f"launch of {size}: {launched}")
        time.sleep(2 * HaConfig().renew_period_s)  # a first lease acknowledged
        os.kill(pids["node2"], signal.SIGKILL)
        t0 = time.monotonic()
        live = {n: s for n, s in socks.items() if n != "node2"}
        first: dict[str, float] = {}
        while len(first) < size and time.monotonic() - t0 < GIVE_UP_S:
            now = time.monotonic() - t0
            for name in _running(live):
                first.setdefault(name, now)
            time.sleep(POLL_S)
    finally:
        cluster_down(d)
    times = sorted(first.values())
    lease = HaConfig().lease_s
    p99 = percentile(times, 99) if times else None
    return {
        "vms_lost": size,
        "restarted": len(times),
        "restart_p50_s": round(percentile(times, 50), 2) if times else None,
        "restart_p99_s": round(p99, 2) if p99 is not None else None,
        "restart_max_s": round(times[-1], 2) if times else None,
        "lease_s": lease,
        "p99_over_lease": round(p99 / lease, 2) if p99 is not None else None,
    }


def loopback_rows(sizes: list[int], nodes: int) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="dvms-ha-bench-") as tmp:
        return [measure(n, nodes, Path(tmp)) for n in sizes]


def print_rows(rows: list[dict[str, Any]]) -> None:
    print("loopback daemons, one node killed (restart: kill -> copy running, s)")
    print(f"{'lost':>5} {'restarted':>9} {'p50':>6} {'p99':>6} {'max':>6} {'p99/lease':>9}")
    for r in rows:
        print(f"{r['vms_lost']:>5} {r['restarted']:>9} {r['restart_p50_s']!s:>6} "
              f"{r['restart_p99_s']!s:>6} {r['restart_max_s']!s:>6} "
              f"{r['p99_over_lease']!s:>9}")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="1,10,100")
    ap.add_argument("--nodes", type=int, default=6)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    rows = loopback_rows([int(x) for x in args.sizes.split(",")], args.nodes)
    if args.json:
        print(json.dumps({"loopback": rows}))
    else:
        print_rows(rows)


if __name__ == "__main__":
    main()
