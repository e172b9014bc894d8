"""``make demo``: a local cluster of real daemons and simulations on the embedded defaults.

1. A local cluster: five ``dvms node run`` processes on 127.0.0.1 join through one seed
   (real UDP, authenticated CBOR); we show one node's peers, then stop them all.
2. The overlay simulation: 1,000 nodes on the embedded WonderNetwork latency matrix with
   5 % loss; lookups checked against brute force, Vivaldi accuracy over all pairs.
3. The datacenter simulation: the VMPlaceS scenario on 64 hosts / 640 VMs for 20 virtual
   minutes, the same load trace under ``static``, ``centralized`` and ``dvms``.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dvms.node.control import ControlError, call
from dvms.wire.keys import generate_key, write_key

NODES = 5


def _start(tmp: Path, name: str, key: Path, seed: str | None) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "dvms", "node", "run", "--listen", "127.0.0.1:0"]
    cmd += ["--key", str(key), "--state-dir", str(tmp / name), "--profile", "local"]
    cmd += ["--hostname", name, "--log-level", "warning"]
    if seed:
        cmd += ["--seed", seed]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _wait(pred, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if pred():
                return True
        except (ControlError, OSError, ValueError):
            pass
        time.sleep(0.2)
    return False


def local_cluster() -> bool:
    print(f"== 1. local cluster: {NODES} real daemons on 127.0.0.1 ==")
    with tempfile.TemporaryDirectory(prefix="dvms-demo-") as d:
        tmp = Path(d)
        key = tmp / "cluster.key"
        write_key(key, generate_key())
        procs = [_start(tmp, "node1", key, None)]
        try:
            if not _wait(lambda: (tmp / "node1" / "node.json").exists(), 20):
                print("   node1 did not start")
                return False
            seed = json.loads((tmp / "node1" / "node.json").read_text())["address"]
            procs += [_start(tmp, f"node{i}", key, seed) for i in range(2, NODES + 1)]
            socks = [str(tmp / f"node{i}" / "dvms.sock") for i in range(1, NODES + 1)]
            ok = _wait(lambda: all(len(call(s, "peers")) == NODES - 1 for s in socks), 30)
            print(f"   every node sees the {NODES - 1} others: {ok}")
            subprocess.run([sys.executable, "-m", "dvms", "--socket", socks[-1], "peers"])
            return ok
        finally:
            for p in procs:
                p.send_signal(signal.SIGTERM)
            for p in procs:
                p.wait(timeout=10)


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
