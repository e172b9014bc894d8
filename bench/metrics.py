"""What one /metrics scrape costs a daemon: CPU seconds and bytes, measured on real daemons.

``dvms cluster up --nodes 3`` (metrics on), a vjob so that most families have samples,
then ``--scrapes`` GETs of node1's /metrics one after the other. Measured: node1's CPU
(psutil, user + system) during the scrapes minus its CPU over an idle period of the same
length measured just before (the daemon's own timers), per scrape; the exposition's
size; and the share of one core that scraping every 15 s (Prometheus' default) and every
1 s would take. First, in this process: what one observation (a counter +1, a histogram
observation) costs with prometheus_client's own metric objects and with the plain
numbers a daemon keeps instead (``metrics._Family``).

Usage: ``python bench/metrics.py [--scrapes 2000] [--dir DIR] [--observations-only]``
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
import timeit
import urllib.request
from pathlib import Path

import psutil
from prometheus_client import CollectorRegistry, Counter, Histogram

from dvms.runtime.localcluster import cluster_down, cluster_up
from dvms.runtime.services.metrics import FAST_S, _Family

VJOB = """
name = "bench"
namespace = "m"

[[vms]]
name = "vm[1-12]"
memory = 256
"""


def cpu(p: psutil.Process) -> float:
    t = p.cpu_times()
    return t.user + t.system


def observation_cost(n: int = 100_000, repeat: int = 7) -> list[tuple[str, float, float]]:
    """(what, µs with prometheus_client's Counter/Histogram and labels(), µs with the
    plain numbers the daemon keeps), per observation, in this process: the best of
    ``repeat`` runs of ``n`` (the least disturbed by other jobs on the machine)."""
    lib = CollectorRegistry()
    counter = Counter("dvms_c", "c", ["result"], registry=lib)
    hist = Histogram("dvms_h_seconds", "h", ["result"], buckets=FAST_S, registry=lib)
    kc = _Family("dvms_c", "c", ("result",), start=[("ok",)])
    kh = _Family("dvms_h_seconds", "h", ("result",), bounds=FAST_S)
    ok = ("ok",)
    cases = (
        ("counter +1 (labelled)", lambda: counter.labels("ok").inc(), lambda: kc.inc(ok)),
        ("histogram observation (labelled)", lambda: hist.labels("ok").observe(0.3),
         lambda: kh.observe(0.3, ok)),
    )  # fmt: skip
    out = []
    for what, theirs, ours in cases:
        t_lib = min(timeit.repeat(theirs, number=n, repeat=repeat)) / n * 1e6
        t_ours = min(timeit.repeat(ours, number=n, repeat=repeat)) / n * 1e6
        out.append((what, t_lib, t_ours))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scrapes", type=int, default=2000)
    ap.add_argument("--dir", help="work directory (default: a new temporary one)")
    ap.add_argument(
        "--observations-only", action="store_true", help="only the per-observation cost"
    )
    args = ap.parse_args(argv)
    print("\n| per observation, this process | prometheus_client | kept by dvms |\n|---|---:|---:|")
    for what, t_lib, t_ours in observation_cost():
        print(f"| {what} | {t_lib:.2f} µs | {t_ours:.2f} µs |")
    if args.observations_only:
        return 0
    d = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="dvms-bench-metrics-"))
    try:
        rows = cluster_up(d / "cluster", 3)
        job = d / "vjob.toml"
        job.write_text(VJOB)
        subprocess.run([sys.executable, "-m", "dvms", "--socket", rows[0]["socket"], "submit",
                        str(job)], check=True, capture_output=True)  # fmt: skip
        proc = psutil.Process(rows[0]["pid"])
        url = rows[0]["metrics"]
        with urllib.request.urlopen(url, timeout=10) as resp:
            size = len(resp.read())
        t0 = time.monotonic()
        c0 = cpu(proc)
        for _ in range(args.scrapes):
            with urllib.request.urlopen(url, timeout=10) as resp:
                resp.read()
        busy_s = time.monotonic() - t0
        scraping = cpu(proc) - c0
        c1 = cpu(proc)
        time.sleep(busy_s)
        idle = cpu(proc) - c1
        per = max(0.0, scraping - idle) / args.scrapes
        print(f"load average: {psutil.getloadavg()[0]:.2f}")
        print("\n| metric | value |\n|---|---|")
        print(f"| exposition size | {size:,} B |")
        print(f"| {args.scrapes} scrapes back to back | {busy_s:.1f} s |")
        print(f"| daemon CPU while scraping / same time idle | {scraping:.2f} s / {idle:.2f} s |")
        print(f"| daemon CPU per scrape | {per * 1000:.2f} ms |")
        print(f"| share of a core, one scrape per 15 s | {per / 15:.3%} |")
        print(f"| share of a core, one scrape per 1 s | {per:.3%} |")
    finally:
        if (d / "cluster" / "cluster.json").exists():
            cluster_down(d / "cluster")
        if not args.dir:
            shutil.rmtree(d, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
