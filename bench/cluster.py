"""Benchmark of a local cluster of real daemons: 1,000 VMs from 4 concurrent submitters.

``dvms cluster up --nodes 16`` (libvirt ``test:///`` hosts, 8 CPUs / 16 GiB each, on
127.0.0.1), then ``--submitters`` threads each run ``dvms submit`` of its vjob files one
after the other, each to its own entry node. Every vjob has a spread group (its ``web``
VMs on pairwise distinct hosts) and a coschedule group (its ``batch`` VMs accept at most
``COSCHEDULE`` other VMs on their host) plus unconstrained workers. Measured:

- wall time from the first submit to the last one returning (every VM created), and to
  ``vm info`` listing every VM RUNNING; the ratio to the target (all placed in 20 s);
- constraint violations, checked from ``vm info --json`` against the vjobs: spread,
  coschedule, host memory, each VM exactly once (must be 0);
- daemon CPU seconds (psutil, user + system, all daemons) during the launch, and peak
  RSS per daemon.

The cluster is stopped and its directory removed even when a step fails (``--keep``
leaves it up for inspection). ``--profile`` runs the daemons under cProfile and prints
the top functions of the busiest one.

The daemons serve ``/metrics`` (as ``dvms cluster up`` makes them), scraped every
``--scrape-s``; ``--no-metrics`` turns both off. ``--metrics-cost N`` measures the cost of
metrics: N pairs of runs with them off and on (ABBA order, a fresh cluster each), and
prints the medians of time and daemon CPU and the per-pair ratio with its spread;
``--idle-s S`` adds S seconds at rest after each launch, the daemons' CPU measured alone.

Usage: ``python bench/cluster.py [--nodes 16] [--vms 1000] [--submitters 4] [--host-cpus 64]
[--spread 4] [--vjobs-per-submitter 5] [--profile] [--keep] [--dir DIR] [--no-metrics]
[--metrics-cost N] [--scrape-s S] [--idle-s S]``
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import pstats
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from prometheus_client.parser import text_string_to_metric_families

from dvms.runtime.client import ControlError, call
from dvms.runtime.localcluster import ClusterError, cluster_down, cluster_up

#: The issue's target: every VM placed and running within this many seconds.
TARGET_S = 20.0
#: VM size in the benchmark (MiB, vCPUs): 1,000 of them fit 16 test hosts of 16 GiB
#: with room to spare.
VM_MEMORY_MIB = 128
VM_VCPUS = 1
#: CPUs per test host (``--host-cpus``). A launch counts a new VM's CPU demand as its
#: vCPUs (it is not measured yet), so 1,000 one-vCPU VMs need 1,000 CPUs: 16 hosts of 64.
#: With the daemon's default 8 CPUs a host takes at most 8 new VMs per launch and a
#: 50-VM vjob needs a 7-host partition (see the README).
HOST_CPUS = 64
#: Per vjob: VMs in the spread group (``--spread``: on pairwise distinct hosts) and in
#: the coschedule group, and the batch VMs' coschedule (at most this many *other* VMs on
#: their host; 1,000 VMs on 16 hosts average 62.5 per host, so 79 binds a placement that
#: packs, not one that balances).
SPREAD = 4
BATCH = 10
COSCHEDULE = 79
#: ``dvms submit`` waits this long per vjob, seconds.
SUBMIT_TIMEOUT_S = 300.0


@dataclass
class Vjob:
    name: str
    web: list[str]
    batch: list[str]
    workers: list[str]

    def all(self) -> list[str]:
        return self.web + self.batch + self.workers

    def toml(self) -> str:
        def entry(names: list[str], extra: str = "") -> str:
            rng = f"{names[0][: names[0].rindex('-') + 1]}[1-{len(names)}]"
            return (
                f'[[vms]]\nname = "{rng}"\nvcpus = {VM_VCPUS}\nmemory = {VM_MEMORY_MIB}\n{extra}\n'
            )

        parts = [f'name = "{self.name}"\n']
        for names, extra in (
            (self.web, ""),
            (self.batch, f"coschedule = {COSCHEDULE}\n"),
            (self.workers, ""),
        ):
            if names:
                parts.append(entry(names, extra))
        if len(self.web) > 1:
            web = f"{self.web[0][: self.web[0].rindex('-') + 1]}[1-{len(self.web)}]"
            parts.append(f'[[constraints]]\nkind = "spread"\nvms = "{web}"\n')
        return "\n".join(parts)


def make_vjobs(n_vms: int, n_jobs: int, nodes: int, spread: int = SPREAD) -> list[Vjob]:
    """``n_jobs`` vjobs sharing ``n_vms`` VMs, globally unique names (``j07web-3``)."""
    jobs = []
    for j in range(n_jobs):
        size = n_vms // n_jobs + (1 if j < n_vms % n_jobs else 0)
        web = min(spread, nodes, size)
        batch = min(BATCH, size - web)
        workers = size - web - batch
        p = f"j{j:02d}"
        jobs.append(
            Vjob(
                f"bench{j:02d}",
                [f"{p}web-{i}" for i in range(1, web + 1)],
                [f"{p}batch-{i}" for i in range(1, batch + 1)],
                [f"{p}worker-{i}" for i in range(1, workers + 1)],
            )
        )
    return jobs


def dvms(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dvms", *args], capture_output=True, text=True, timeout=timeout
    )


@dataclass
class Submitter:
    socket: str
    jobs: list[tuple[Vjob, Path]]
    done_at: float = 0.0
    accepted: list[Vjob] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    partition_sizes: list[int] = field(default_factory=list)
    #: per accepted submit: (seconds inside the daemon, seconds of the whole command)
    durations: list[tuple[float, float]] = field(default_factory=list)

    def run(self) -> None:
        for job, f in self.jobs:
            t0 = time.monotonic()
            try:
                out = dvms(
                    "--socket", self.socket, "--json", "submit", str(f), timeout=SUBMIT_TIMEOUT_S
                )
            except subprocess.TimeoutExpired:
                self.errors.append(f"{f.name}: no answer in {SUBMIT_TIMEOUT_S:g} s")
                continue
            if out.returncode != 0:
                self.errors.append(f"{f.name}: {out.stderr.strip() or out.stdout.strip()}")
                continue
            self.accepted.append(job)
            result = json.loads(out.stdout)
            self.partition_sizes.append(result["partition_size"])
            self.durations.append((result["duration_s"], time.monotonic() - t0))
        self.done_at = time.monotonic()


class Sampler(threading.Thread):
    """Peak RSS of every daemon, sampled every 0.25 s."""

    def __init__(self, procs: list[psutil.Process]) -> None:
        super().__init__(daemon=True)
        self.procs = procs
        self.peak = [0] * len(procs)
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            for i, p in enumerate(self.procs):
                with contextlib.suppress(psutil.Error):
                    self.peak[i] = max(self.peak[i], p.memory_info().rss)
            self.stop.wait(0.25)


def datagrams(socks: list[str]) -> int:
    """Datagrams every daemon has accepted so far (``status``: ``accepted``)."""
    total = 0
    for sock in socks:
        with contextlib.suppress(ControlError):
            total += call(sock, "status", timeout=10.0)["accepted"]
    return total


def cpu_seconds(procs: list[psutil.Process]) -> list[float]:
    out = []
    for p in procs:
        try:
            t = p.cpu_times()
            out.append(t.user + t.system)
        except psutil.Error:
            out.append(math.nan)
    return out


def violations(
    vms: list[dict], jobs: list[Vjob], host_memory_mib: int, refused: Sequence[Vjob] = ()
) -> list[str]:
    """Every broken rule, as text (empty: all constraints hold). A refused vjob must
    leave no VM behind."""
    problems: list[str] = []
    seen = Counter(v["name"] for v in vms)
    host = {v["name"]: v["host"] for v in vms}
    expected = {n for j in jobs for n in j.all()}
    problems += [f"{n} listed {c} times" for n, c in seen.items() if c > 1]
    problems += [f"{n} missing" for n in sorted(expected - set(host))]
    left = sorted(n for j in refused for n in j.all() if n in host)
    problems += [f"{n}: left running by its refused vjob" for n in left]
    problems += [f"{n} not running" for v in vms if (n := v["name"]) and v["state"] != "RUNNING"]
    per_host = Counter(host.values())
    mem = Counter()
    for v in vms:
        mem[v["host"]] += v["memory"]
    problems += [f"{h}: {m} MiB > {host_memory_mib}" for h, m in mem.items() if m > host_memory_mib]
    for j in jobs:
        web = [host[n] for n in j.web if n in host]
        if len(set(web)) != len(web):
            problems.append(f"{j.name}: spread broken: {sorted(web)}")
        for n in j.batch:
            if n in host and per_host[host[n]] - 1 > COSCHEDULE:
                problems.append(f"{n}: coschedule {COSCHEDULE} broken ({per_host[host[n]]} VMs)")
    return problems


def wait_all_running(sock: str, names: set[str], timeout: float) -> tuple[float, list[dict]]:
    deadline = time.monotonic() + timeout
    vms: list[dict] = []
    while time.monotonic() < deadline:
        out = dvms("--socket", sock, "--json", "vm", "info", "--all")
        if out.returncode == 0:
            vms = json.loads(out.stdout)["vms"]
            if names <= {v["name"] for v in vms if v["state"] == "RUNNING"}:
                return time.monotonic(), vms
        time.sleep(0.2)
    return math.nan, vms


def print_profile(d: Path, nodes: int, cpu: list[float]) -> None:
    busiest = max(range(nodes), key=lambda i: cpu[i] if not math.isnan(cpu[i]) else -1)
    path = d / f"node{busiest + 1}" / "profile.out"
    if not path.exists():
        print(f"no profile written at {path}")
        return
    print(f"\n== cProfile of node{busiest + 1} (busiest), top 30 by own time ==")
    pstats.Stats(str(path)).sort_stats("tottime").print_stats(30)
    print("== the same, cumulative ==")
    pstats.Stats(str(path)).sort_stats("cumulative").print_stats(40)


class Scraper(threading.Thread):
    """What Prometheus would do with metrics on: GET every node's /metrics every
    ``period_s`` (ours: 1 s, 15x Prometheus' default scrape interval)."""

    def __init__(self, urls: list[str], period_s: float) -> None:
        super().__init__(daemon=True)
        self.urls = urls
        self.period_s = period_s
        self.scrapes = 0
        self.failed = 0
        self.bytes = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            for url in self.urls:
                try:
                    with urllib.request.urlopen(url, timeout=5) as resp:
                        self.bytes += len(resp.read())
                    self.scrapes += 1
                except OSError:
                    self.failed += 1
            self.stop.wait(self.period_s)


def metrics_spent(urls: list[str]) -> dict[str, float]:
    """``dvms_metrics_seconds_total`` by part, summed over the nodes at ``urls``: the
    time the daemons spent counting events and rendering scrapes, as they measure it."""
    out: dict[str, float] = Counter()
    for url in urls:
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=10) as resp:
            for family in text_string_to_metric_families(resp.read().decode()):
                for s in family.samples:
                    if s.name == "dvms_metrics_seconds_total":
                        out[s.labels["part"]] += s.value
    return dict(out)


def run(
    args: argparse.Namespace,
    d: Path,
    *,
    metrics: bool = True,
    numbers: dict[str, float] | None = None,
) -> int:
    """One cluster, one measurement; ``numbers`` (if given) receives the headline ones."""
    n_jobs = args.submitters * args.vjobs_per_submitter
    jobs = make_vjobs(args.vms, n_jobs, args.nodes, args.spread)
    files = []
    for j in jobs:
        f = d / f"{j.name}.toml"
        f.write_text(j.toml())
        files.append((j, f))
    print(
        f"load before: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} (1, 5 min), "
        f"{os.cpu_count()} CPUs"
    )
    t0 = time.monotonic()
    rows = cluster_up(
        d / "cluster",
        args.nodes,
        host_cpus=args.host_cpus,
        host_memory_mib=args.host_memory,
        cprofile=args.profile,
        metrics=metrics,
    )
    shown = "on" if metrics else "off"
    print(f"{args.nodes} nodes up in {time.monotonic() - t0:.1f} s, metrics {shown}")
    scraper = Scraper([r["metrics"] for r in rows], args.scrape_s) if metrics else None
    if scraper is not None:
        scraper.start()
    procs = [psutil.Process(r["pid"]) for r in rows]
    socks = [r["socket"] for r in rows]
    step = max(1, args.nodes // args.submitters)
    subs = [
        Submitter(socks[(i * step) % args.nodes], files[i :: args.submitters])
        for i in range(args.submitters)
    ]
    sampler = Sampler(procs)
    sampler.start()
    cpu0 = cpu_seconds(procs)
    spent0 = metrics_spent([r["metrics"] for r in rows]) if metrics else {}
    grams0 = datagrams(socks)
    machine0 = psutil.cpu_times()
    clis0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    threads = [threading.Thread(target=s.run) for s in subs]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    submitted = max(s.done_at for s in subs) - start
    cpu_submitted = cpu_seconds(procs)
    spent = metrics_spent([r["metrics"] for r in rows]) if metrics else {}
    spent = {k: v - spent0.get(k, 0.0) for k, v in spent.items()}
    grams = datagrams(socks) - grams0
    machine1 = psutil.cpu_times()
    clis1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cli_cpu = clis1.ru_utime + clis1.ru_stime - clis0.ru_utime - clis0.ru_stime
    busy = sum(machine1) - sum(machine0)
    busy_share = 1 - (machine1.idle - machine0.idle) / busy if busy else math.nan
    accepted = [j for s in subs for j in s.accepted]
    n_accepted = sum(len(j.all()) for j in accepted)
    names = {n for j in accepted for n in j.all()}
    running_at, vms = wait_all_running(socks[0], names, timeout=30.0)
    running = running_at - start
    cpu1 = cpu_seconds(procs)
    idle_cpu = math.nan
    if args.idle_s > 0:  # the cluster at rest (scraped when metrics are on)
        time.sleep(args.idle_s)
        idle_cpu = sum(cpu_seconds(procs)) - sum(cpu1)
    sampler.stop.set()
    sampler.join()
    if scraper is not None:
        scraper.stop.set()
        scraper.join()
    load = os.getloadavg()
    errors = [e for s in subs for e in s.errors]
    refused = [j for j in jobs if j not in accepted]
    problems = violations(vms, accepted, args.host_memory, refused)
    cpu = [b - a for a, b in zip(cpu0, cpu_submitted, strict=True)]
    per_host = Counter(v["host"] for v in vms)
    sizes = [z for s in subs for z in s.partition_sizes]
    print(f"\n{len(vms)}/{args.vms} VMs listed, {len(errors)} of {n_jobs} submits refused")
    for e in errors[:10]:
        print(f"  refused: {e}")
    print(
        f"VMs per host: min {min(per_host.values(), default=0)} "
        f"max {max(per_host.values(), default=0)}; partition sizes {sorted(sizes)}"
    )
    print("\n| metric | value |\n|---|---|")
    print(f"| vjobs x VMs | {n_jobs} x ~{args.vms // n_jobs}, {args.submitters} submitters |")
    print(f"| VMs placed | {n_accepted} / {args.vms} ({len(errors)} vjobs refused) |")
    print(f"| last submit returned | {submitted:.1f} s |")
    inside = sorted(a for s in subs for a, _ in s.durations)
    whole = sorted(b for s in subs for _, b in s.durations)
    if inside:
        print(
            f"| per submit: launch event in the daemon, p50 / max | "
            f"{inside[len(inside) // 2]:.2f} / {inside[-1]:.2f} s |"
        )
        print(
            f"| per submit: whole `dvms submit` command, p50 / max | "
            f"{whole[len(whole) // 2]:.2f} / {whole[-1]:.2f} s |"
        )
        outside = [b - a for s in subs for a, b in s.durations]
        print(
            f"| per submit: outside the launch event (CLI start, vjob, socket), mean | "
            f"{sum(outside) / len(outside):.2f} s |"
        )
    print(f"| all RUNNING in vm info | {running:.1f} s |")
    print(f"| ratio to target ({TARGET_S:g} s) | {running / TARGET_S:.2f}x |")
    print(f"| constraint violations | {len(problems)} |")
    print(
        f"| daemon CPU during submits, all {args.nodes} | {sum(cpu):.1f} s "
        f"({sum(cpu) / submitted:.2f} cores; busiest {max(cpu):.1f} s) |"
    )
    polled = sum(b - a for a, b in zip(cpu0, cpu1, strict=True))
    print(f"| daemon CPU incl. vm info polling | {polled:.1f} s |")
    print(f"| `dvms submit` processes' CPU, all | {cli_cpu:.1f} s |")
    per_vm = grams / max(n_accepted, 1)
    print(f"| UDP datagrams accepted, all daemons | {grams:,} ({per_vm:.0f} per VM) |")
    print(f"| machine CPU busy during submits (all users) | {busy_share:.0%} of {os.cpu_count()} |")
    print(
        f"| peak RSS per daemon | max {max(sampler.peak) / 2**20:.0f} MB, "
        f"mean {sum(sampler.peak) / len(procs) / 2**20:.0f} MB |"
    )
    if spent:
        own = sum(spent.values())
        print(
            f"| metrics code during submits, all daemons (their own measure) | {own:.3f} s "
            f"({own / sum(cpu):.2%} of daemon CPU; counting {spent.get('observe', 0):.3f} s, "
            f"scrapes {spent.get('scrape', 0):.3f} s) |"
        )
    if args.idle_s > 0:
        print(f"| daemon CPU, {args.idle_s:g} s at rest after the launch | {idle_cpu:.2f} s |")
    print(f"| load average after (1, 5 min) | {load[0]:.2f}, {load[1]:.2f} |")
    if scraper is not None:
        print(
            f"| /metrics scrapes (every {args.scrape_s:g} s per node) | {scraper.scrapes} "
            f"({scraper.failed} failed), mean {scraper.bytes / max(scraper.scrapes, 1):,.0f} B |"
        )
    if numbers is not None:
        numbers.update(
            submitted_s=submitted,
            running_s=running,
            daemon_cpu_s=sum(cpu),
            daemon_cpu_polled_s=polled,
            idle_cpu_s=idle_cpu if args.idle_s > 0 else 0.0,
            load_1min=load[0],
            placed=n_accepted,
        )
        if spent:
            numbers["metrics_share"] = sum(spent.values()) / sum(cpu)
    for p in problems[:20]:
        print(f"  violation: {p}")
    dead = [r["name"] for r, p in zip(rows, procs, strict=True) if not _alive(p)]
    if dead:
        print(f"daemons that died during the run: {', '.join(dead)}")
    if args.profile:
        cluster_down(d / "cluster")  # SIGTERM: the daemons write their profiles
        print_profile(d / "cluster", args.nodes, cpu)
    ok = not problems and not errors and not dead and running <= TARGET_S
    return 0 if ok else 1


def metrics_cost(args: argparse.Namespace, d: Path) -> int:
    """The same measurement with metrics off and on, ``--metrics-cost`` pairs: each pair
    runs both modes back to back on fresh clusters, alternating which goes first (ABBA:
    the machine's load drifts), and after the launch each cluster sits ``--idle-s`` with
    the scraper running (metrics on) or not, its daemon CPU measured alone. The ratio
    on/off is taken per pair, then summarised: median, lowest, highest. Daemon CPU
    (psutil, user + system of the daemon processes) is what other jobs on a shared
    machine disturb least; wall times are printed beside it."""
    pairs: list[dict[bool, dict[str, float]]] = []
    rc = 0
    for i in range(args.metrics_cost):
        pair: dict[bool, dict[str, float]] = {}
        for on in (False, True) if i % 2 == 0 else (True, False):
            sub = d / f"pair{i + 1}-{'on' if on else 'off'}"
            sub.mkdir(parents=True, exist_ok=True)
            print(f"\n## pair {i + 1}, metrics {'on' if on else 'off'}")
            numbers: dict[str, float] = {}
            try:
                rc |= run(args, sub, metrics=on, numbers=numbers)
            finally:
                if (sub / "cluster" / "cluster.json").exists():
                    cluster_down(sub / "cluster")
            complete = numbers.pop("placed", 0) == args.vms
            if complete and all(math.isfinite(v) for v in numbers.values()):
                pair[on] = numbers
            else:  # a daemon died, a vjob was refused or a VM never ran: not comparable
                print(f"pair {i + 1}, metrics {'on' if on else 'off'}: left out")
        if len(pair) == 2:
            pairs.append(pair)
    if not pairs:
        print("no complete pair with metrics off and on")
        return 1
    loads = [p[m]["load_1min"] for p in pairs for m in (False, True)]
    print(
        f"\n`python bench/cluster.py --nodes {args.nodes} --vms {args.vms} --metrics-cost "
        f"{args.metrics_cost} --scrape-s {args.scrape_s:g} --idle-s {args.idle_s:g}`: "
        f"{len(pairs)} complete pairs, load average (1 min) {min(loads):.2f}-{max(loads):.2f}"
    )
    print("\n| measure | metrics off, median | metrics on, median | on / off per pair: "
          "median (lowest-highest) |")  # fmt: skip
    print("|---|---:|---:|---:|")
    every: dict[str, list[float]] = {}
    for key, what in (
        ("daemon_cpu_s", f"daemon CPU during submits, all {args.nodes} daemons, s"),
        ("daemon_cpu_polled_s", "daemon CPU until all RUNNING (vm info polling incl.), s"),
        ("idle_cpu_s", f"daemon CPU, {args.idle_s:g} s idle after the launch, s"),
        ("submitted_s", "last submit returned, s"),
        ("running_s", "all RUNNING in vm info, s"),
    ):
        off = statistics.median(p[False][key] for p in pairs)
        on = statistics.median(p[True][key] for p in pairs)
        ratios = sorted(p[True][key] / p[False][key] for p in pairs if p[False][key] > 0)
        spread = (
            f"{statistics.median(ratios):.3f} ({ratios[0]:.3f}-{ratios[-1]:.3f})" if ratios else "-"
        )
        print(f"| {what} | {off:.2f} | {on:.2f} | {spread} |")
        every[what] = ratios
    for what, ratios in every.items():  # each pair's ratio, for the spread
        print(f"{what}: on/off per pair {', '.join(f'{r:.3f}' for r in ratios)}")
    shares = sorted(p[True]["metrics_share"] for p in pairs if "metrics_share" in p[True])
    if shares:
        print(
            f"metrics code's own time during submits (dvms_metrics_seconds_total) / daemon "
            f"CPU, runs with metrics on: median {statistics.median(shares):.3%} "
            f"({shares[0]:.3%}-{shares[-1]:.3%})"
        )
    return rc


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def keep_logs(cluster: Path) -> Path | None:
    """Copy every node's log out of the cluster directory (``down`` removes it)."""
    logs = sorted(cluster.glob("node*/node.log"))
    if not logs:
        return None
    out = Path(tempfile.mkdtemp(prefix="dvms-bench-logs-"))
    for log in logs:
        shutil.copy(log, out / f"{log.parent.name}.log")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=16)
    ap.add_argument("--vms", type=int, default=1000)
    ap.add_argument("--submitters", type=int, default=4)
    ap.add_argument("--vjobs-per-submitter", type=int, default=5)
    ap.add_argument("--host-cpus", type=int, default=HOST_CPUS, help="CPUs per test host")
    ap.add_argument("--host-memory", type=int, default=16384, help="MiB per test host")
    ap.add_argument("--spread", type=int, default=SPREAD, help="spread group size per vjob")
    ap.add_argument("--profile", action="store_true", help="cProfile the daemons")
    ap.add_argument("--keep", action="store_true", help="leave the cluster running")
    ap.add_argument("--dir", help="work directory (default: a new temporary one)")
    ap.add_argument(
        "--no-metrics", dest="metrics", action="store_false", help="daemons without /metrics"
    )
    ap.add_argument(
        "--metrics-cost",
        type=int,
        metavar="ROUNDS",
        default=0,
        help="measure ROUNDS times with metrics off and on (alternating, a fresh cluster "
        "each) and print the medians and their ratio",
    )
    ap.add_argument(
        "--scrape-s", type=float, default=1.0, help="scrape period with metrics on, s (1)"
    )
    ap.add_argument(
        "--idle-s",
        type=float,
        default=0.0,
        help="after the launch, measure the daemons' CPU over this many seconds at rest "
        "(scraped when metrics are on); 0: skip",
    )
    args = ap.parse_args(argv)
    if min(args.nodes, args.vms, args.submitters, args.vjobs_per_submitter) < 1:
        ap.error("--nodes, --vms, --submitters and --vjobs-per-submitter must be >= 1")
    d = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="dvms-bench-"))
    d.mkdir(parents=True, exist_ok=True)
    rc = 1
    try:
        rc = metrics_cost(args, d) if args.metrics_cost else run(args, d, metrics=args.metrics)
        return rc
    except ClusterError as exc:
        print(f"cluster: {exc}", file=sys.stderr)
        return 1
    finally:
        if rc != 0 and not args.keep and (kept := keep_logs(d / "cluster")):
            print(f"node logs kept in {kept}")
        if not args.keep:
            if (d / "cluster" / "cluster.json").exists():
                cluster_down(d / "cluster")
            if not args.dir:
                shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
