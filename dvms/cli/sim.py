"""``dvms sim ...``: run the real protocol cores on a simulated network."""

from __future__ import annotations

import argparse

from dvms.cli.main import UserError


def register(sub: argparse._SubParsersAction) -> None:
    sim = sub.add_parser(
        "sim",
        help="simulate a cluster",
        description="Run the real cores on a virtual network.",
        epilog="Large runs go 1.3-1.5x faster on the compiled hot path, same results: "
        "build it once with `make accel`, then run with DVMS_ACCEL=1 in the environment.",
    )
    ssub = sim.add_subparsers(dest="sim_command", metavar="COMMAND", required=True)
    ov = ssub.add_parser(
        "overlay",
        help="simulate the Kademlia + Vivaldi overlay",
        description="Simulate N nodes joining the overlay, maintaining it, and running "
        "random-target lookups that are checked against the true k closest nodes. "
        "Prints one summary (or one JSON object with --json).",
    )
    ov.add_argument("--nodes", type=int, default=1000, help="population (default 1000)")
    ov.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    ov.add_argument(
        "--latency-matrix",
        metavar="FILE",
        help="square RTT matrix in ms, whitespace- or comma-separated, one row per line "
        "(.gz accepted); node i takes row i mod size (default: the embedded WonderNetwork "
        "222-site matrix)",
    )
    ov.add_argument(
        "--constant-rtt-ms", type=float, help="use one constant RTT instead of a matrix"
    )
    ov.add_argument("--loss", type=float, default=0.0, help="datagram loss probability")
    ov.add_argument("--jitter", type=float, default=0.0, help="relative one-way delay jitter")
    ov.add_argument(
        "--churn",
        type=float,
        default=0.0,
        help="fraction of nodes replaced (crash + fresh join) during the run",
    )
    ov.add_argument("--duration", type=float, default=600.0, help="virtual seconds (600)")
    ov.add_argument("--lookups", type=int, default=500, help="checked lookups (500)")
    ov.add_argument("--wire", action="store_true", help="encode and sign every message")
    ov.add_argument(
        "--timings",
        action="store_true",
        help="add wall-clock phase timings and peak RSS (these vary between runs)",
    )
    ov.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print one JSON object"
    )
    ov.set_defaults(func=run_overlay_cmd)
    __import__("dvms.cli.simrun", fromlist=["register"]).register(ssub)
    __import__("dvms.cli.simfaults", fromlist=["register"]).register(ssub)


def run_overlay_cmd(args: argparse.Namespace) -> int:
    from dvms.sim.overlay import (
        EMBEDDED_MATRIX,
        LatencyMatrixError,
        OverlayScenario,
        run_overlay,
    )

    if args.latency_matrix and args.constant_rtt_ms is not None:
        raise UserError("give either --latency-matrix or --constant-rtt-ms, not both")
    latency = args.latency_matrix or EMBEDDED_MATRIX
    if args.constant_rtt_ms is not None:
        latency = f"const:{args.constant_rtt_ms}"
    try:
        scn = OverlayScenario(
            nodes=args.nodes,
            seed=args.seed,
            latency=latency,
            loss=args.loss,
            jitter=args.jitter,
            churn=args.churn,
            duration_s=args.duration,
            lookups=args.lookups,
            wire=args.wire,
        )
        result = run_overlay(scn, timings=args.timings)
    except (ValueError, LatencyMatrixError) as exc:
        raise UserError(str(exc)) from None
    except FileNotFoundError as exc:
        raise UserError(f"latency matrix not found: {exc.filename}") from None
    if args.json:
        from dvms.cli.output import emit

        emit(result)
        print()
    else:
        print_summary(result)
    return 0


def print_summary(r: dict) -> None:
    print(f"overlay simulation: {r['nodes']} nodes, {r['virtual_s']:g} virtual s, seed {r['seed']}")
    print(
        f"  lookups        {r['lookups']} checked, exact {r['lookup_exact_ratio']:.3f}, "
        f"median hops {r['median_hops']}, latency p50 {r['lookup_latency_p50_s']} s"
    )
    print(
        f"  vivaldi        median relative error {r['vivaldi_median_rel_error']}, "
        f"p90 {r['vivaldi_p90_rel_error']}"
    )
    print(f"  routing table  {r['mean_table_size']} contacts on average")
    print(f"  messages       {r['messages']} ({r['datagrams_dropped']} dropped by the network)")
    speed = r["virtual_s"] / r["wall_s"] if r["wall_s"] else float("inf")
    print(f"  wall time      {r['wall_s']} s ({speed:.1f}x faster than real time)")
