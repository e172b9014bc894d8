"""``dvms cluster up|status|down``: a local cluster of real daemons on 127.0.0.1."""

from __future__ import annotations

import argparse
from pathlib import Path

from dvms.cli.main import UserError
from dvms.cli.node import print_table
from dvms.cli.output import emit
from dvms.runtime.choices import RECRUITMENT
from dvms.runtime.localcluster import (
    ClusterError,
    LocalClusterConfig,
    cluster_down,
    cluster_status,
    cluster_up,
)


def register(sub: argparse._SubParsersAction) -> None:
    cluster = sub.add_parser(
        "cluster",
        help="a local cluster of daemons",
        description="Start, inspect and stop N daemons on 127.0.0.1 (host names "
        "node1..nodeN, control sockets DIR/nodeI/dvms.sock).",
    )
    csub = cluster.add_subparsers(dest="cluster_command", metavar="COMMAND", required=True)
    up = csub.add_parser(
        "up",
        help="start N daemons and wait until they all see each other",
        description="Start N daemons (one cluster key, node1 is the seed), each with a "
        "libvirt test:/// host of its own; returns once every node sees all the others.",
    )
    up.add_argument("--nodes", type=int, required=True, help="how many daemons")
    up.add_argument("--dir", required=True, help="directory for keys, sockets and state")
    up.add_argument("--hypervisor", default="test", choices=("test",), help="host kind")
    up.add_argument("--recruitment", choices=RECRUITMENT, help="partition recruitment order")
    up.add_argument("--host-cpus", type=int, help="CPUs of each test host (default 8)")
    up.add_argument("--host-memory", type=int, help="memory of each test host, MiB (default 16384)")
    up.add_argument(
        "--no-metrics",
        dest="metrics",
        action="store_false",
        help="no /metrics endpoints (default: each node serves one on a free 127.0.0.1 port)",
    )
    up.add_argument(
        "--overlay-k",
        type=int,
        metavar="K",
        help="bucket size of every node's overlay (default 20); a small K makes a few "
        "daemons behave as a large cluster does: no routing table holds every node",
    )
    up.add_argument(
        "--timeout",
        type=float,
        default=LocalClusterConfig().start_timeout_s,
        help="seconds to wait for each node to start and to see the others (60)",
    )
    up.set_defaults(func=up_cmd)
    status = csub.add_parser("status", help="state of each daemon", description="Show nodes.")
    status.add_argument("--dir", required=True, help="the directory given to `cluster up`")
    status.set_defaults(func=status_cmd)
    down = csub.add_parser(
        "down", help="stop the daemons and clean up", description="Stop by pid, clean up."
    )
    down.add_argument("--dir", required=True, help="the directory given to `cluster up`")
    down.set_defaults(func=down_cmd)


def up_cmd(args: argparse.Namespace) -> int:
    try:
        rows = cluster_up(
            Path(args.dir),
            args.nodes,
            hypervisor=args.hypervisor,
            recruitment=args.recruitment,
            host_cpus=args.host_cpus,
            host_memory_mib=args.host_memory,
            metrics=args.metrics,
            overlay_k=args.overlay_k,
            config=LocalClusterConfig(start_timeout_s=args.timeout),
        )
    except ClusterError as exc:
        raise UserError(str(exc)) from None
    if args.json:
        emit({"nodes": rows})
    else:
        print_table(rows, ("name", "pid", "address", "socket"))
        print(f"{len(rows)} nodes up; e.g. dvms --socket {rows[-1]['socket']} vm info")
    return 0


def status_cmd(args: argparse.Namespace) -> int:
    try:
        rows = cluster_status(Path(args.dir))
    except ClusterError as exc:
        raise UserError(str(exc)) from None
    if args.json:
        emit({"nodes": rows})
    else:
        print_table(rows, ("name", "state", "pid", "address", "peers", "vms", "partition"))
    return 0 if all(r["state"] == "up" for r in rows) else 1


def down_cmd(args: argparse.Namespace) -> int:
    try:
        lines = cluster_down(Path(args.dir))
    except ClusterError as exc:
        raise UserError(str(exc)) from None
    if args.json:
        emit({"dir": str(Path(args.dir).resolve()), "lines": lines})
    else:
        for line in lines:
            print(line)
    return 0
