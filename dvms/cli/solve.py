"""``dvms solve``: what would the scheduler do? Offline, on a file.

    dvms solve MODEL.toml [--json]          our model (hosts, their VMs, a vjob)
    dvms solve --btrplace FILE [--json]     a BtrPlace JSON instance (.json or .json.gz)

``--local-search N`` runs the local search after the repair with a budget of N plans
(``PlacementConfig.local_search_evals``), ranking plans by ``--objective``. A BtrPlace
instance names what to optimise (minimizeMTTR: ``mttr``, the default when it names
nothing; minimizeMigrations: ``migrations``), so there the search runs unless
``--local-search 0`` (budget: ``INSTANCE_OBJECTIVE_EVALS``). Both override a model's
``[config]``.

Exit status: 0 solved, 3 infeasible, 1 bad input (one line on stderr).
``viable`` in the output comes from the independent checker, not from the solver.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from dvms.cli.main import UserError

if TYPE_CHECKING:
    from dvms.placement.config import PlacementConfig

INFEASIBLE = 3
#: ``PlacementConfig.objective`` names (the engine's list, written here so that
#: building the parser does not import the engine)
OBJECTIVES = ("migrations", "mttr")
#: a BtrPlace instance's objective -> the local search's
BTRPLACE_OBJECTIVES = {"minimizeMTTR": "mttr", "minimizeMigrations": "migrations"}
#: (``--local-search``, ``--objective``), None where not given
Search = tuple[int | None, str | None]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "solve",
        help="solve a placement model offline and print the plan",
        description="Run the placement engine on MODEL.toml (hosts with their VMs plus a "
        "vjob to launch) or on a BtrPlace JSON instance, and print the plan. Exit status "
        "0 = solved, 3 = infeasible, 1 = bad input.",
    )
    p.add_argument("model", nargs="?", help="MODEL.toml (see docs/placement.md)")
    p.add_argument("--btrplace", metavar="FILE", help="a BtrPlace instance (.json or .json.gz)")
    # SUPPRESS: `dvms --json solve ...` (the global flag) works as well
    p.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                   help="print one JSON object")  # fmt: skip
    p.add_argument("-v", "--verbose", action="store_true", help="list every refused host")
    p.add_argument("--local-search", type=int, metavar="N", default=None,
                   help="after the repair, evaluate up to N candidate plans to cut "
                        "migrations or plan duration (0 = off; default: 100 for a BtrPlace "
                        "instance, which names its objective; for a model, its [config], "
                        "else off)")  # fmt: skip
    p.add_argument("--objective", choices=OBJECTIVES, default=None,
                   help="what the local search ranks first: fewest migrations or the shortest "
                        "plan (default: the BtrPlace instance's objective, else the model's "
                        "[config], else migrations)")  # fmt: skip
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dvms.placement.model import PlacementError  # imported here: every dvms command
    # builds this parser, and the placement engine costs ~40 ms to import

    if bool(args.model) == bool(args.btrplace):
        raise UserError("solve: give either MODEL.toml or --btrplace FILE")
    if args.local_search is not None and args.local_search < 0:
        raise UserError(f"solve: --local-search must be >= 0, not {args.local_search}")
    search = (args.local_search, args.objective)
    try:
        out = _btrplace(args.btrplace, search) if args.btrplace else _model(args.model, search)
    except (PlacementError, ValueError) as exc:
        raise UserError(str(exc)) from None
    if getattr(args, "json", False):
        from dvms.cli.output import emit

        emit(out)
    else:
        _print_text(out, verbose=args.verbose)
    return 0 if out["status"] == "solved" else INFEASIBLE


def _searching(config: PlacementConfig, search: Search, declared: str | None) -> PlacementConfig:
    """``config`` with the command line's local search settings (``declared``: the
    objective a BtrPlace instance names, when it names one dvms has; the search then
    optimises it unless the command line sets a budget)."""
    from dvms.placement.config import INSTANCE_OBJECTIVE_EVALS

    evals, objective = search
    changes: dict[str, Any] = {}
    if evals is not None:
        changes["local_search_evals"] = evals
    elif declared and not config.local_search_evals:
        changes["local_search_evals"] = INSTANCE_OBJECTIVE_EVALS
    if objective or declared:
        changes["objective"] = objective or declared
    return replace(config, **changes)


def _btrplace(path: str, search: Search) -> dict[str, Any]:
    from dvms.placement.btrplace import load_instance, plan_actions_json
    from dvms.placement.checker import check_plan
    from dvms.placement.config import PlacementConfig

    inst = load_instance(path)
    declared = BTRPLACE_OBJECTIVES.get(inst.objective)
    config = _searching(PlacementConfig.btrplace(), search, declared)
    from dvms.placement.repair import solve_repair

    t0 = time.perf_counter()
    plan = solve_repair(inst.snapshot, inst.constraints, config)
    solve_s = time.perf_counter() - t0
    problems = check_plan(inst.snapshot, inst.constraints, plan.actions, config)
    running = {k: int(v) if v.isdigit() else v for k, v in plan.placement.items()}
    return {
        "status": plan.status,
        "viable": plan.status == "solved" and not problems,
        "actions": plan_actions_json(list(plan.actions)),
        "migrations": plan.migrations,
        "placement": running,
        "solve_s": round(solve_s, 6),
        "duration_s": plan.duration,
        "reason": plan.reason,
        "details": list(plan.details),
        "problems": problems,
        "notes": list(inst.notes),
    }


def _model(path: str, search: Search) -> dict[str, Any]:
    from dvms.placement.modelfile import load_model, solve_model

    model = load_model(path)
    model = replace(model, config=_searching(model.config, search, None))
    t0 = time.perf_counter()
    outcome = solve_model(model)
    solve_s = time.perf_counter() - t0
    return {
        "status": outcome.status,
        "viable": outcome.status == "solved" and not outcome.problems,
        "launched": dict(outcome.launched),
        "actions": [a.to_dict() for a in outcome.actions],
        "migrations": sum(a.kind == "migrate" for a in outcome.actions),
        "placement": dict(outcome.placement),
        "solve_s": round(solve_s, 6),
        "reason": outcome.reason,
        "details": list(outcome.details),
        "problems": list(outcome.problems),
        "locality_notes": [
            {
                "vms": list(n.vms),
                "host": n.host,
                "instead": n.instead,
                "score": round(n.score, 3),
                "holders": [
                    {"host": h, "held": round(frac, 3), "score": round(score, 3)}
                    for h, frac, score in n.holders
                ],
            }
            for n in outcome.locality
        ],
    }


def _print_text(out: dict[str, Any], *, verbose: bool) -> None:
    if out["status"] != "solved":
        print(f"infeasible: {out['reason']}")
        for line in out["details"] if verbose else []:
            print(f"  {line}")
        return
    viable = "viable" if out["viable"] else "NOT viable (checker disagrees)"
    print(
        f"solved in {out['solve_s'] * 1000:.1f} ms: {len(out['actions'])} actions, "
        f"{out['migrations']} migrations; final placement {viable}"
    )
    for a in out["actions"]:
        kind = a.get("kind") or a.get("id")
        src = a.get("src", a.get("from"))
        dst = a.get("dst", a.get("to", a.get("on")))
        moves = src is not None and dst is not None and src != dst
        where = f"{src} -> {dst}" if moves else f"on {dst or src}"
        extra = f" {a['rc']}={a['amount']}" if "rc" in a else ""
        print(f"  {a['start']:>5}-{a['end']:<5} {kind} {a['vm']} {where}{extra}")
    for problem in out["problems"]:
        print(f"  checker: {problem}")
    if out.get("launched"):
        print("launched: " + ", ".join(f"{k}@{v}" for k, v in sorted(out["launched"].items())))
    for n in out.get("locality_notes", ()):
        held = ", ".join(
            f"{h['host']} ({h['held']:.0%} held, score {h['score']:.2f})" for h in n["holders"]
        )
        print(
            f"image locality: {', '.join(n['vms'])} on {n['host']} (score {n['score']:.2f}),"
            f" not {n['instead']} (load alone); image held by {held}"
        )
