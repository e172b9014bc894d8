"""Plan quality: the engine's repair plans against the optimum of an exact CP model.

    python bench/plan_quality.py [--json] [--quick] [--sizes 8,16,32,64] [--per-mix N]
                                 [--time-limit S] [--local-search-evals N] [--tdsc FILE]
                                 [--engine-repeat N]

Instances are overload-relief repairs of one DVMS partition (8, 16, 32, 64 hosts) with
VMPlaceS loads: hosts of 7 cores (700 units) and 32 GiB, 10 VMs of 1 vCPU / 1 GiB, each
VM's demand drawn from N(60, 20^2) clipped to [0, 100] and rounded to tens; one host in
eight is overloaded (above 90 % of its capacity, the simulator's ``relief_target``), the
others are not. Constraint mixes: ``none``, ``spread`` (groups of 2-4 VMs on distinct
hosts), ``among`` (groups of VMs kept inside one half of the partition), ``ban`` and
``fence`` (some VMs must leave some hosts), ``mix`` (all of them). Migrations take
memory / 125 MiB/s (1 Gb/s, the simulator's link): 9 s for 1 GiB.

Each instance is solved by ``solve_repair(relief=True)`` (checked by ``check_plan``) and
by ``bench/oracle.py`` (OR-Tools CP-SAT, one solve per objective: migrations, memory
moved, plan duration). The engine's value over the optimum is its ratio (1.0 = optimal);
an oracle solve that hits its time cap is compared with a proven lower bound, so ratios
never flatter the engine (and an engine value equal to that bound counts as optimal).
The oracle gets the engine's plan as a hint and its value as an upper bound: that
makes it much faster (ten times or more on the plan duration) and only ever narrows
its search. ``oracle_alone_cpu_ms_mean`` is the exact model without them (fewest
migrations).
Times are wall seconds, both measured in the same run (the engine is single-threaded,
CP-SAT runs 2 workers): on a loaded machine both grow. Each engine is timed against
the oracle's solve of the objective that engine ranks first (``oracle_objective``):
fewest migrations for the greedy engine and the first local search, the shortest
plan for the ``mttr`` one (the exact model takes about ten times longer on that).
CPU times are reported too (``*_cpu_ms_mean``): the oracle's are its process's,
summed over its workers, the engine's its own thread's (it is single-threaded); they
move less with the load. The engine's times are taken in rounds over all the instances
of a size (every variant), one before the oracle's first solve and one after its work
on each instance, so they span the same minutes as the oracle's (this machine's speed
drifts with other tenants: one pass of a few milliseconds would land in one slow or
fast period). Each round starts with an unmeasured solve, then solves every instance
``--engine-repeat N`` times in a row: ``engine_cpu_ms_mean`` (``cpu_speedup``) is the
mean over instances of the median over rounds of the first of those solves, which
follows solves of the other instances (its snapshot not the last one read, the code
warm, as a daemon's next repair); ``engine_warm_cpu_ms_mean`` (``cpu_warm_speedup``)
the same of the fastest of the others (caches warm on that instance).
``engine_after_oracle_cpu_ms_mean`` (``cpu_after_oracle_speedup``) is one more solve
of each instance right after a CP-SAT solve of it, which evicts the engine's code and
data from the CPU caches (the worst case: a repair right after other heavy work; the
exact model's Python garbage is collected first, outside the timing, or the engine's
solve would pay for it: up to 20 ms at 64 hosts). ``probe_cpu_ms`` times a fixed
interpreter workload of about the 8-host repair's size (:func:`_probe`) the same two
ways, so a reader sees what any Python code of that size pays for those cache misses.
With ``--local-search-evals N`` the engine also runs its local search pass
(``PlacementConfig.local_search_evals``), once per objective (``PlacementConfig.objective``:
``migrations`` ranks fewest migrations first, ``mttr`` the shortest plan first), and the
three rows are printed: the migrations ratio is the target of the first two, the MTTR
ratio the target of the ``mttr`` one (the two optima can need different plans).
The engine runs from the source, or from its compiled build with ``DVMS_ACCEL=1``
(``make accel``); the output names the build measured (``build``, and in the stamp).
With ``--tdsc FILE`` each size also gets sub-problems cut from a TDSC instance
(``tdsc_cuts``; repair, not relief; ``preserve`` raises demands). Only migrations are
compared there: the engine times the ``allocate`` actions of growing VMs and the oracle
does not, and TDSC VMs carry memory as a BtrPlace view, not as MiB to move.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import platform
import random
import statistics
import subprocess
import sys
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._builds import build_label
from bench.oracle import OBJECTIVES, engine_cost, solve
from dvms.placement import Host, PlacementConfig, Snapshot, Vm, check_plan, solve_repair
from dvms.placement import constraints as c

MIXES = ("none", "spread", "among", "ban", "fence", "mix")
CAPACITY = 700  # VMPlaceS: 7 usable cores x 100
THRESHOLD = 0.9  # vmplaces scenarios: relief_target
PER_HOST = 10
TARGET_RATIO = 1.10
TARGET_SPEEDUP = 100.0
#: objectives reported: each optimum alone, and the plan duration at no more
#: migrations than the engine made (the engine's own priority: few migrations first)
REPORTED = (*OBJECTIVES, "mttr_same_migrations")


def _demands(rng: random.Random, hot: bool) -> list[int]:
    """Ten VMPlaceS demands (units of 1/100 core) for a host that is (not) overloaded."""
    limit = CAPACITY * THRESHOLD
    while True:
        d = [min(100, max(0, round(rng.gauss(60, 20) / 10) * 10)) for _ in range(PER_HOST)]
        if (sum(d) > limit) == hot:
            return d


def instance(size: int, mix: str, seed: int) -> tuple[Snapshot, list[c.Constraint]]:
    """One partition of ``size`` hosts under VMPlaceS load with constraint mix ``mix``."""
    rng = random.Random(f"{size}-{mix}-{seed}")
    hosts = tuple(Host(f"h{i:02}", cpus=7, memory_mib=32768) for i in range(size))
    hot = set(rng.sample(range(size), max(1, size // 8)))
    vms: list[Vm] = []
    for h in range(size):
        for k, d in enumerate(_demands(rng, h in hot)):
            vms.append(Vm(f"v{h:02}-{k}", vcpus=1, memory_mib=1024, host=hosts[h].name,
                          cpu_demand=d / 100))  # fmt: skip
    return Snapshot(hosts, tuple(vms)), _constraints(rng, mix, hosts, vms)


def _constraints(rng: random.Random, mix: str, hosts, vms: list[Vm]) -> list[c.Constraint]:
    names = [h.name for h in hosts]
    out: list[c.Constraint] = []
    on = {h: [vm.key for vm in vms if vm.host == h] for h in names}
    if mix in ("spread", "mix"):  # vjobs of 2-4 VMs already on distinct hosts
        for _ in range(max(2, len(hosts) // 2)):
            k = rng.randint(2, min(4, len(hosts)))
            out.append(c.Spread(tuple(rng.choice(on[h]) for h in rng.sample(names, k))))
    if mix in ("among", "mix"):  # VMs kept inside one half (they are now)
        half = len(names) // 2
        groups = (frozenset(names[:half]), frozenset(names[half:]))
        for _ in range(max(1, len(hosts) // 8)):
            g = rng.choice(groups)
            out.append(c.Among(tuple(rng.choice(on[h]) for h in rng.sample(sorted(g), 2)), groups))
    if mix in ("ban", "mix"):  # a host being drained of a few VMs
        h = rng.choice(names)
        out.append(c.Ban(tuple(rng.sample(on[h], 2)), frozenset({h})))
    if mix in ("fence", "mix"):  # a few VMs must end on a quarter of the hosts
        zone = frozenset(rng.sample(names, max(2, len(names) // 4)))
        picks = rng.sample([vm.key for vm in vms], max(2, len(hosts) // 8))
        out.append(c.Fence(tuple(picks), zone))
    return out


def tdsc_cuts(path: str, size: int, count: int) -> list[tuple[Snapshot, list[c.Constraint]]]:
    """``count`` sub-problems of ``size`` hosts cut from a TDSC instance: an overloaded
    node (its ``preserve`` demands exceed a capacity) and the next nodes by id (a rack
    of the benchmark is a range of ids), their VMs, and every constraint restricted to
    them (spread and among members inside the cut, among groups cut to its nodes)."""
    inst = _load(path)
    snap = inst.snapshot
    hosts = sorted(snap.hosts, key=lambda h: (len(h.name), h.name))
    on: dict[str, list[Vm]] = {}
    for vm in snap.vms:
        if vm.host is not None:
            on.setdefault(vm.host, []).append(vm)
    need: dict[tuple[str, str], int] = {}
    for k in inst.constraints:
        if isinstance(k, c.Preserve):
            for key in k.vms:
                need[key, k.resource] = k.amount

    def over(h: Host) -> bool:
        return any(
            sum(max(vm.demand(r), need.get((vm.key, r), 0)) for vm in on.get(h.name, ())) > cap
            for r, cap in h.capacity.items()
        )

    seeds = [i for i, h in enumerate(hosts) if over(h)]
    rng = random.Random(f"tdsc-{size}")
    out = []
    for i in rng.sample(seeds, min(count, len(seeds))):
        part = hosts[max(0, min(i - size // 2, len(hosts) - size)) :][:size]
        names = {h.name for h in part}
        vms = tuple(vm for vm in snap.vms if vm.host in names)
        out.append((Snapshot(tuple(part), vms), _restrict(inst.constraints, vms, names)))
    return out


_LOADED: dict[str, object] = {}


def _load(path: str):
    from dvms.placement import load_instance

    if path not in _LOADED:
        _LOADED[path] = load_instance(path)
    return _LOADED[path]


def _restrict(constraints, vms, names: set[str]) -> list[c.Constraint]:
    keys = {vm.key for vm in vms}
    out: list[c.Constraint] = []
    for k in constraints:
        members = tuple(v for v in getattr(k, "vms", ()) if v in keys)
        if isinstance(k, c.Spread) and len(members) >= 2:
            out.append(replace(k, vms=members))
        elif isinstance(k, c.Among) and members:
            groups = tuple(g & names for g in k.groups if g & names)
            if groups:
                out.append(replace(k, vms=members, groups=groups))
        elif isinstance(k, c.Preserve) and members:
            out.append(replace(k, vms=members))
    return out


def _config(local_search_evals: int, objective: str = "migrations") -> PlacementConfig:
    cfg = PlacementConfig(migration_mib_per_s=125.0, overload_threshold=THRESHOLD)
    if local_search_evals:
        cfg = replace(cfg, local_search_evals=local_search_evals, objective=objective)
    return cfg


def engine_round(cases: list, cfg, *, relief: bool, repeat: int, into: list[dict]) -> None:
    """One round of the engine over every case: ``repeat`` solves of each in a row. The
    first follows solves of the other cases (its snapshot not the last one read, the
    code warm, as a daemon's next repair): appended to ``into[i]["turn"]`` (CPU) and
    ``["turn_s"]`` (wall); the fastest of the others (caches warm on that instance) to
    ``["warm"]``. ``into[i]["plan"]`` is the plan (the same in every round)."""
    for i, (_, snap, cons) in enumerate(cases):
        cpus = []
        for k in range(max(1, repeat)):
            t0, c0 = time.perf_counter(), time.thread_time()
            plan = solve_repair(snap, cons, cfg, relief=relief)
            cpus.append(time.thread_time() - c0)
            if k == 0:
                into[i].setdefault("turn_s", []).append(time.perf_counter() - t0)
        into[i]["plan"] = plan
        into[i].setdefault("turn", []).append(cpus[0])
        into[i].setdefault("warm", []).append(min(cpus[1:] or cpus))


def run_one(
    snap,
    cons,
    cfg,
    plan,
    time_limit: float,
    cache: dict,
    *,
    relief: bool = True,
    name: str = "",
) -> dict | None:
    """The oracle on one instance and the engine's ``plan`` of it; ``cache``
    keeps oracle answers across engine variants (the optimum does not depend on the
    engine; ``upper`` and ``hint`` from any engine plan only narrow the search). Also
    timed here: the exact model without the engine's plan as a hint and upper bound,
    and the engine's solve right after it (caches evicted)."""
    c0 = time.process_time()
    solve(snap, cons, cfg, relief=relief, objective="migrations", time_limit_s=time_limit)
    alone_cpu = time.process_time() - c0
    gc.collect()  # the exact model's garbage: not the engine's to collect
    c0 = time.thread_time()
    solve_repair(snap, cons, cfg, relief=relief)
    after_oracle_cpu = time.thread_time() - c0
    got = engine_cost(plan, snap) if plan.status == "solved" else {}
    hint = dict(plan.placement) if plan.status == "solved" else None
    moves = [a for a in plan.actions if a.kind == "migrate"]
    once = {k for k, n in Counter(a.vm for a in moves).items() if n == 1}  # no pivot
    starts = {a.vm: a.start for a in moves if a.vm in once}

    def oracle_of(objective: str, cap: int | None = None):
        key = (objective, cap)
        if key not in cache:
            upper = got.get(objective)
            c0 = time.process_time()
            cache[key] = solve(snap, cons, cfg, relief=relief, objective=objective,
                               time_limit_s=time_limit, upper=upper, max_migrations=cap,
                               hint=hint, hint_starts=starts)  # fmt: skip
            cache["cpu", objective, cap] = time.process_time() - c0
        return cache[key]

    oracle = {o: oracle_of(o) for o in OBJECTIVES}
    # the engine is timed against the oracle's solve of the objective it ranks first
    target = cfg.objective
    if got:  # the plan duration at no more migrations than the engine's
        oracle["mttr_same_migrations"] = oracle_of("mttr", got["migrations"])
        got["mttr_same_migrations"] = got["mttr"]
    if "probe" not in cache:  # the reference workload, right after CP-SAT and warm
        gc.collect()
        cache["probe"] = (_timed(_probe), _timed(_probe))
    if oracle["migrations"].status == "infeasible":
        return {"feasible": False, "engine": plan.status, "oracle_s": oracle[target].seconds}
    if plan.status != "solved":
        return {"feasible": True, "engine": plan.status, "oracle_s": oracle[target].seconds}
    problems = check_plan(snap, cons, plan.actions, cfg, relief=relief)
    if problems:
        raise SystemExit(f"checker rejects an engine plan: {problems[0]}")
    row: dict = {"feasible": True, "engine": "solved",
                 "engine_after_oracle_cpu_s": after_oracle_cpu,
                 "oracle_cpu_s": cache["cpu", target, None], "oracle_objective": target,
                 "oracle_alone_cpu_s": alone_cpu, "probe_cpu_s": cache["probe"]}  # fmt: skip
    # for --show-worst (never in the JSON report)
    row["_case"] = {"name": name, "snap": snap, "cfg": cfg, "relief": relief, "plan": plan,
                    "oracle": oracle}  # fmt: skip
    for o in REPORTED:
        r = oracle[o]
        best = r.value if r.status == "optimal" else r.bound
        assert best is not None, (o, r.status)
        # the engine at a proven lower bound is optimal too
        proven = r.status == "optimal" or got[o] == best
        row[o] = {"engine": got[o], "optimum": best, "proven": proven,
                  "oracle_s": r.seconds}  # fmt: skip
    row["oracle_s"] = oracle[target].seconds
    return row


def _probe() -> int:
    """A fixed interpreter workload of about the 8-host repair's warm CPU time (sorting,
    dicts, tuples, JSON): what any Python code of that size pays after a CP-SAT solve."""
    rng = random.Random(7)
    rows = {f"vm{i}": (rng.random(), i, f"host{i % 8}") for i in range(120)}
    by_host: dict[str, list] = {}
    for key, (load, i, host) in sorted(rows.items(), key=lambda kv: kv[1]):
        by_host.setdefault(host, []).append((key, load, i))
    text = json.dumps(by_host)
    return len(json.loads(text)) + sum(len(v) for v in by_host.values())


def _timed(fn) -> float:
    c0 = time.thread_time()
    fn()
    return time.thread_time() - c0


def _ratio(engine: int, optimum: int) -> float:
    if optimum == 0:
        return 1.0 if engine == 0 else math.inf
    return engine / optimum


def _p95(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, math.ceil(0.95 * len(xs)) - 1)]


def summarise(size: int, rows: list[dict]) -> dict:
    solved = [r for r in rows if r["feasible"] and r["engine"] == "solved"]
    out: dict = {
        "hosts": size,
        "instances": len(rows),
        "feasible": sum(r["feasible"] for r in rows),
        "engine_solved": len(solved),
        "engine_missed": sum(r["feasible"] and r["engine"] != "solved" for r in rows),
        "engine_ms_mean": round(1e3 * statistics.mean(r["engine_s"] for r in rows), 2),
        "oracle_ms_mean": round(1e3 * statistics.mean(r["oracle_s"] for r in rows), 1),
    }
    if solved:  # CPU seconds: the oracle's are summed over its worker threads
        out["oracle_objective"] = solved[0]["oracle_objective"]
        out["engine_cpu_ms_mean"] = round(
            1e3 * statistics.mean(r["engine_cpu_s"] for r in solved), 3
        )
        out["oracle_cpu_ms_mean"] = round(
            1e3 * statistics.mean(r["oracle_cpu_s"] for r in solved), 1
        )
        out["oracle_alone_cpu_ms_mean"] = round(
            1e3 * statistics.mean(r["oracle_alone_cpu_s"] for r in solved), 1
        )
        for kind in ("warm_", "after_oracle_"):
            out[f"engine_{kind}cpu_ms_mean"] = round(
                1e3 * statistics.mean(r[f"engine_{kind}cpu_s"] for r in solved), 3
            )
        cold, warm = solved[0]["probe_cpu_s"]
        out["probe_cpu_ms"] = {"after_oracle": round(1e3 * cold, 3), "warm": round(1e3 * warm, 3)}
        for kind in ("", "warm_", "after_oracle_"):
            engine = out[f"engine_{kind}cpu_ms_mean"]
            out[f"cpu_{kind}speedup"] = round(out["oracle_cpu_ms_mean"] / max(engine, 1e-6), 1)
    mttr_s = [r["mttr"]["oracle_s"] for r in solved]
    out["oracle_mttr_ms_mean"] = round(1e3 * statistics.mean(mttr_s), 1) if mttr_s else None
    out["speedup"] = round(out["oracle_ms_mean"] / max(out["engine_ms_mean"], 1e-3), 1)
    for o in REPORTED:
        ratios = [_ratio(r[o]["engine"], r[o]["optimum"]) for r in solved]
        if not ratios:
            continue
        out[o] = {
            "optimal_share": round(sum(x <= 1.0 for x in ratios) / len(ratios), 3),
            "ratio_mean": round(statistics.mean(ratios), 3),
            "ratio_p95": round(_p95(ratios), 3),
            "oracle_proven_share": round(sum(r[o]["proven"] for r in solved) / len(solved), 3),
        }
    return out


def _stamp() -> str:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, check=False).stdout.strip()  # fmt: skip
    load = Path("/proc/loadavg").read_text().split()[0] if Path("/proc/loadavg").exists() else "?"
    return (
        f"commit {commit} · {platform.machine()} Python {platform.python_version()} · load {load}"
        f" · engine build: {build_label()}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print one JSON document")
    ap.add_argument("--quick", action="store_true", help="2 instances per mix, 5 s cap")
    ap.add_argument("--sizes", default="8,16,32,64", help="partition sizes (hosts)")
    ap.add_argument("--per-mix", type=int, default=3, help="instances per size and mix")
    ap.add_argument("--time-limit", type=float, default=20.0, help="oracle cap per solve, s")
    ap.add_argument("--tdsc", metavar="FILE", help="also cut sub-problems from this TDSC instance")
    ap.add_argument("--tdsc-cuts", type=int, default=6, help="sub-problems per size (6)")
    ap.add_argument("--local-search-evals", type=int, default=0,
                    help="also run the engine with this local search budget (plans)")  # fmt: skip
    ap.add_argument("--engine-repeat", type=int, default=1, metavar="N",
                    help="solve each instance N times in a row and also report the fastest "
                         "(engine_warm_cpu_ms_mean); the first, in turn, as well")  # fmt: skip
    ap.add_argument("--show-worst", type=int, default=0, metavar="N",
                    help="print (to stderr) the N instances of each size and engine with the "
                         "worst MTTR ratio, engine plan against the oracle's")  # fmt: skip
    args = ap.parse_args()
    per_mix = 2 if args.quick else args.per_mix
    limit = 5.0 if args.quick else args.time_limit
    # name -> (local search budget, objective)
    variants = {"engine": (0, "migrations")}
    if args.local_search_evals:
        variants["engine+local-search"] = (args.local_search_evals, "migrations")
        variants["engine+ls mttr"] = (args.local_search_evals, "mttr")
    report: dict = {"stamp": _stamp(), "build": build_label(), "target_ratio_p95": TARGET_RATIO,
                    "target_speedup": TARGET_SPEEDUP, "rows": []}  # fmt: skip
    if not args.json:
        print(f"engine build: {report['build']}", flush=True)
    for size in (int(s) for s in args.sizes.split(",")):
        cases = [(f"{size}-{mix}-{seed}", *instance(size, mix, seed))
                 for mix in MIXES for seed in range(per_mix)]  # fmt: skip
        warm_up = ("warm-up", *instance(size, "mix", per_mix))  # another seed, not measured
        rows = _run(cases, warm_up, variants, _config, True, limit, args.engine_repeat)
        _report(report, args.json, size, "", rows)
        if args.show_worst:
            for name, found in rows.items():
                show_worst(name, found, args.show_worst)
        if args.tdsc:
            cuts = tdsc_cuts(args.tdsc, size, args.tdsc_cuts)
            cases = [(f"{size}-tdsc-{i}", snap, cons) for i, (snap, cons) in enumerate(cuts)]
            rows = _run(cases, warm_up, variants, _tdsc_config, False, limit, 1)
            _report(report, args.json, size, " tdsc", rows)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(report["stamp"])


def _tdsc_config(local_search_evals: int, objective: str) -> PlacementConfig:
    return replace(PlacementConfig.btrplace(), local_search_evals=local_search_evals,
                   objective=objective)  # fmt: skip


def _run(
    cases: list[tuple[str, Snapshot, list[c.Constraint]]],
    warm_up: tuple[str, Snapshot, list[c.Constraint]],
    variants: dict[str, tuple[int, str]],
    config,
    relief: bool,
    limit: float,
    repeat: int,
) -> dict[str, list[dict]]:
    """The engine and the oracle over every case, the engine's times spread over the run.

    The engine's rounds (:func:`engine_round`, every variant) run once before the
    oracle's first solve, then again after the oracle's work on each case: a machine
    whose speed drifts (other tenants) then slows the engine's samples and the
    oracle's alike, where one pass of a few milliseconds would land in one period.
    Each round starts with one solve of ``warm_up`` (not measured), so no measured
    solve follows a CP-SAT solve but ``engine_after_oracle_cpu_s``, which
    :func:`run_one` takes so on purpose. A case's times are the medians over rounds."""
    engine: dict[str, list[dict]] = {name: [{} for _ in cases] for name in variants}

    def engine_rounds() -> None:
        gc.collect()  # the exact model's garbage: not the engine's to collect
        for name, (budget, objective) in variants.items():
            cfg = config(budget, objective)
            solve_repair(warm_up[1], warm_up[2], cfg, relief=relief)
            engine_round(cases, cfg, relief=relief, repeat=repeat, into=engine[name])

    engine_rounds()
    found: dict[str, list[tuple[int, dict]]] = {name: [] for name in variants}
    for i, (case, snap, cons) in enumerate(cases):
        cache: dict = {}
        for name, (budget, objective) in variants.items():
            row = run_one(snap, cons, config(budget, objective), engine[name][i]["plan"], limit,
                          cache, relief=relief, name=case)  # fmt: skip
            if row is not None:
                found[name].append((i, row))
        engine_rounds()
    rows: dict[str, list[dict]] = {name: [] for name in variants}
    for name, got in found.items():
        for i, row in got:
            times = engine[name][i]
            row["engine_s"] = statistics.median(times["turn_s"])
            row["engine_cpu_s"] = statistics.median(times["turn"])
            row["engine_warm_cpu_s"] = statistics.median(times["warm"])
            rows[name].append(row)
    return rows


def show_worst(variant: str, rows: list[dict], n: int, out=sys.stderr) -> None:
    """The ``n`` solved instances with the worst MTTR ratio (then migrations): the
    engine's plan and the oracle's shortest one, with the CPU demand of every host
    involved (now / limit), so a gap can be read off the two plans."""
    solved = [r for r in rows if r.get("_case") and "mttr" in r]

    def badness(r: dict) -> tuple:
        return (_ratio(r["mttr"]["engine"], r["mttr"]["optimum"]),
                _ratio(r["migrations"]["engine"], r["migrations"]["optimum"]),
                r["_case"]["name"])  # fmt: skip

    for r in sorted(solved, key=badness, reverse=True)[:n]:
        case = r["_case"]
        snap, cfg, plan = case["snap"], case["cfg"], case["plan"]
        best = case["oracle"]["mttr"]
        parts = [f"{o} {r[o]['engine']}/{r[o]['optimum']}" for o in REPORTED if o in r]
        print(f"== {variant} {case['name']}: engine/optimum " + ", ".join(parts), file=out)
        print("  engine:", file=out)
        for a in plan.actions:
            print(f"    {a}", file=out)
        print(f"  oracle (shortest plan, {best.status}):", file=out)
        where_now = {vm.key: vm for vm in snap.vms}
        for key, start in sorted(best.starts.items(), key=lambda kv: (kv[1], kv[0])):
            vm = where_now[key]
            end = start + vm.duration("migrate", cfg)
            print(f"    {start:>4}:{end:<4} migrate {key} {vm.host} -> {best.placement[key]}",
                  file=out)  # fmt: skip
        hosts = {a.src for a in plan.actions} | {a.dst for a in plan.actions}
        hosts |= {where_now[k].host for k in best.starts} | {best.placement[k] for k in best.starts}
        print("  hosts (cpu demand now / limit):", _loads(snap, cfg, hosts), file=out)


def _loads(snap, cfg, names: set) -> str:
    out = []
    for h in sorted(n for n in names if n):
        host = next(x for x in snap.hosts if x.name == h)
        used = sum(vm.cpu_demand for vm in snap.vms if vm.host == h and vm.cpu_demand)
        limit = host.cpus * cfg.overload_threshold
        out.append(f"{h} {used:.1f}/{limit:.1f}")
    return ", ".join(out)


def _report(report: dict, quiet: bool, size: int, suffix: str, rows: dict) -> None:
    for name, found in rows.items():
        if found:
            summary = {"variant": name + suffix, **summarise(size, found)}
            if suffix:  # migrations only (see the module docstring)
                for key in ("memory", "mttr", "mttr_same_migrations"):
                    summary.pop(key, None)
            report["rows"].append(summary)
            if not quiet:
                print(_line(summary), flush=True)


def _line(s: dict) -> str:
    parts = [
        f"{s['variant']:<20} {s['hosts']:>3} hosts {s['engine_solved']}/{s['feasible']} solved"
    ]
    for o in REPORTED:
        if o in s:
            q = s[o]
            parts.append(f"{o}: opt {q['optimal_share']:.0%} mean {q['ratio_mean']:.2f} "
                         f"p95 {q['ratio_p95']:.2f}")  # fmt: skip
    oracle = f"oracle ({s['oracle_objective']})" if "oracle_objective" in s else "oracle"
    parts.append(f"engine {s['engine_ms_mean']} ms {oracle} {s['oracle_ms_mean']} ms "
                 f"x{s['speedup']}")  # fmt: skip
    if "cpu_speedup" in s:
        probe = s["probe_cpu_ms"]
        parts.append(f"CPU engine {s['engine_cpu_ms_mean']} ms (warm "
                     f"{s['engine_warm_cpu_ms_mean']}, after CP-SAT "
                     f"{s['engine_after_oracle_cpu_ms_mean']}) oracle {s['oracle_cpu_ms_mean']}"
                     f" ms x{s['cpu_speedup']} (warm x{s['cpu_warm_speedup']}, after CP-SAT "
                     f"x{s['cpu_after_oracle_speedup']}); oracle alone (migrations, no hint) "
                     f"{s['oracle_alone_cpu_ms_mean']} ms; probe {probe['warm']} ms, after "
                     f"CP-SAT {probe['after_oracle']} ms")  # fmt: skip
    return " | ".join(parts)


if __name__ == "__main__":
    main()
