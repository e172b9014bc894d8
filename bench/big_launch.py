"""Where the time of one big ``vm launch`` goes, on a few loopback daemons.

``dvms cluster up --nodes N`` (libvirt ``test:///`` hosts large enough for every VM),
then from node1 one namespace command ``vm launch kvm vm[1-V]`` (64 MiB, 1 vCPU each),
then ``vm info``, ``vm info --all``, ``ns schedule status`` and ``clear namespace``.
Before it, in the same cluster, a small launch (``--baseline``, 200 VMs) is launched and
cleared: the per-VM costs of the big one are printed with their ratio to the small one's
(1.0 = a cost per VM that does not grow with the namespace). The launch's wall time is
cut from node1's partition log (``partitions``: every launch event's partition with its
start and end)::

    before the first partition   gather the hosts, plan, write the namespace record
    inside partitions            the launch events (``[namespaces.effects] launch_batch``
                                 VMs each), from their start to their end
    between partitions           one event's end to the next one's start
    after the last partition     ``stop`` on every host, the record written again

With ``--profile`` the daemons run under cProfile (main thread) and the top functions
of node1 (which took the command) and of node2 are printed.

Usage: ``python bench/big_launch.py [--nodes 3] [--vms 2000] [--profile] [--top 25]
[--config NODE.toml] [--dir DIR] [--baseline 200]``
"""

from __future__ import annotations

import argparse
import os
import pstats
import shutil
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from datetime import datetime
from pathlib import Path

import psutil
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.cluster import cpu_seconds
from dvms.runtime.client import ControlError, call
from dvms.runtime.localcluster import cluster_down, cluster_up
from dvms.runtime.services.partition_log import KEEP_ENDED

#: Each VM: MiB, vCPUs (a launch counts a new VM's vCPUs as its CPU demand).
VM_MEMORY_MIB = 64
VM_VCPUS = 1
NAMESPACE = "big"


def ns(sock: str, *words: str, timeout: float = 3600.0, space: str = NAMESPACE) -> dict:
    return call(sock, "ns", {"words": ["namespace", space, *words]}, timeout=timeout)


def timed(fn: object, *args: object, **kw: object) -> tuple[dict, float]:
    t = time.time()
    out = fn(*args, **kw)  # type: ignore[operator]
    return out, time.time() - t


def baseline(sock: str, vms: int) -> tuple[float, float]:
    """(launch s, clear s) of ``vms`` VMs in namespace ``base`` of the same cluster."""
    ns(sock, "vm", "config", "memory", str(VM_MEMORY_MIB), space="base")
    out, launch = timed(ns, sock, "vm", "launch", "kvm", f"b[1-{vms}]", space="base")
    if not out.get("ok"):
        raise ControlError(f"baseline launch: {str(out.get('error'))[:300]}")
    out, clear = timed(call, sock, "ns", {"words": ["clear", "namespace", "base"]}, timeout=3600)
    if not out.get("ok"):
        raise ControlError(f"baseline clear: {str(out.get('error'))[:300]}")
    return launch, clear


def wall_of(stamp: object) -> float:
    if isinstance(stamp, int | float):
        return float(stamp)
    return datetime.fromisoformat(str(stamp).replace("Z", "+00:00")).timestamp()


#: Histograms summed over the nodes after the launch: (what, family).
TIMED = (
    ("solver runs", "dvms_solver_duration_seconds"),
    ("DHT lookups", "dvms_overlay_lookup_duration_seconds"),
    ("overlay RPCs", "dvms_overlay_rpc_duration_seconds"),
    ("launch events (at their origin)", "dvms_scheduling_attempt_duration_seconds"),
)


def metric_totals(urls: list[str]) -> dict[str, tuple[float, float]]:
    """what -> (count, seconds) of each ``TIMED`` histogram, summed over ``urls``."""
    out = {what: (0.0, 0.0) for what, _ in TIMED}
    for url in urls:
        with urllib.request.urlopen(url, timeout=30) as resp:
            text = resp.read().decode()
        for fam in text_string_to_metric_families(text):
            for what, name in TIMED:
                if fam.name != name:
                    continue
                n, total = out[what]
                for sample in fam.samples:
                    if sample.name == name + "_count":
                        n += sample.value
                    elif sample.name == name + "_sum":
                        total += sample.value
                out[what] = (n, total)
    return out


def breakdown(rows: list[dict], t0: float, t1: float) -> list[tuple[str, float]]:
    spans = sorted(
        (wall_of(r["started"]), wall_of(r["ended"]))
        for r in rows
        if r.get("ended") is not None and wall_of(r["started"]) >= t0 - 1.0
    )
    if not spans:
        return [("whole command (no partition seen)", t1 - t0)]
    inside = sum(b - a for a, b in spans)
    between = sum(max(0.0, spans[i + 1][0] - spans[i][1]) for i in range(len(spans) - 1))
    first = "before the first partition (gather, plan, record write)"
    if len(spans) >= KEEP_ENDED:  # node1's log forgot the earlier ones
        first = f"before the first of the last {KEEP_ENDED} partitions node1 keeps"
    return [
        (first, spans[0][0] - t0),
        (f"inside {len(spans)} partitions (launch events)", inside),
        ("between partitions", between),
        ("after the last partition (stop on hosts, record write)", t1 - spans[-1][1]),
    ]


def print_profile(path: Path, top: int) -> None:
    if not path.exists():
        print(f"(no profile at {path})")
        return
    print(f"\n== {path.parent.name}: top {top} by own time ==")
    pstats.Stats(str(path)).sort_stats("tottime").print_stats(top)
    print(f"== {path.parent.name}: top {top} of dvms' own functions, cumulative ==")
    pstats.Stats(str(path)).sort_stats("cumulative").print_stats(r"dvms/", top)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--vms", type=int, default=2000)
    ap.add_argument("--profile", action="store_true", help="cProfile the daemons")
    ap.add_argument("--top", type=int, default=25, help="functions printed per profile")
    ap.add_argument("--dir", help="work directory (default: a new temporary one)")
    ap.add_argument("--config", help="a node TOML every daemon reads (e.g. [overlay] keys)")
    ap.add_argument(
        "--baseline", type=int, default=200, help="VMs of the small launch measured first (0: none)"
    )
    args = ap.parse_args(argv)
    d = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="dvms-biglaunch-"))
    per_host = -(-args.vms // args.nodes) * 2  # room for twice an even share
    print(
        f"load before: {os.getloadavg()[0]:.2f} (1 min), {os.cpu_count()} CPUs; "
        f"{args.nodes} nodes of {per_host * VM_VCPUS} CPUs, {args.vms} VMs"
    )
    rows = cluster_up(
        d / "cluster",
        args.nodes,
        host_cpus=per_host * VM_VCPUS,
        host_memory_mib=per_host * VM_MEMORY_MIB,
        cprofile=args.profile,
        metrics=True,
        config_file=args.config,
    )
    socks = [r["socket"] for r in rows]
    procs = [psutil.Process(r["pid"]) for r in rows]
    one = socks[0]
    rc = 0
    try:
        ns(one, "vm", "config", "memory", str(VM_MEMORY_MIB))
        ns(one, "vm", "config", "vcpus", str(VM_VCPUS))
        base = baseline(one, args.baseline) if args.baseline else None
        if base is not None:
            print(f"baseline: {args.baseline} VMs launched in {base[0]:.1f} s, cleared in "
                  f"{base[1]:.1f} s (same cluster, namespace base)")  # fmt: skip
        cpu0 = cpu_seconds(procs)
        t0 = time.time()
        out = ns(one, "vm", "launch", "kvm", f"vm[1-{args.vms}]")
        t1 = time.time()
        cpu1 = cpu_seconds(procs)
        print(
            f"\nvm launch of {args.vms}: {t1 - t0:.1f} s ({args.vms / (t1 - t0):.1f} VMs/s), "
            f"ok={out.get('ok')}"
        )
        if not out.get("ok"):
            print(f"  error: {str(out.get('error'))[:300]}")
            rc = 1
        parts = call(one, "partitions", {}, timeout=60.0)
        plist = parts.get("partitions", parts) if isinstance(parts, dict) else parts
        print("\n| part of the launch | wall s | share |\n|---|---:|---:|")
        for what, s in breakdown(plist, t0, t1):
            print(f"| {what} | {s:.1f} | {s / (t1 - t0):.0%} |")
        for what, (n, total) in metric_totals([r["metrics"] for r in rows]).items():
            print(f"| {what}, all nodes: {n:,.0f}, total | {total:.1f} | |")
        stats: Counter[str] = Counter()
        for sock in socks:
            status = call(sock, "status", timeout=60.0)
            stats.update(status["stats"])
            stats["datagrams accepted"] += status["accepted"]
        shown = ("datagrams accepted", "rpc", "retransmit", "rpc_failed", "lookup_put",
                 "lookup_value", "lookup_node", "lookup_refresh")  # fmt: skip
        print("| overlay, all nodes, per VM | " + ", ".join(
            f"{k} {stats[k] / args.vms:.1f}" for k in shown) + " | |")  # fmt: skip
        cpu = [b - a for a, b in zip(cpu0, cpu1, strict=True)]
        print(
            f"| daemon CPU during the launch, all {args.nodes} (node1) | "
            f"{sum(cpu):.1f} s ({cpu[0]:.1f} s) | |"
        )
        info, t_info = timed(ns, one, "vm", "info")
        listed = len(info.get("rows", info.get("vms", [])) or [])
        print(f"| vm info ({listed} rows; --json is the same answer) | {t_info:.1f} | |")
        every, t_all = timed(call, one, "vm_info", {"namespace": None}, timeout=3600.0)
        print(
            f"| vm info --all ({len(every['vms'])} rows, truncated: "
            f"{every['truncated'] or 'none'}) | {t_all:.1f} | |"
        )
        status, t_status = timed(ns, one, "ns", "schedule", "status")
        print(f"| ns schedule status (ok={status.get('ok')}) | {t_status:.1f} | |")
        cleared, t_clear = timed(
            call, one, "ns", {"words": ["clear", "namespace", NAMESPACE]}, timeout=3600.0
        )
        print(f"| clear namespace (ok={cleared.get('ok')}) | {t_clear:.1f} | |")
        if not cleared.get("ok"):
            print(f"  clear error: {str(cleared.get('error'))[:300]}")
            rc = 1
        after = call(one, "vm_info", {"namespace": NAMESPACE}, timeout=600.0)
        left = len(after["vms"])
        print(
            f"| VMs left on the hosts after the clear | {left} (hosts not answering: "
            f"{', '.join(after['unreachable']) or 'none'}) | |"
        )
        rc = rc or int(
            left != 0
            or bool(after["unreachable"])
            or listed != args.vms
            or sum(v["namespace"] == NAMESPACE for v in every["vms"]) != args.vms
        )
        per = ((t1 - t0) / args.vms, t_clear / args.vms)
        print(
            f"\nper VM: launch {per[0] * 1000:.1f} ms ({1 / per[0]:.1f} VMs/s), "
            f"clear {per[1] * 1000:.1f} ms ({1 / per[1]:.1f} VMs/s)"
        )
        if base is not None:
            b = (base[0] / args.baseline, base[1] / args.baseline)
            print(
                f"baseline ({args.baseline} VMs) per VM: launch {b[0] * 1000:.1f} ms, "
                f"clear {b[1] * 1000:.1f} ms; ratio {args.vms} / {args.baseline}: "
                f"launch {per[0] / b[0]:.2f}, clear {per[1] / b[1]:.2f}"
            )
        print(f"load after: {os.getloadavg()[0]:.2f} (1 min)")
    except ControlError as exc:
        print(f"control: {exc}", file=sys.stderr)
        rc = 1
    finally:
        cluster_down(d / "cluster")
        if args.profile:  # node1 took the command; node2 is one more host
            for r in rows[:2]:
                print_profile(d / "cluster" / r["name"] / "profile.out", args.top)
        if not args.dir:
            shutil.rmtree(d, ignore_errors=True)
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
