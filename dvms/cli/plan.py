"""``dvms vjob validate FILE`` (no cluster needed) and ``dvms submit --dry-run FILE``
(the plan over the cluster's hosts as they are now, nothing created), like
``nomad job validate`` and ``nomad job plan``."""

from __future__ import annotations

import argparse
from typing import Any

from dvms.cli.main import UserError
from dvms.cli.node import node_call
from dvms.cli.output import emit
from dvms.placement.spec import VjobSpec

#: How long a dry run waits for the cluster's hosts and VMs, seconds.
GATHER_TIMEOUT_S = 30.0


def load(path: str) -> VjobSpec:
    from dvms.placement.vjob import VjobError, load_vjob
    from dvms.ranges import RangeError

    try:
        return load_vjob(path)
    except (VjobError, RangeError, OSError) as exc:
        raise UserError(str(exc)) from None


def summary(vjob: VjobSpec) -> dict[str, Any]:
    """What the file asks for, as ``validate`` prints it."""
    return {
        "valid": True,
        "name": vjob.name,
        "namespace": vjob.namespace or "minimega",
        "vms": [vm.name for vm in vjob.vms],
        "vcpus": sum(vm.vcpus for vm in vjob.vms),
        "memory_mib": sum(vm.memory_mib for vm in vjob.vms),
        "constraints": [
            {"kind": con.kind, "vms": list(con.vms), "hosts": list(con.hosts), "soft": con.soft}
            for con in vjob.constraints
        ],
        "per_vm_rules": sum(
            (vm.schedule is not None) + (vm.coschedule >= 0) + (vm.colocate is not None)
            for vm in vjob.vms
        ),
    }


def validate(args: argparse.Namespace) -> int:
    out = summary(load(args.file))
    if args.json:
        emit(out)
        return 0
    names = out["vms"]
    shown = ", ".join(names if len(names) <= 8 else [*names[:6], "...", names[-1]])
    print(
        f"{args.file}: valid vjob {out['name']} in namespace {out['namespace']}: "
        f"{len(names)} VMs ({shown}), {out['vcpus']} vCPUs, {out['memory_mib']} MiB; "
        f"{len(out['constraints'])} constraint tables, {out['per_vm_rules']} per-VM rules"
    )
    return 0


def _gather(args: argparse.Namespace) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list]:
    hosts = node_call(args, "host", {}, timeout=GATHER_TIMEOUT_S)
    vms = node_call(args, "vm_info", {}, timeout=GATHER_TIMEOUT_S)
    unreachable = sorted(set(hosts.get("unreachable", [])) | set(vms.get("unreachable", [])))
    # an HA restart under way is listed without a host: it takes no room anywhere yet
    return hosts["hosts"], [v for v in vms["vms"] if v["host"]], unreachable


def dry_run(args: argparse.Namespace) -> int:
    """The plan the engine makes for the vjob over every host that answers now, with
    their VMs; nothing is created. A partition places over its members only, so the
    real launch may pick other hosts, never break a rule this plan keeps."""
    from dvms.placement.config import PlacementConfig
    from dvms.placement.model import Host, PlacementError, Snapshot, Vm
    from dvms.placement.modelfile import Model, solve_model

    vjob = load(args.vjob)
    hosts, vms, unreachable = _gather(args)
    snapshot = Snapshot(
        tuple(Host(h["name"], cpus=h["cpus"], memory_mib=h["memory"]) for h in hosts),
        tuple(
            Vm(
                v["name"],
                namespace=v.get("namespace", ""),
                vcpus=v["vcpus"],
                memory_mib=v["memory"],
                host=v["host"],
            )
            for v in vms
            if v.get("host") in {h["name"] for h in hosts}
        ),
    )
    out: dict[str, Any] = {
        "vjob": vjob.name,
        "namespace": vjob.namespace or "minimega",
        "status": "refused",
        "placement": {},
        "reason": "",
        "details": [],
        "hosts": len(hosts),
        "unreachable": unreachable,
    }
    try:
        outcome = solve_model(Model(snapshot, PlacementConfig(), vjob))
    except PlacementError as exc:  # a rule naming a host or VM the cluster lacks
        out["reason"] = str(exc)
    else:
        out["status"] = "placeable" if outcome.status == "solved" else "refused"
        out["placement"] = dict(sorted(outcome.launched.items()))
        out["reason"], out["details"] = outcome.reason, list(outcome.details)
    if args.json:
        emit(out)
    elif out["status"] == "placeable":
        print(f"dry run: vjob {vjob.name} fits the {len(hosts)} hosts as they are now "
              "(nothing created):")  # fmt: skip
        for key, host in out["placement"].items():
            print(f"  {key.split('/')[-1]:<20} -> {host}")
    else:
        print(f"dry run: vjob {vjob.name} would be refused: {out['reason']}")
        for line in out["details"]:
            print(f"  {line}")
    if unreachable:
        print(f"(no answer from: {', '.join(unreachable)}; their hosts were left out)")
    return 0 if out["status"] == "placeable" else 1
