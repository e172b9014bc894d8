"""``dvms sim run`` and ``dvms sim compare``: datacenter scenarios under a scheduler.

    dvms sim run SCENARIO --scheduler S [--seed N] [--solver-time model|measured]
                 [--json] [--out DIR]
    dvms sim compare SCENARIO --schedulers a,b,c [--seeds 5] --out DIR
    dvms sim faithful [--nodes 24] [--seed 23] [--json]

SCENARIO is a TOML path or the name of a shipped scenario (``dvms/sim/scenarios``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from dvms.cli.main import UserError

if TYPE_CHECKING:
    from dvms.sim.scenario import Scenario

__all__ = ["register"]


def register(ssub: argparse._SubParsersAction) -> None:
    run = ssub.add_parser(
        "run",
        help="run a datacenter scenario under one scheduler",
        description="Simulate a datacenter scenario (VMPlaceS load model) under one "
        "scheduler and print its metrics (one JSON object with --json).",
    )
    run.add_argument("scenario", help="scenario TOML file or shipped name (e.g. vmplaces-64)")
    run.add_argument(
        "--scheduler",
        default="dvms",
        help="scheduler: static, centralized, dvms, dvms-ring or dvms-random (default dvms)",
    )
    run.add_argument("--seed", type=int, help="random seed (default: the scenario's)")
    _solver_time_arg(run)
    run.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print one JSON object"
    )
    run.add_argument(
        "--out",
        metavar="DIR",
        help="also write result.json, figures and the daemon's metric families per time "
        "step (metrics.csv, metrics.prom) here",
    )
    run.set_defaults(func=run_cmd)
    cmp = ssub.add_parser(
        "compare",
        help="run several schedulers on the same traces and compare",
        description="Run each scheduler on the same scenario for several seeds (the "
        "scenario's seed, +1, +2...) and write results.json/csv, table.md and figures.",
    )
    cmp.add_argument("scenario", help="scenario TOML file or shipped name")
    cmp.add_argument(
        "--schedulers",
        default="centralized,dvms",
        help="comma-separated scheduler names (default centralized,dvms)",
    )
    cmp.add_argument("--seeds", type=int, default=5, help="number of seeds (5)")
    cmp.add_argument(
        "--jobs",
        type=int,
        default=1,
        metavar="N",
        help="run N simulations at once in local worker processes (default 1; 0 = one "
        "per CPU); results are the same whichever way they ran",
    )
    cmp.add_argument(
        "--dask",
        metavar="ADDRESS",
        help="run the simulations on an existing Dask cluster (its scheduler's address, "
        "tcp://host:8786; needs pip install 'dvms[dask]')",
    )
    _solver_time_arg(cmp)
    cmp.add_argument("--out", metavar="DIR", required=True, help="output directory")
    cmp.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print results as JSON"
    )
    cmp.set_defaults(func=compare_cmd)
    sc = ssub.add_parser(
        "scaling",
        help="plot violation time per host against hosts from result files",
        description="Read results (compare's results.json or run --json output, one or "
        "more files) and plot each scheduler's cumulated violation time per host against "
        "the number of hosts.",
    )
    sc.add_argument("results", nargs="+", help="results.json or run --json files")
    sc.add_argument("--out", metavar="PNG", required=True, help="figure to write")
    sc.set_defaults(func=scaling_cmd)
    fa = ssub.add_parser(
        "faithful",
        help="full Trio node shells vs the engine path on one script",
        description="Run one script (an overload, a spread vjob, lookups) on a few dozen "
        "full node shells (NodeRunner over the simulated network, MockClock) and on the "
        "engine path, and check that both reach the same outcome (dvms/sim/faithful.py).",
    )
    fa.add_argument("--nodes", type=int, default=24, help="nodes (24)")
    fa.add_argument("--seed", type=int, default=23, help="random seed (23)")
    fa.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print one JSON object"
    )
    fa.set_defaults(func=faithful_cmd)


def scaling_cmd(args: argparse.Namespace) -> int:
    from dvms.sim.figures import per_host_violation

    rows: list[dict] = []
    for name in args.results:
        try:
            data = json.loads(Path(name).read_text())
        except (OSError, ValueError) as exc:
            raise UserError(f"{name}: {exc}") from None
        if isinstance(data, dict) and "runs" in data:  # a `sim compare --json` document
            data = data["runs"]
        rows.extend(data if isinstance(data, list) else [data])
    if not rows or not all(
        {"scheduler", "hosts", "cumulated_violation_s"} <= r.keys() for r in rows
    ):
        raise UserError("each result needs scheduler, hosts and cumulated_violation_s")
    per_host_violation(rows, args.out)
    ordered = sorted(rows, key=lambda r: (r["scheduler"], r["hosts"], r.get("seed", 0)))
    points = [
        {
            "scheduler": r["scheduler"],
            "hosts": r["hosts"],
            "seed": r.get("seed"),
            "violation_per_host_s": r["cumulated_violation_s"] / r["hosts"],
        }
        for r in ordered
    ]
    if getattr(args, "json", False):
        from dvms.cli.output import emit

        emit({"figure": str(args.out), "points": points})
        return 0
    for p in points:
        print(f"{p['scheduler']:12} {p['hosts']:>6} seed {p['seed']}: "
              f"{p['violation_per_host_s']:8.2f} s/host")  # fmt: skip
    return 0


def faithful_cmd(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from dvms.sim.faithful import FaithfulConfig, run_engine, run_faithful

    if args.nodes < 8:
        raise UserError("--nodes: at least 8 (a partition of 4 and a spread vjob of 4)")
    cfg = FaithfulConfig(nodes=args.nodes, seed=args.seed)
    engine, trio_ = run_engine(cfg), run_faithful(cfg)
    agree = engine.outcome_class() == trio_.outcome_class()
    if getattr(args, "json", False):
        from dvms.cli.output import emit

        emit({"engine": asdict(engine), "trio": asdict(trio_), "agree": agree})
    else:
        for key in asdict(engine):
            print(f"{key:22} {getattr(engine, key)!s:>10} {getattr(trio_, key)!s:>10}")
        print("outcomes agree" if agree else "outcomes DIFFER")
    return 0 if agree else 1


def _solver_time_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--solver-time",
        choices=("model", "measured"),
        help="charge the solver's cost model (deterministic) or its measured wall time "
        "(default: the scenario's)",
    )


def _scenario(args: argparse.Namespace, seed: int | None = None) -> Scenario:
    from dvms.sim.scenario import ScenarioError, load_scenario

    try:
        scn = load_scenario(args.scenario)
        if seed is not None:
            scn = replace(scn, seed=seed)
        if args.solver_time:
            scn = replace(scn, solver_time=args.solver_time)
    except ScenarioError as exc:
        raise UserError(str(exc)) from None
    return scn


def _check_schedulers(names: list[str]) -> None:
    from dvms.sim.schedulers import SCHEDULERS, unknown_scheduler_message

    for name in names:
        if name not in SCHEDULERS:
            raise UserError(unknown_scheduler_message(name))


@contextmanager
def _progress(enabled: bool, total: float) -> Iterator[Callable[[str, float], None]]:
    """``update(label, done)``; a rich progress bar on a TTY, nothing otherwise."""
    if not enabled:
        yield lambda _label, _done: None
        return
    from rich.progress import BarColumn, Progress, TimeElapsedColumn, TimeRemainingColumn

    columns = (
        "{task.description}",
        BarColumn(),
        "{task.percentage:>3.0f}%",
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, transient=True) as bar:
        task = bar.add_task("sim", total=total)

        def update(label: str, done: float) -> None:
            bar.update(task, completed=done, description=label)

        yield update


def _out_dir(path: str) -> Path:
    """The ``--out`` directory, made (with its parents) and checked writable before a
    simulation spends its time; a problem is a one-line error naming it."""
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise UserError(f"--out {path}: exists and is not a directory") from None
    except OSError as exc:
        raise UserError(f"--out {path}: cannot create it ({exc.strerror or exc})") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise UserError(f"--out {path}: not writable")
    return out


def run_cmd(args: argparse.Namespace) -> int:
    from dvms.sim.promfile import StepWriter
    from dvms.sim.report import record_run, write_figures
    from dvms.sim.run import run_scenario

    scn = _scenario(args, args.seed)
    _check_schedulers([args.scheduler])
    out = _out_dir(args.out) if args.out else None
    show = not args.json and sys.stdout.isatty()
    steps = StepWriter(out) if out is not None else None
    with _progress(show, scn.duration_s) as update:
        label = f"{scn.name} / {args.scheduler}"
        summary, world = run_scenario(
            scn,
            args.scheduler,
            progress=lambda t: update(label, t),
            on_step=steps.step if steps is not None else None,
        )
    if steps is not None:
        steps.close()
    if out is not None:
        (out / "result.json").write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n")
        write_figures([record_run(summary, world)], out)
        if "vivaldi_map" in world.extras and len(set(world.site_of)) > 1:
            # the map tells sites apart; on one site it is a cloud of dots
            from dvms.sim.figures import vivaldi_map

            coords, parts = world.extras["vivaldi_map"]()
            vivaldi_map(coords, world.site_of, world.sites, parts, out / "vivaldi_map.png")
    if args.json:
        from dvms.cli.output import emit

        emit(summary)
    else:
        print_run(summary)
    return 0


def compare_cmd(args: argparse.Namespace) -> int:
    from dvms.sim.campaign import CampaignError, Run, default_jobs, plan_runs, run_all
    from dvms.sim.report import format_table, write_compare

    names = [n.strip() for n in args.schedulers.split(",") if n.strip()]
    if not names:
        raise UserError("--schedulers: give at least one scheduler name")
    if args.seeds < 1:
        raise UserError("--seeds: must be >= 1")
    if args.jobs < 0:
        raise UserError("--jobs: must be >= 0 (0 = one per CPU)")
    if args.jobs not in (0, 1) and args.dask:
        raise UserError("give --jobs or --dask, not both")
    _check_schedulers(names)
    base = _scenario(args)
    out = _out_dir(args.out)
    runs = plan_runs(base, names, args.seeds)
    jobs = args.jobs or default_jobs()
    show = not args.json and sys.stdout.isatty()
    with _progress(show, len(runs)) as update:
        update(f"0/{len(runs)} runs done", 0)

        def finished(n: int, run: Run) -> None:
            update(f"{n}/{len(runs)} runs done (last: {run.label})", n)

        try:
            records = run_all(runs, jobs=jobs, dask=args.dask, on_done=finished)
        except CampaignError as exc:
            raise UserError(str(exc)) from None
    written = write_compare(records, out)
    if args.json:
        from dvms.cli.output import emit

        emit({"runs": [r.summary for r in records]})
    else:
        print(f"{base.name}: {len(names)} schedulers x {args.seeds} seeds")
        print(format_table(records))
        print("wrote " + ", ".join(str(p) for p in written))
    return 0


def print_run(r: dict) -> None:
    def f(x: object) -> str:
        return "n/a" if x is None else f"{x:g}" if isinstance(x, float) else str(x)

    print(
        f"{r['scenario']} under {r['scheduler']}: {r['hosts']} hosts, {r['vms']} VMs, "
        f"{f(r['virtual_s'])} virtual s, seed {r['seed']}, solver time {r['solver_time']}"
    )
    print(
        f"  violations     {r['violations']}, cumulated {f(r['cumulated_violation_s'])} s, "
        f"mean {f(r['mean_violation_s'])} s (detection {f(r['mean_detection_s'])} s, "
        f"fix {f(r['mean_fix_s'])} s)"
    )
    print(
        f"  migrations     {r['migrations']} (failed {r['migrations_failed']}), "
        f"mean {f(r['mean_migration_s'])} s, inter-site operations {r['inter_site_operations']}"
    )
    print(
        f"  solver         {f(r['solver_s'])} s over {sum(r['solver_runs'].values())} runs, "
        f"reconfiguration {f(r['reconfiguration_s'])} s, "
        f"mean partition {f(r['mean_partition_size'])}"
    )
    print(f"  invariants     {r['invariant_violations']} violations")
    print(
        f"  wall time      {f(r['wall_s'])} s ({f(r['virtual_per_wall'])}x faster than real time)"
    )
