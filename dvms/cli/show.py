"""``dvms vm show NAME`` and ``dvms host show NAME``: one VM or one host described, with
its recent events, like ``kubectl describe``. Gathered from every node (the VM table,
the hosts and every node's event stream)."""

from __future__ import annotations

import argparse
from typing import Any

from dvms.cli.main import UserError
from dvms.cli.node import for_people, node_call
from dvms.cli.output import emit, event_doc, iso

#: How many of the newest events a description shows.
RECENT_EVENTS = 10
#: How long the gathering waits for the cluster, seconds.
GATHER_TIMEOUT_S = 30.0


def _call(args: argparse.Namespace, cmd: str, body: dict[str, Any]) -> Any:
    return node_call(args, cmd, body, timeout=GATHER_TIMEOUT_S)


def _events(args: argparse.Namespace, keep: Any) -> tuple[list[dict[str, Any]], list[str]]:
    """The newest events of every node for which ``keep(event)`` holds, oldest first."""
    res = _call(args, "events", {"all": True})
    rows = sorted((e for e in res["events"] if keep(e)), key=lambda e: e["ts"])
    return [event_doc(e) for e in rows[-RECENT_EVENTS:]], list(res.get("unreachable", []))


def vm_show(args: argparse.Namespace) -> int:
    found = _call(args, "vm_info", {"namespace": args.namespace})
    matches = [v for v in found["vms"] if v["name"] == args.name]
    if not matches:
        where = f" in namespace {args.namespace}" if args.namespace else ""
        raise UserError(f"no VM {args.name}{where} on any host that answered")
    spaces = sorted({v["namespace"] for v in matches})
    if len(spaces) > 1:
        listed = ", ".join(ns or "-" for ns in spaces)
        raise UserError(f"VM {args.name} is in several namespaces ({listed}): add --namespace")
    # an HA VM can have more than one row: a fenced older copy, a restart under way
    vm, *others = sorted(matches, key=_current_first)
    subjects = {vm["name"], f"{vm['namespace']}/{vm['name']}"}
    events, silent = _events(args, lambda e: e["subject"] in subjects)
    doc = {
        "vm": vm,
        "other_copies": others,
        "events": events,
        "unreachable": sorted(set(found["unreachable"]) | set(silent)),
    }
    if args.json:
        emit(doc)
        return 0
    ha = f"{vm['ha']}, generation {vm['generation']}" if vm.get("ha") else "off"
    _describe({**vm, "ha": ha}, ("name", "namespace", "state", "host", "vcpus", "memory", "ha"))
    for other in others:
        where = other["host"] or "no host"
        print(f"also: {other['state'].lower()} on {where}, {other['ha']} g{other['generation']}")
    _print_events(events)
    _print_unreachable(doc["unreachable"])
    return 0


def _current_first(vm: dict[str, Any]) -> tuple[bool, int]:
    """The copy that runs first, then the newest generation."""
    return (vm["state"] != "RUNNING", -int(vm.get("generation", 0)))


def host_show(args: argparse.Namespace) -> int:
    hosts = _call(args, "host", {})
    host = next((h for h in hosts["hosts"] if h["name"] == args.name), None)
    if host is None:
        known = ", ".join(sorted(h["name"] for h in hosts["hosts"])) or "none"
        raise UserError(f"no host {args.name} among those that answered (hosts: {known})")
    vms = [v for v in _call(args, "vm_info", {})["vms"] if v["host"] == args.name]
    events, silent = _events(args, lambda e: e["host"] == args.name)
    doc = {"host": host, "vms": vms, "events": events,
           "unreachable": sorted(set(hosts["unreachable"]) | set(silent))}  # fmt: skip
    if args.json:
        emit(doc)
        return 0
    _describe(host, ("name", "cpus", "memory", "vcpus", "memused", "vms", "uri"))
    print("VMs:")
    for v in sorted(vms, key=lambda v: (v["namespace"], v["name"])):
        ns = v["namespace"] or "-"
        print(f"  {v['name']:<20} {ns:<12} {v['state']:<10} {v['vcpus']} vCPU {v['memory']} MiB")
    if not vms:
        print("  -")
    _print_events(events)
    _print_unreachable(doc["unreachable"])
    return 0


#: Field labels of a description.
LABELS = {
    "name": "Name", "namespace": "Namespace", "state": "State", "host": "Host",
    "vcpus": "vCPUs", "memory": "Memory (MiB)", "cpus": "CPUs", "memused": "Memory used (MiB)",
    "vms": "VMs", "uri": "Hypervisor",
}  # fmt: skip


def _describe(row: dict[str, Any], keys: tuple[str, ...]) -> None:
    for key in keys:
        print(f"{LABELS.get(key, key) + ':':<19} {for_people(row.get(key))}")


def _print_events(events: list[dict[str, Any]]) -> None:
    print(f"Events (newest {RECENT_EVENTS}, all nodes):")
    for e in events:
        print(f"  {iso(e['time'])}  {e['host']:<10} {e['type']:<14} {e['message']}")
    if not events:
        print("  -")


def _print_unreachable(names: list[str]) -> None:
    if names:
        print(f"(no answer from: {', '.join(names)})")
