"""Placement engine benchmarks: ``python bench/placement.py [--quick]``.

Prints one table row per case: the measured time, the target, and measured/target
(below 1.0 = target met). Every result is also verified with the independent checker
(the ``ok`` column); the checker's time is not counted.

    (a) 10,000 VMs launched on 100 hosts, least load (minimega's benchmark size) <= 1 s
    (b) overload relief in a 32-host / 320-VM partition with constraints, p50 <= 20 ms
    (c) 1,000 hosts / 10,000 VMs, 30 % of the VMs under spread or among         <= 5 s
    (d) each shared BtrPlace instance (../shared/data/btrplace)
    (e) a TDSC-sized repair: 5,000 nodes / 30,000 VMs after a load spike on 25 % of
        the VMs, 30 % of the VMs in spread triples (BtrPlace reports ~3 min, TDSC 2013)
    (f) each shared instance of BtrPlace's TDSC benchmark (../shared/data/btrplace/tdsc),
        through the whole command ``dvms solve --btrplace FILE --json`` in a child
        process: solve_s (the engine) <= 10 s, total_s (reading the file, solving,
        checking, printing) <= 60 s, peak RSS <= 2 GB, viable per the checker. read_s
        is the time to decompress and parse the file alone, measured in the same run:
        total_s / read_s says how the whole command compares with merely reading it,
        whatever the machine's load.

``--tdsc only`` runs (f) alone, ``--tdsc no`` leaves it out (it takes a minute or two).
``dvms solve`` runs the engine's local search on a BtrPlace instance by default (the
instance names its objective); ``--local-search N`` runs the (f) rows a second time
with ``dvms solve --local-search N`` (0: the greedy plan alone).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

from dvms.placement import (
    Host,
    PlacementConfig,
    Snapshot,
    Vm,
    check_placement,
    check_plan,
    load_instance,
    solve_launch,
    solve_repair,
)
from dvms.placement import constraints as c

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "btrplace"
TDSC = DATA / "tdsc"
#: Targets of (f): engine time, whole command, peak memory.
TDSC_SOLVE_S, TDSC_TOTAL_S, TDSC_RSS_MB = 10.0, 60.0, 2048.0


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def case_a() -> tuple[float, bool]:
    hosts = tuple(Host(f"h{i:03}", cpus=64, memory_mib=512 * 1024) for i in range(100))
    rng = random.Random(1)
    vms = []
    for b in range(100):  # 100 batches of 100 equal VMs, as `vm launch kvm 100` x 100
        vcpus, mem = rng.choice([1, 2, 4]), rng.choice([512, 1024, 2048])
        vms += [Vm(f"b{b}-{i}", vcpus=vcpus, memory_mib=mem, state="ready") for i in range(100)]
    cfg = PlacementConfig(cpu_overcommit=None)
    dt, r = _timed(lambda: solve_launch(Snapshot(hosts), vms, (), cfg))
    return dt, r.ok and _launch_ok(Snapshot(hosts), vms, (), r.placement, cfg)


def _launch_ok(snap, vms, cons, placement, cfg) -> bool:
    checks = [*cons, c.Running(tuple(vm.key for vm in vms))]
    return check_placement(snap.with_vms(vms), checks, placement, cfg) == []


def partition(seed: int, n_hosts: int = 32, per_host: int = 10):
    """A partition with some overloaded hosts, spread groups, a ban and an among."""
    rng = random.Random(seed)
    hosts = tuple(Host(f"h{i:02}", cpus=32, memory_mib=256 * 1024) for i in range(n_hosts))
    vms = []
    for i in range(n_hosts * per_host):
        host = hosts[i % n_hosts].name
        hot = i % n_hosts < 3  # three hot hosts
        demand = rng.uniform(3.0, 4.5) if hot else rng.uniform(0.5, 2.5)
        vms.append(
            Vm(
                f"v{i:03}",
                vcpus=4,
                memory_mib=rng.choice([2048, 4096, 8192]),
                host=host,
                cpu_demand=demand,
            )
        )
    names = [vm.key for vm in vms]
    cons: list = []
    for g in range(16):  # spread groups of 4 VMs already on distinct hosts
        cons.append(c.Spread(tuple(names[g * 4 + k * 33 % len(names)] for k in range(4))))
    cons.append(c.Ban(tuple(names[:5]), frozenset({"h31"})))
    half = frozenset(h.name for h in hosts[:16]), frozenset(h.name for h in hosts[16:])
    cons.append(c.Among(tuple(names[i] for i in range(0, 64, 32)), half))
    return Snapshot(hosts, tuple(vms)), cons


def case_b(runs: int) -> tuple[float, bool]:
    cfg = PlacementConfig()
    times, ok = [], True
    for seed in range(runs):
        snap, cons = partition(seed)
        dt, plan = _timed(lambda: solve_repair(snap, cons, cfg, relief=True))  # noqa: B023
        times.append(dt)
        ok &= plan.status == "solved" and plan.migrations > 0
        ok &= check_plan(snap, cons, plan.actions, cfg, relief=True) == []
    return statistics.median(times), ok


def case_c() -> tuple[float, bool]:
    rng = random.Random(3)
    hosts = tuple(Host(f"n{i:04}", cpus=48, memory_mib=384 * 1024) for i in range(1000))
    racks = tuple(frozenset(h.name for h in hosts[r * 100 : (r + 1) * 100]) for r in range(10))
    vms = [
        Vm(
            f"vm{i:05}",
            vcpus=rng.choice([1, 2, 4]),
            memory_mib=rng.choice([1024, 2048, 4096]),
            state="ready",
        )
        for i in range(10_000)
    ]
    keys = [vm.key for vm in vms]
    rng.shuffle(keys)
    cons: list = []
    # 30 % of the VMs: 150 spread groups of 10 and 150 among groups of 10
    for g in range(150):
        cons.append(c.Spread(tuple(keys[g * 10 : g * 10 + 10])))
    for g in range(150, 300):
        cons.append(c.Among(tuple(keys[g * 10 : g * 10 + 10]), racks))
    cfg = PlacementConfig()
    dt, r = _timed(lambda: solve_launch(Snapshot(hosts), vms, cons, cfg))
    return dt, r.ok and _launch_ok(Snapshot(hosts), vms, cons, r.placement, cfg)


def case_d(name: str, runs: int) -> tuple[float, bool]:
    inst = load_instance(DATA / name)
    cfg = PlacementConfig.btrplace()
    times = []
    plan = None
    for _ in range(runs):
        dt, plan = _timed(lambda: solve_repair(inst.snapshot, inst.constraints, cfg))
        times.append(dt)
    assert plan is not None
    ok = (
        plan.status == "solved"
        and check_plan(inst.snapshot, inst.constraints, plan.actions, cfg) == []
    )
    return statistics.median(times), ok


def case_e() -> tuple[float, bool]:
    rng = random.Random(11)
    n_nodes, n_vms = 5000, 30_000
    per = n_vms // n_nodes
    hosts = tuple(
        Host(str(n), capacity={"cpu": 4 * per + 8, "mem": 4096 * per}) for n in range(n_nodes)
    )
    vms = tuple(
        Vm(
            str(v),
            vcpus=0,
            memory_mib=0,
            host=str(v % n_nodes),
            usage={"cpu": rng.choice([1, 2, 4]), "mem": rng.choice([1024, 2048, 4096])},
            durations={"migrate": 1},
        )
        for v in range(n_vms)
    )
    cons: list = [
        c.Preserve((str(v),), "cpu", vms[v].usage["cpu"] + 6)
        for v in rng.sample(range(n_vms), n_vms // 4)
    ]
    order = list(range(n_vms))
    rng.shuffle(order)
    cons += [
        c.Spread(tuple(str(v) for v in order[i : i + 3]), continuous=False)
        for i in range(0, int(n_vms * 0.3), 3)
    ]
    snap, cfg = Snapshot(hosts, vms), PlacementConfig.btrplace()
    dt, plan = _timed(lambda: solve_repair(snap, cons, cfg))
    return dt, plan.status == "solved" and check_plan(snap, cons, plan.actions, cfg) == []


#: ``dvms`` in the child, then its peak RSS (VmHWM: this program's own, unlike the
#: rusage of a child, which counts the parent's memory at fork) as the last stderr line.
_CHILD = (
    "import sys; from dvms.cli.main import main; rc = main(sys.argv[1:]); "
    "print(*[x for x in open('/proc/self/status') if x.startswith('VmHWM')], "
    "file=sys.stderr, end=''); sys.exit(rc)"
)


def case_f(path: Path, local_search: int | None = None) -> dict:
    """One TDSC instance through ``dvms solve --btrplace`` in a child process (with
    ``--local-search`` when ``local_search`` is given)."""
    t0 = time.perf_counter()
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        json.load(fh)
    read_s = time.perf_counter() - t0
    cmd = [sys.executable, "-c", _CHILD, "solve", "--btrplace", str(path), "--json"]
    if local_search is not None:
        cmd += ["--local-search", str(local_search)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    child = subprocess.run(cmd, capture_output=True, env=env, check=False)
    total_s = time.perf_counter() - t0
    lines = child.stderr.decode().splitlines()
    if child.returncode not in (0, 3) or not lines or not lines[-1].startswith("VmHWM:"):
        raise SystemExit(f"{path.name}: dvms solve failed: {child.stderr.decode().strip()}")
    rss_mb = int(lines[-1].split()[1]) / 1024  # kB
    doc = json.loads(child.stdout)
    return {
        "instance": path.name.removesuffix(".json.gz"),
        "solve_s": doc["solve_s"],
        "total_s": total_s,
        "read_s": read_s,
        "rss_mb": rss_mb,
        "actions": len(doc["actions"]),
        "migrations": doc["migrations"],
        "duration_s": doc["duration_s"],
        "viable": bool(doc["viable"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument(
        "--tdsc", choices=("yes", "no", "only"), default="yes", help="the TDSC rows (f)"
    )
    parser.add_argument(
        "--local-search",
        type=int,
        default=None,
        metavar="N",
        help="the TDSC rows also with `dvms solve --local-search N` (0: the greedy plan)",
    )
    args = parser.parse_args()
    if args.tdsc != "only":
        _main_cases(args)
    if args.tdsc != "no":
        _tdsc_rows()
        if args.local_search is not None:
            _tdsc_rows(args.local_search)


def _main_cases(args: argparse.Namespace) -> None:
    runs = 5 if args.quick else 21
    rows = [
        ("(a) launch 10k VMs / 100 hosts", *case_a(), 1.0),
        ("(b) relief 32 hosts / 320 VMs p50", *case_b(runs), 0.020),
        ("(c) launch 10k VMs / 1k hosts, 30% spread/among", *case_c(), 5.0),
    ]
    for name in ("IssuesTest.testFoo.json", "IssuesTest.issue72c.json", "issue-131-1.json.gz"):
        if (DATA / name).exists():
            rows.append((f"(d) btrplace {name} p50", *case_d(name, runs), None))
    rows.append(("(e) repair 30k VMs / 5k nodes, spike + spread", *case_e(), None))
    print(f"{'case':<50} {'measured':>10} {'target':>8} {'ratio':>6}  ok")
    for label, seconds, ok, target in rows:
        t = f"{target * 1000:.0f} ms" if target is not None else "-"
        ratio = f"{seconds / target:.2f}" if target else "-"
        print(f"{label:<50} {seconds * 1000:>7.1f} ms {t:>8} {ratio:>6}  {'yes' if ok else 'NO'}")


def _tdsc_rows(local_search: int | None = None) -> None:
    files = sorted(TDSC.glob("*.json.gz"))
    if not files:
        print(f"(f) no TDSC instance in {TDSC}")
        return
    print()
    if local_search is not None:
        print(f"(f) with --local-search {local_search}")
    head = (
        f"{'(f) TDSC instance':<20} {'solve_s':>8} {'/10s':>5} {'total_s':>8} {'/60s':>5} "
        f"{'read_s':>7} {'tot/read':>8} {'RSS MB':>7} {'/2GB':>5} {'actions':>7} "
        f"{'migr':>5} {'plan_s':>6}  viable"
    )
    print(head)
    for path in files:
        r = case_f(path, local_search)
        print(
            f"{r['instance']:<20} {r['solve_s']:>8.2f} {r['solve_s'] / TDSC_SOLVE_S:>5.2f} "
            f"{r['total_s']:>8.2f} {r['total_s'] / TDSC_TOTAL_S:>5.2f} {r['read_s']:>7.2f} "
            f"{r['total_s'] / r['read_s']:>8.1f} {r['rss_mb']:>7.0f} "
            f"{r['rss_mb'] / TDSC_RSS_MB:>5.2f} {r['actions']:>7} {r['migrations']:>5} "
            f"{r['duration_s']:>6}  {'yes' if r['viable'] else 'NO'}",
            flush=True,
        )


if __name__ == "__main__":
    main()
