"""Constraints that running VMs carry, and what they become inside one partition.

A launch gives each VM the constraints of its vjob that name it (``carried_by``); the
VM keeps them (``LaunchVm.constraints`` -> ``VmState.constraints``), so a later leader
plans with them: an overload repair, or another vjob's launch, never breaks them.

A leader sees only its partition's hosts. A constraint's VMs outside the partition run
on hosts outside it, where nothing in this plan can go, so (``in_partition``):

=========================  ==============================================================
kind                       inside the partition
=========================  ==============================================================
spread, lonely, root,      restricted to the VMs present (the absent ones' hosts are not
preserve, coschedule,      candidates, so nothing here can meet them)
running, ready
ban                        host set restricted to the partition (empty: dropped)
fence                      host set restricted; if no host is left, each VM stays put
gather, colocate           kept if every VM is present; else the present VMs stay put
                           (the others' host is outside: moving any of them breaks it)
among                      groups restricted; if some VMs are absent (their group is
                           unknown here), the present VMs stay in the group of their
                           current host
schedule                   kept (its host is the VM's own host when it was honoured)
resourcecapacity,          not carried (they name hosts, not VMs)
runningcapacity
=========================  ==============================================================

"Stays put" is a fence to the VM's current host.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import replace

from dvms.partition.messages import LaunchVm, WireConstraint
from dvms.placement import PlacementError, build_constraints
from dvms.placement.constraints import Constraint
from dvms.placement.spec import ConstraintSpec

__all__ = ["carried_by", "in_partition", "running_constraints"]

_HOST_FREE = frozenset({"spread", "lonely", "root", "preserve", "coschedule", "running", "ready"})
_NOT_CARRIED = frozenset({"resourcecapacity", "runningcapacity"})


def carried_by(vm: LaunchVm, constraints: Iterable[WireConstraint]) -> tuple[WireConstraint, ...]:
    """The constraints ``vm`` keeps once it runs: those of its vjob naming it, plus its
    colocate (a gather with its target). Its ``schedule`` is not kept: as in minimega it
    says where to *launch* the VM (the namespace API pins every VM it launches that way,
    to the host its least-load rule chose), and a VM that must stay on a host for good
    gets a ``fence``. Carried as a fence, it froze every VM launched through the
    namespace API and overload relief could never move them."""
    # a vjob submitted in a namespace names its VMs qualified (``ns/name``)
    names = {vm.name, _qualified(vm.name, vm.namespace)}
    out = [
        c for c in constraints if names.intersection(c.vms) and c.kind.lower() not in _NOT_CARRIED
    ]
    if vm.colocate is not None:
        out.append(WireConstraint("gather", (vm.name, vm.colocate)))
    return tuple(dict.fromkeys(out))


def _qualified(name: str, namespace: str) -> str:
    """A VM's key in ``where``: ``namespace/name``, unless ``name`` is qualified already."""
    return name if "/" in name or not namespace else f"{namespace}/{name}"


def _stay(
    names: Iterable[str], key: Callable[[str], str], where: Mapping[str, str]
) -> list[ConstraintSpec]:
    return [ConstraintSpec("fence", vms=(n,), hosts=(where[key(n)],)) for n in names]


def in_partition(
    spec: ConstraintSpec,
    namespace: str,
    where: Mapping[str, str],
    hosts: Collection[str],
) -> list[ConstraintSpec]:
    """What ``spec`` (carried by VMs of ``namespace``) becomes on a partition whose VMs
    run where ``where`` says (VM key -> host) on ``hosts`` (see the module's table)."""

    def key(name: str) -> str:
        return _qualified(name, namespace)

    kind = spec.kind.lower()
    present = tuple(n for n in spec.vms if key(n) in where)
    if not present or kind in _NOT_CARRIED:
        return []
    absent = len(present) < len(set(spec.vms))
    if kind in _HOST_FREE or kind == "schedule":
        return [replace(spec, vms=present)]
    if kind == "ban":
        left = tuple(h for h in spec.hosts if h in hosts)
        return [replace(spec, vms=present, hosts=left)] if left else []
    if kind == "fence":
        left = tuple(h for h in spec.hosts if h in hosts)
        if spec.soft:
            return [replace(spec, vms=present, hosts=left)] if left else []
        return [replace(spec, vms=present, hosts=left)] if left else _stay(present, key, where)
    if kind in ("gather", "colocate"):
        if spec.soft:
            return [replace(spec, vms=present)]
        return _stay(present, key, where) if absent else [spec]
    if kind == "among":
        groups = [tuple(h for h in g if h in hosts) for g in spec.groups]
        if absent:
            mine = next((g for g in groups if where[key(present[0])] in g), ())
            if not mine:
                return _stay(present, key, where)
            return [ConstraintSpec("fence", vms=present, hosts=mine)]
        groups = [g for g in groups if g]
        return [replace(spec, groups=tuple(groups))] if groups else _stay(present, key, where)
    return []  # an unknown kind: the engine would refuse it anyway


def running_constraints(
    carriers: Iterable[tuple[str, str, tuple[WireConstraint, ...]]],
    where: Mapping[str, str],
    hosts: Collection[str],
) -> tuple[list[Constraint], list[str]]:
    """Engine constraints for the running VMs ``carriers`` (namespace, name, carried
    constraints) of a partition; also the problems met (a constraint the engine refuses
    is left out, with the reason, rather than failing the whole partition)."""
    seen: dict[tuple[str, WireConstraint], None] = {}
    for namespace, _name, carried in carriers:
        for wc in carried:
            seen[(namespace, wc)] = None
    out: list[Constraint] = []
    problems: list[str] = []
    keys = list(where)
    for namespace, wc in seen:
        try:
            specs = in_partition(wc.to_spec(), namespace, where, hosts)
            out += build_constraints(specs, vm_keys=keys, hosts=hosts, namespace=namespace)
        except PlacementError as exc:
            problems.append(f"{wc.kind} of {', '.join(wc.vms)}: {exc}")
    return out, problems
