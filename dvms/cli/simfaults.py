"""``dvms sim faults``: a fault campaign, N seeded variations of a scenario.

    dvms sim faults --scenario S --runs N --seed S0 [--jobs J | --dask ADDR] [--json]

Each run draws its faults from its seed (the scenario's ``[faults.random]`` rates) and
is checked against the safety invariants (``dvms.sim.faultcampaign``). Exits 1 when any
invariant was violated, so a script or CI job can run it as a test.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace

from dvms.cli.main import UserError

__all__ = ["register"]


def register(ssub: argparse._SubParsersAction) -> None:
    p = ssub.add_parser(
        "faults",
        help="run a fault campaign: seeded variations of a scenario, invariants checked",
        description="Run N seeded variations of a scenario, each with random host crashes "
        "and restarts, daemon freezes, loss bursts, duplication and reordering, network "
        "splits and clock offsets drawn from its seed (the scenario's [faults.random] "
        "rates), and check the safety invariants after each run. Prints the faults per "
        "kind, the violations per invariant and the worst seeds with the command that "
        "replays each. Exits 1 if any invariant was violated.",
    )
    p.add_argument(
        "--scenario",
        required=True,
        help="scenario TOML file or shipped name (e.g. faults-200, faults-small)",
    )
    p.add_argument("--runs", type=int, default=10, help="number of runs (10)")
    p.add_argument(
        "--seed",
        type=int,
        help="seed of the first run; run i uses seed + i (default: the scenario's)",
    )
    p.add_argument("--scheduler", default="dvms", help="a DVMS scheduler (default dvms)")
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        metavar="N",
        help="run N simulations at once in local worker processes (default 1; 0 = one per "
        "CPU); results are the same whichever way they ran",
    )
    p.add_argument(
        "--dask",
        metavar="ADDRESS",
        help="run the simulations on an existing Dask cluster (its scheduler's address)",
    )
    p.add_argument("--worst", type=int, default=5, help="worst seeds to list (5)")
    p.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print one JSON object"
    )
    p.set_defaults(func=faults_cmd)


def faults_cmd(args: argparse.Namespace) -> int:
    from dvms.sim.campaign import CampaignError, default_jobs, run_all
    from dvms.sim.faultcampaign import plan_fault_runs, run_faults_one, summarize
    from dvms.sim.scenario import ScenarioError, load_scenario
    from dvms.sim.schedulers import SCHEDULERS, unknown_scheduler_message

    if args.runs < 1:
        raise UserError("--runs: must be >= 1")
    if args.jobs < 0:
        raise UserError("--jobs: must be >= 0 (0 = one per CPU)")
    if args.jobs not in (0, 1) and args.dask:
        raise UserError("give --jobs or --dask, not both")
    if args.worst < 0:
        raise UserError("--worst: must be >= 0")
    if args.scheduler not in SCHEDULERS:
        raise UserError(unknown_scheduler_message(args.scheduler))
    if not args.scheduler.startswith("dvms"):
        raise UserError("--scheduler: a fault campaign checks the DVMS protocol; give dvms...")
    try:
        base = load_scenario(args.scenario)
    except ScenarioError as exc:
        raise UserError(str(exc)) from None
    seed = base.seed if args.seed is None else args.seed
    runs = plan_fault_runs(replace(base, seed=seed), args.scheduler, args.runs, seed)
    jobs = args.jobs or default_jobs()
    show = not getattr(args, "json", False) and sys.stderr.isatty()
    t0 = time.perf_counter()

    def finished(n: int, _run: object) -> None:
        if show:
            print(f"\r{n}/{len(runs)} runs done", end="", file=sys.stderr, flush=True)

    try:
        records = run_all(runs, jobs=jobs, dask=args.dask, on_done=finished, task=run_faults_one)
    except CampaignError as exc:
        raise UserError(str(exc)) from None
    if show:
        print(file=sys.stderr)
    out = summarize(records, scenario=args.scenario, scheduler=args.scheduler, worst=args.worst)
    out["wall_s"] = round(time.perf_counter() - t0, 1)
    out["jobs"] = 1 if args.dask is None and jobs <= 1 else jobs
    if getattr(args, "json", False):
        from dvms.cli.output import emit

        emit({**out, "records": [r.to_json() for r in records]})
    else:
        print_campaign(out)
    return 1 if out["runs_failed"] else 0


def print_campaign(c: dict) -> None:
    seeds = c["seeds"]
    print(
        f"{c['scenario']} under {c['scheduler']}: {c['runs']} runs, seeds {seeds[0]}..{seeds[1]}, "
        f"{c['wall_s']:g} s wall, {c['cpu_s']:g} s CPU ({c['run_cpu_s_mean']:g} s CPU per run)"
    )
    print("faults        " + ", ".join(f"{k} {v}" for k, v in c["faults"].items() if v))
    print("dropped       " + ", ".join(f"{k} {v}" for k, v in c["dropped"].items()))
    print(f"activity      {c['overload_events']} overload events, {c['migrations']} migrations")
    print("invariant       violations  runs")
    for k, v in c["violations"].items():
        print(f"  {k:14} {v:>10}  {c['runs_with_violations'][k]:>4}")
    verdict = "no violation" if not c["runs_failed"] else f"{c['runs_failed']} runs violated"
    print(f"result        {verdict}")
    if c["worst"]:
        print("worst seeds")
    for w in c["worst"]:
        faults = ", ".join(f"{k} {v}" for k, v in w["faults"].items()) or "none"
        print(f"  seed {w['seed']}: {w['violations']} violations; faults {faults}")
        for e in w["examples"][:2]:
            print(f"      {e}")
        print(f"      replay: {w['replay']}")
