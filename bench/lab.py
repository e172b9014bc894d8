"""Benchmark (and ``make lab`` demo) of real hypervisor hosts: ``dvms lab up``, a vjob of
4 TCG guests on one network, a measured overload relieved by a live migration, lab down.

Steps and what is measured (wall clock, this machine):

1. ``dvms lab up --hosts N`` (host capacity 2 CPUs each).
2. ``dvms submit`` of 4 lab guests (``g1..g4``, 96 MiB, 1 vCPU, one NIC on the
   namespace's network, g1..g3 spread, g4 away from g1): ``submit_to_running_s`` (the
   submit returns once every domain runs), ``submit_to_ping_s`` (until every guest's
   console shows a successful ping of every other guest, across hosts:
   ``cross_host_ping_ok``). Baseline in the same run: one guest defined and started
   directly with ``virsh`` on a lab host (``baseline_virsh_start_s``).
3. Overload: g4 (which shares its host with g2 or g3) is told to burn CPU; once the
   host's measured demand has risen, its capacity is set halfway between its idle and
   its burning demand (what a burning TCG guest gets depends on the machine's other
   load: ``settle_then_overload``). ``overload_to_relieved_s``: from then (the host is
   overloaded) to its measured demand back under its capacity (a partition has
   live-migrated a VM away); ``burn_to_overload_s`` is how long the measurement took to
   show the burn. ``spread_held``: the vjob's spread constraints still hold afterwards.
   ``downtime_ms``: the longest gap between answers to pings sent every 10 ms, from a
   probe address on a lab host, to the guest that moved.
   ``uptime_continued``: the moved guest booted once and its uptime counter went on.
4. ``dvms lab down``: ``leftovers`` (namespaces, processes, links, files left).

Targets on a 2-core machine with TCG: submit to running <= 10 s for 4 guests, overload
to relieved <= 20 s, downtime <= 300 ms, leftovers 0.

Usage: ``python bench/lab.py [--hosts 3] [--json] [--demo] [--keep] [--dir DIR]``
(root). ``--demo`` narrates each step (``make lab``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dvms.hypervisor.lab.guest import build_lab_guest, lab_cmdline, parse_ticks
from dvms.runtime.lab import (
    LabConfig,
    LabError,
    console_text,
    every_pair_pings,
    guest_command,
    guest_ip,
    host_netns,
    lab_call,
    lab_down,
    lab_socket,
    lab_status,
    lab_up,
    lab_vjob,
    probe_attach,
    settle_then_overload,
    wait_until,
)

NS = "lab"
GUESTS = 4
BOOT_TIMEOUT_S = 300.0
OVERLOAD_TIMEOUT_S = 120.0
PING_INTERVAL_S = 0.01
TARGETS = {
    "submit_to_running_s": 10.0,
    "overload_to_relieved_s": 20.0,
    "downtime_ms": 300.0,
    "leftovers": 0,
}


def say(demo: bool, text: str) -> None:
    if demo:
        print(text, flush=True)


def dvms(d: Path, host: str, *args: str) -> str:
    cmd = [sys.executable, "-m", "dvms", "--socket", lab_socket(d, host), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise LabError(f"dvms {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout


def where(d: Path) -> dict[str, str]:
    return {r["name"]: r["host"] for r in lab_call(d, "host1", "vm_info", {"namespace": NS})["vms"]}


def baseline_start(d: Path, kernel: str, initrd: str) -> float:
    """One lab guest defined and started directly through libvirt (no dvms)."""
    uri = lab_status(d)[0]["libvirt_uri"]
    xml = f"""<domain type='qemu'><name>baseline</name><memory unit='MiB'>96</memory>
<vcpu>1</vcpu><os><type arch='x86_64'>hvm</type><kernel>{kernel}</kernel>
<initrd>{initrd}</initrd><cmdline>{lab_cmdline("baseline")}</cmdline></os>
<cpu mode='custom' match='exact'><model fallback='allow'>qemu64</model></cpu>
<devices><serial type='pty'><target port='0'/></serial><memballoon model='none'/></devices>
</domain>"""
    path = d / "baseline.xml"
    path.write_text(xml)
    t0 = time.monotonic()
    subprocess.run(["virsh", "-c", uri, "create", str(path)], check=True, capture_output=True)
    elapsed = time.monotonic() - t0
    subprocess.run(["virsh", "-c", uri, "destroy", "baseline"], capture_output=True)
    path.unlink()
    return elapsed


_REPLY = re.compile(r"^\[(\d+\.\d+)\] \d+ bytes from [\d.]+: icmp_seq=(\d+)")


def start_pinger(netns: str, ip: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["ip", "netns", "exec", netns, "ping", "-n", "-D", "-i", str(PING_INTERVAL_S), ip],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def max_gap_ms(proc: subprocess.Popen[str]) -> float | None:
    """Stop a pinger; the longest time between two consecutive answers, ms."""
    proc.terminate()
    out, _ = proc.communicate(timeout=30)
    stamps = [float(m.group(1)) for line in out.splitlines() if (m := _REPLY.match(line))]
    if len(stamps) < 2:
        return None
    return round(max(b - a for a, b in itertools.pairwise(stamps)) * 1000.0, 1)


def run(args: argparse.Namespace, d: Path) -> dict[str, Any]:
    demo = args.demo
    result: dict[str, Any] = {"hosts": args.hosts, "guests": GUESTS}
    say(demo, f"== dvms lab up --hosts {args.hosts} --dir {d}")
    t0 = time.monotonic()
    lab_up(d, args.hosts, LabConfig(host_cpus=2.0))
    result["lab_up_s"] = round(time.monotonic() - t0, 2)
    if demo:
        for r in lab_status(d):
            print(f"   {r['name']}  netns {r['netns']}  {r['address']}  {r['libvirt_uri']}")
    g = build_lab_guest()
    result["baseline_virsh_start_s"] = round(baseline_start(d, str(g.kernel), str(g.initrd)), 3)
    vjob = d / "vjob.toml"
    vjob.write_text(lab_vjob(str(g.kernel), str(g.initrd), GUESTS, namespace=NS))
    say(demo, f"== dvms submit: {GUESTS} guests in namespace {NS}, one network, spread")
    t0 = time.monotonic()
    out = dvms(d, "host1", "submit", str(vjob))
    result["submit_to_running_s"] = round(time.monotonic() - t0, 2)
    say(demo, out.rstrip())
    rows = lab_call(d, "host1", "vm_info", {"namespace": NS})["vms"]
    result["guests_running"] = sum(r["state"] == "RUNNING" for r in rows)
    say(demo, "== waiting for every guest to ping every other one (their consoles)")
    try:
        wait_until(lambda: every_pair_pings(d, NS, GUESTS), BOOT_TIMEOUT_S, "pings", poll=1.0)
        result["cross_host_ping_ok"] = True
    except LabError:
        result["cross_host_ping_ok"] = False
    result["submit_to_ping_s"] = round(time.monotonic() - t0, 2)
    if demo:
        for i in range(1, GUESTS + 1):
            lines = [ln for ln in console_text(d, NS, f"g{i}").splitlines() if "ping" in ln]
            print(f"   g{i} console: {' | '.join(lines[-(GUESTS - 1) :])}")
    # -- overload ---------------------------------------------------------------------
    place = where(d)
    src = place["g4"]
    local = sorted(n for n, h in place.items() if h == src)
    probe_ns = host_netns(d, place["g1"])
    probe_attach(probe_ns, NS)
    wait_until(
        lambda: len(lab_call(d, src, "debug_loads")["measured"]) == len(local),
        60.0,
        "the source host's measured demand",
    )
    pingers = {n: start_pinger(probe_ns, guest_ip(int(n[1:]))) for n in local}
    ticks = {n: parse_ticks(console_text(d, NS, n)) for n in local}
    t_burn = time.monotonic()

    def burn() -> None:
        wait_until(
            lambda: "ok burn" in guest_command(probe_ns, guest_ip(4), "burn 100"),
            60.0,
            "g4 to accept the burn command",
            poll=1.0,
        )

    idle, burning, capacity = settle_then_overload(d, src, burn)
    t0 = time.monotonic()
    result["burn_to_overload_s"] = round(t0 - t_burn, 2)
    result["source_demand_idle"], result["source_demand_burning"] = idle, burning
    result["source_capacity"] = capacity
    say(
        demo,
        f"== {src} runs {', '.join(local)}: g4 burns CPU; {src}'s measured demand went "
        f"{idle} -> {burning} CPUs; its capacity is now {capacity} CPUs: overloaded",
    )
    try:
        moved = wait_until(
            lambda: [n for n, h in where(d).items() if n in local and h != src],
            OVERLOAD_TIMEOUT_S,
            "a VM moved away",
            poll=0.5,
        )
        result["overload_to_moved_s"] = round(time.monotonic() - t0, 2)
        wait_until(
            lambda: lab_call(d, src, "debug_loads")["demand"] <= capacity,
            OVERLOAD_TIMEOUT_S,
            f"{src} relieved",
        )
        result["overload_to_relieved_s"] = round(time.monotonic() - t0, 2)
    except LabError as exc:
        moved = []
        result["overload_to_relieved_s"] = None
        result["error"] = str(exc)
    time.sleep(2.0)
    gaps = {n: max_gap_ms(p) for n, p in pingers.items()}
    guest_command(probe_ns, guest_ip(4), "burn 0")
    after = where(d)
    result["spread_held"] = len({after["g1"], after["g2"], after["g3"]}) == 3 and (
        after["g4"] != after["g1"]
    )
    parts = lab_call(d, "host1", "partitions", {"all": True})["partitions"]
    over = [p for p in parts if any(e.startswith("overload:") for e in p["events"])]
    result["migrations"] = sum(p["migrations"] for p in over)
    if moved:
        name = moved[0]
        result["moved"] = f"{name}: {src} -> {where(d)[name]}"
        result["downtime_ms"] = gaps.get(name)
        last = ticks[name][-1][0] if ticks[name] else 0
        try:
            wait_until(
                lambda: (parse_ticks(console_text(d, NS, name)) or [(0, 0.0)])[-1][0] > last + 2,
                60.0,
                "ticks after the move",
            )
            text = console_text(d, NS, name)
            ups = [u for _, u in parse_ticks(text)]
            result["uptime_continued"] = text.count("GUEST UP") == 1 and ups == sorted(ups)
        except LabError:
            result["uptime_continued"] = False
    else:
        result["downtime_ms"] = None
        result["uptime_continued"] = False
    if demo:
        print(f"== partitions --all (on host1): {len(over)} overload partition(s)")
        print(dvms(d, "host1", "partitions", "--all").rstrip())
        print("== vm info --all")
        print(dvms(d, "host1", "vm", "info", "--all").rstrip())
        print(
            f"== moved: {result.get('moved')}, downtime seen by pings: {result['downtime_ms']} ms"
        )
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hosts", type=int, default=3)
    ap.add_argument("--json", action="store_true", help="one JSON object on stdout")
    ap.add_argument("--demo", action="store_true", help="narrate each step (make lab)")
    ap.add_argument("--keep", action="store_true", help="leave the lab up")
    ap.add_argument("--dir", help="lab directory (default: a new temporary one)")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("bench/lab.py needs root (network namespaces, libvirtd)", file=sys.stderr)
        return 2
    if args.hosts < 3:
        print("--hosts must be at least 3 (the vjob spreads over 3 hosts)", file=sys.stderr)
        return 2
    d = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="dvms-lab-bench-"))
    result: dict[str, Any] = {}
    try:
        result = run(args, d)
    finally:
        if not args.keep and (d / "lab.json").exists():
            say(args.demo, f"== dvms lab down --dir {d}")
            left = lab_down(d)
            result["leftovers"] = len(left)
            if left:
                result["leftover_items"] = left
            if not args.dir:
                shutil.rmtree(d, ignore_errors=True)
    result["targets"] = TARGETS
    base = result.get("baseline_virsh_start_s")
    if base and result.get("submit_to_running_s") is not None:
        result["submit_vs_virsh_start"] = round(result["submit_to_running_s"] / base, 1)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
