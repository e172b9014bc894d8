"""``dvms lab up|status|down``: real hypervisor hosts in network namespaces (root)."""

from __future__ import annotations

import argparse
from pathlib import Path

from dvms.cli.main import UserError
from dvms.cli.node import print_table
from dvms.cli.output import emit
from dvms.runtime.lab import LabConfig, LabError, lab_down, lab_status, lab_up


def register(sub: argparse._SubParsersAction) -> None:
    lab = sub.add_parser(
        "lab",
        help="a lab of real hypervisor hosts on this machine (root)",
        description="Start, inspect and stop N hypervisor hosts, each a network namespace "
        "with its own libvirtd (QEMU) and dvms daemon, joined by an underlay bridge.",
    )
    lsub = lab.add_subparsers(dest="lab_command", metavar="COMMAND", required=True)
    up = lsub.add_parser(
        "up",
        help="start N hosts and wait until their daemons see each other",
        description="Start N lab hosts (host1..hostN, underlay 10.231.0.I) with a dvms "
        "daemon each; returns once every daemon sees all the others.",
    )
    up.add_argument("--hosts", type=int, required=True, help="how many hosts")
    up.add_argument("--dir", required=True, help="directory for state, sockets, consoles")
    up.add_argument(
        "--host-cpus",
        type=float,
        default=LabConfig().host_cpus,
        help="CPU capacity each host reports to the partitions, in CPUs (2.0)",
    )
    up.add_argument(
        "--timeout",
        type=float,
        default=LabConfig().start_timeout_s,
        help="seconds to wait for each start-up step (120)",
    )
    up.add_argument("--json", dest="lab_json", action="store_true", help="JSON output")
    up.set_defaults(func=up_cmd)
    status = lsub.add_parser("status", help="each lab host", description="Show the hosts.")
    status.add_argument("--dir", required=True, help="the lab's directory (as given to up)")
    status.add_argument("--json", dest="lab_json", action="store_true", help="JSON output")
    status.set_defaults(func=status_cmd)
    down = lsub.add_parser(
        "down",
        help="stop every process, delete every namespace, link and file of the lab",
        description="Stop by pid, delete namespaces and files; prints what is left (nothing).",
    )
    down.add_argument("--dir", required=True, help="the lab's directory (as given to up)")
    down.add_argument("--json", dest="lab_json", action="store_true", help="JSON output")
    down.set_defaults(func=down_cmd)


def _json(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "json", False) or getattr(args, "lab_json", False))


def up_cmd(args: argparse.Namespace) -> int:
    if args.host_cpus < 0:
        raise UserError(f"--host-cpus must be >= 0, got {args.host_cpus}")
    cfg = LabConfig(host_cpus=args.host_cpus, start_timeout_s=args.timeout)
    try:
        lab_up(Path(args.dir), args.hosts, cfg)
        rows = lab_status(Path(args.dir))
    except LabError as exc:
        raise UserError(str(exc)) from None
    if _json(args):
        emit({"hosts": rows})
    else:
        print_table(rows, ("name", "netns", "address", "socket"))
        print(f"{len(rows)} hosts up; e.g. virsh -c '{rows[0]['libvirt_uri']}' list")
    return 0


def status_cmd(args: argparse.Namespace) -> int:
    try:
        rows = lab_status(Path(args.dir))
    except LabError as exc:
        raise UserError(str(exc)) from None
    if _json(args):
        emit({"hosts": rows})
    else:
        print_table(rows, ("name", "netns", "address", "daemon", "libvirtd", "vms", "socket"))
    return 0 if all(r["daemon"] and r["libvirtd"] for r in rows) else 1


def down_cmd(args: argparse.Namespace) -> int:
    try:
        left = lab_down(Path(args.dir))
    except LabError as exc:
        raise UserError(str(exc)) from None
    if _json(args):
        emit({"dir": str(Path(args.dir).resolve()), "left": left})
        return 1 if left else 0
    for line in left:
        print(f"left: {line}")
    if left:
        return 1
    print("lab down: nothing left")
    return 0
