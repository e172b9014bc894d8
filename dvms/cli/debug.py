"""``dvms debug load|loads``: synthetic CPU load on test hosts (demos and tests).

libvirt ``test:///`` hosts measure no CPU, so without this no overload ever happens on a
local cluster. ``debug load`` tells a node's host monitor to report a VM as using
``CPUS`` CPUs; the partition protocol then reacts as to a measured overload. It is a
statement, not a measurement: ``debug loads`` lists it as synthetic.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

from dvms.cli.main import UserError
from dvms.cli.node import print_table, socket_path
from dvms.cli.output import emit
from dvms.runtime.client import ControlError, call
from dvms.runtime.localcluster import ClusterError, node_sockets

#: How long a debug command waits for each node's answer, seconds.
CALL_TIMEOUT_S = 30.0

FOR_TEST_HOSTS = (
    "For test hosts (libvirt test:///, e.g. `dvms cluster up`), which measure no CPU use: "
    "the load is synthetic, what you say, not a measurement."
)


def register(sub: argparse._SubParsersAction) -> None:
    debug = sub.add_parser(
        "debug",
        help="synthetic CPU load for test hosts (demos, tests)",
        description="Debug commands. " + FOR_TEST_HOSTS,
    )
    dsub = debug.add_subparsers(dest="debug_command", metavar="COMMAND", required=True)
    load = dsub.add_parser(
        "load",
        help="give a VM a synthetic CPU load (test hosts only)",
        description="Make the host monitor report VM NAME as using CPUS CPUs (at most its "
        "vCPUs; 0 clears it). The node's overload check sees it within a second; when the "
        "VMs of a host use more than its CPUs, the host is overloaded and a DVMS partition "
        "migrates VMs away. With --socket the load is set on that node, which must host "
        "the VM; with --dir (a local cluster) it is set on every node, so it follows the "
        "VM when the partition migrates it. " + FOR_TEST_HOSTS,
    )
    load.add_argument("name", metavar="NAME", help="the VM")
    load.add_argument("cpus", metavar="CPUS", help="CPUs the VM uses, e.g. 3.5 (0 clears)")
    load.add_argument("--namespace", help="the VM's namespace (needed if its name is in two)")
    load.add_argument("--dir", help="a local cluster's directory: set it on every node")
    load.set_defaults(func=load_cmd)
    loads = dsub.add_parser(
        "loads",
        help="hosts' demand and synthetic loads",
        description="Each host's CPUs, total CPU demand as its overload check sees it, "
        "whether it is overloaded, and the synthetic loads it holds (--dir: every node of a "
        "local cluster). " + FOR_TEST_HOSTS,
    )
    loads.add_argument("--dir", help="a local cluster's directory: ask every node")
    loads.set_defaults(func=loads_cmd)
    capacity = dsub.add_parser(
        "capacity",
        help="set the CPU capacity this host reports to the partitions",
        description="From now on the node (--socket) reports CPUS CPUs of capacity to the "
        "partition protocol (0: its host's own CPUs). Demand stays what it is (measured on "
        "a QEMU host): a host made small this way is overloaded as soon as its VMs use more.",
    )
    capacity.add_argument("cpus", metavar="CPUS", help="capacity in CPUs, e.g. 0.8 (0: the host's)")
    capacity.set_defaults(func=capacity_cmd)


def _parse_cpus(text: str) -> float:
    try:
        cpus = float(text)
    except ValueError:
        raise UserError(f"debug load: CPUS must be a number, got {text!r}") from None
    if not math.isfinite(cpus) or cpus < 0:
        raise UserError(f"debug load: CPUS must be a number >= 0, got {text!r}")
    return cpus


def _sockets(d: str) -> dict[str, str]:
    try:
        return node_sockets(Path(d))
    except ClusterError as exc:
        raise UserError(str(exc)) from None


def _call(sock: str, cmd: str, args: dict[str, Any]) -> Any:
    try:
        return call(sock, cmd, args, timeout=CALL_TIMEOUT_S)
    except ControlError as exc:
        raise UserError(str(exc)) from None


def load_cmd(args: argparse.Namespace) -> int:
    cpus = _parse_cpus(args.cpus)
    req = {"name": args.name, "cpus": cpus, "namespace": args.namespace}
    if not args.dir:
        results = [_call(socket_path(args), "debug_load", req)]
    else:
        results = _load_everywhere(_sockets(args.dir), req)
    if args.json:
        emit({"results": results})
    else:
        for r in results:
            if r["here"]:
                print(
                    f"{r['vm']} on {r['host']}: {r['cpus']:g} CPUs (synthetic); host demand "
                    f"{r['demand']:g} of {r['capacity']} CPUs"
                    + (", overloaded" if r["overloaded"] else "")
                )
        waiting = [r["host"] for r in results if not r["here"]]
        if waiting:
            print(f"also set on {len(waiting)} other nodes (applies if the VM moves there)")
    return 0


def _ask_every_node(socks: dict[str, str], cmd: str) -> tuple[list[Any], list[str]]:
    """Every node's answer to ``cmd``, and "node: why" for each node that gave none (a
    node that is down must not hide the others)."""
    answers: list[Any] = []
    silent: list[str] = []
    for name, sock in socks.items():
        try:
            answers.append(call(sock, cmd, {}, timeout=CALL_TIMEOUT_S))
        except ControlError as exc:
            silent.append(f"{name}: {exc}")
    return answers, silent


def _load_everywhere(socks: dict[str, str], req: dict[str, Any]) -> list[dict[str, Any]]:
    """Find the VM's host (one node's ``vm info`` covers the cluster) and set the load
    there first: it validates, so a refusal changes nothing. Then tell the other nodes
    to apply it if the VM arrives."""
    if not socks:
        raise UserError("debug load: the cluster has no nodes")
    found = _call(next(iter(socks.values())), "vm_info", {"namespace": req["namespace"]})
    # a restart under way has no host yet: nothing to load there
    rows = [v for v in found["vms"] if v["name"] == req["name"] and v["host"]]
    if not rows:
        raise UserError(f"debug load: no vm {req['name']} in the cluster")
    if len({v["namespace"] for v in rows}) > 1:
        listed = ", ".join(sorted({repr(v["namespace"]) for v in rows}))
        raise UserError(
            f"debug load: vm {req['name']} is in several namespaces ({listed}): "
            "pick one with --namespace"
        )
    host = rows[0]["host"]
    if host not in socks:
        raise UserError(f"debug load: vm {req['name']} runs on {host}, not a node of this cluster")
    req = {**req, "namespace": rows[0]["namespace"]}
    results = [_call(socks[host], "debug_load", req)]
    for name, sock in socks.items():
        if name != host:
            results.append(_call(sock, "debug_load", {**req, "anywhere": True}))
    return results


def loads_cmd(args: argparse.Namespace) -> int:
    if not args.dir:
        hosts = [_call(socket_path(args), "debug_loads", {})]
        silent: list[str] = []
    else:
        hosts, silent = _ask_every_node(_sockets(args.dir), "debug_loads")
    for line in silent:
        print(f"no answer from {line}", file=sys.stderr)
    if not hosts:
        raise UserError("debug loads: no node of the cluster answered")
    if args.json:
        emit({"hosts": hosts})
        return 0
    rows = [
        {
            **h,
            "overloaded": "yes" if h["overloaded"] else "no",
            "synthetic": ", ".join(f"{v['vm']}={v['cpus']:g}" for v in h["vms"] if v["here"]),
        }
        for h in hosts
    ]
    print_table(rows, ("host", "capacity", "demand", "overloaded", "partition", "synthetic"))
    return 0


def capacity_cmd(args: argparse.Namespace) -> int:
    cpus = _parse_cpus(args.cpus)
    r = _call(socket_path(args), "debug_capacity", {"cpus": cpus})
    if args.json:
        emit(r)
    else:
        print(f"{r['host']}: capacity {r['capacity']:g} CPUs, demand {r['demand']:g}")
    return 0
