"""Turn user specs (``ConstraintSpec``, ``VmSpec`` scheduling fields) into engine
constraints, refusing anything the engine cannot honour with a message naming it.

Names: a VM name in a spec is looked up as written, then as ``namespace/name``.
minimega's own texts are used where minimega has them.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence

from dvms.placement import constraints as c
from dvms.placement.model import PlacementError
from dvms.placement.spec import ConstraintSpec, VmSpec
from dvms.ranges import natural_key

__all__ = ["KINDS", "build_constraints", "check_colocate_cycles", "minimega_specs"]

#: Every ``ConstraintSpec.kind`` the engine understands.
KINDS = (
    "among",
    "ban",
    "colocate",
    "coschedule",
    "fence",
    "gather",
    "lonely",
    "preserve",
    "ready",
    "resourcecapacity",
    "root",
    "running",
    "runningcapacity",
    "schedule",
    "spread",
)
_SOFT_KINDS = ("spread", "gather", "fence")


def minimega_specs(vms: Iterable[VmSpec]) -> list[ConstraintSpec]:
    """``schedule``/``colocate`` fields of VmSpecs as constraint specs (schedule first,
    the order minimega's ``vm config`` would apply them in a saved config).

    Coschedule stays a VM field (``Vm.coschedule``)."""
    out: list[ConstraintSpec] = []
    for vm in vms:
        if vm.schedule is not None:
            out.append(ConstraintSpec("schedule", vms=(vm.name,), hosts=(vm.schedule,)))
        if vm.colocate is not None:
            out.append(ConstraintSpec("colocate", vms=(vm.name, vm.colocate)))
    return out


class _Resolver:
    def __init__(self, vm_keys: Collection[str], hosts: Collection[str], namespace: str):
        self.vm_keys = set(vm_keys)
        self.hosts = set(hosts)
        self.namespace = namespace

    def vm(self, name: str, what: str) -> str:
        if name in self.vm_keys:
            return name
        qualified = f"{self.namespace}/{name}" if self.namespace else name
        if qualified in self.vm_keys:
            return qualified
        raise PlacementError(f"{what}: unknown VM {name!r}")

    def vms(self, spec: ConstraintSpec, what: str, *, least: int = 1) -> tuple[str, ...]:
        if len(spec.vms) < least:
            raise PlacementError(f"{what}: needs at least {least} VM(s)")
        return tuple(dict.fromkeys(self.vm(n, what) for n in spec.vms))

    def hosts_of(self, names: Iterable[str], what: str) -> frozenset[str]:
        out = frozenset(names)
        if not out:
            raise PlacementError(f"{what}: needs at least one host")
        for name in sorted(out):
            if name not in self.hosts:
                raise PlacementError(f"{what}: unknown host {name!r}")
        return out


def _where(spec: ConstraintSpec) -> str:
    loc = f" (line {spec.where[0]}, column {spec.where[1]})" if spec.where else ""
    return f"{spec.kind}{loc}"


def _amount(spec: ConstraintSpec, what: str) -> int:
    if spec.amount is None:
        raise PlacementError(f"{what}: needs an amount")
    return spec.amount


def _resource_amount(spec: ConstraintSpec, what: str) -> tuple[str, int]:
    amount = _amount(spec, what)
    if not spec.resource:
        raise PlacementError(f"{what}: needs a resource name")
    return spec.resource, amount


def _one(spec: ConstraintSpec, r: _Resolver, what: str) -> c.Constraint:
    kind, cont = spec.kind.lower(), spec.continuous
    if spec.soft:
        if kind not in _SOFT_KINDS:
            raise PlacementError(f"{what}: only spread, gather and fence can be soft")
        hosts = r.hosts_of(spec.hosts, what) if kind == "fence" else frozenset()
        return c.Prefer(kind, r.vms(spec, what), hosts, weight=float(spec.weight))
    if kind == "ban":
        return c.Ban(r.vms(spec, what), r.hosts_of(spec.hosts, what), cont)
    if kind == "fence":
        return c.Fence(r.vms(spec, what), r.hosts_of(spec.hosts, what), cont)
    if kind in ("spread", "gather", "lonely"):
        return c.VM_GROUPS[kind](r.vms(spec, what), cont)
    if kind == "among":
        return _among(spec, r, what)
    if kind == "root":
        return c.Root(r.vms(spec, what))
    if kind in ("running", "ready"):
        return (c.Running if kind == "running" else c.Ready)(r.vms(spec, what))
    if kind == "preserve":
        resource, amount = _resource_amount(spec, what)
        return c.Preserve(r.vms(spec, what), resource, amount)
    if kind == "resourcecapacity":
        resource, amount = _resource_amount(spec, what)
        return c.ResourceCapacity(r.hosts_of(spec.hosts, what), resource, amount, cont)
    if kind == "runningcapacity":
        amount = _amount(spec, what)
        return c.RunningCapacity(r.hosts_of(spec.hosts, what), amount, cont)
    if kind == "coschedule":
        amount = _amount(spec, what)
        return c.Coschedule(r.vms(spec, what), amount)
    raise PlacementError(
        f"unknown constraint kind {spec.kind!r}; expected one of {', '.join(KINDS)}"
    )


def _among(spec: ConstraintSpec, r: _Resolver, what: str) -> c.Among:
    if not spec.groups:
        raise PlacementError(f"{what}: needs host groups")
    groups = tuple(r.hosts_of(g, what) for g in spec.groups)
    seen: set[str] = set()
    for group in groups:
        if seen & group:
            raise PlacementError(f"{what}: host groups overlap on {sorted(seen & group)[0]!r}")
        seen |= group
    return c.Among(r.vms(spec, what), groups, spec.continuous)


def build_constraints(
    specs: Sequence[ConstraintSpec],
    *,
    vm_keys: Collection[str],
    hosts: Collection[str],
    namespace: str = "",
) -> list[c.Constraint]:
    """Engine constraints for ``specs``; raises ``PlacementError`` on the first problem
    (unknown kind, host or VM, missing amount, overlapping among groups, schedule and
    colocate on one VM, colocate cycles, missing colocate targets)."""
    r = _Resolver(vm_keys, hosts, namespace)
    out: list[c.Constraint] = []
    scheduled: dict[str, str] = {}
    colocated: dict[str, str] = {}
    missing: set[str] = set()
    for spec in specs:
        what = _where(spec)
        kind = spec.kind.lower()
        if kind == "schedule":
            out.extend(_schedule(spec, r, scheduled, colocated))
        elif kind == "colocate":
            out.extend(_colocate(spec, r, scheduled, colocated, missing))
        else:
            out.append(_one(spec, r, what))
    if missing:
        raise PlacementError(f"nonexistent colocate VMs: [{', '.join(sorted(missing))}]")
    check_colocate_cycles(colocated)
    return out


def _schedule(
    spec: ConstraintSpec, r: _Resolver, scheduled: dict[str, str], colocated: dict[str, str]
) -> list[c.Constraint]:
    if len(spec.hosts) != 1:
        raise PlacementError(f"{_where(spec)}: needs exactly one host")
    host = spec.hosts[0]
    if host not in r.hosts:
        known = sorted(r.hosts, key=natural_key)
        shown = ", ".join(known[:8]) + (f" and {len(known) - 8} more" if len(known) > 8 else "")
        raise PlacementError(
            f"no host fits {', '.join(spec.vms)}: schedule = {host!r} names no host here "
            f"(hosts: {shown or 'none'})"
        )
    out: list[c.Constraint] = []
    for name in r.vms(spec, _where(spec)):
        if name in colocated:
            raise PlacementError("cannot specify schedule and colocate in the same config")
        scheduled[name] = host
        out.append(c.Schedule(name, host))
    return out


def _colocate(
    spec: ConstraintSpec,
    r: _Resolver,
    scheduled: dict[str, str],
    colocated: dict[str, str],
    missing: set[str],
) -> list[c.Constraint]:
    """``vms = (follower..., target)``: every VM but the last follows the last one."""
    what = _where(spec)
    if len(spec.vms) < 2:
        raise PlacementError(f"{what}: needs a VM and the VM it follows")
    *followers, target_name = spec.vms
    try:
        target = r.vm(target_name, what)
    except PlacementError:
        missing.add(target_name)
        return []
    out: list[c.Constraint] = []
    for name in followers:
        vm = r.vm(name, what)
        if vm in scheduled:
            raise PlacementError("cannot specify colocate and schedule in the same config")
        if vm == target:
            raise PlacementError(f"{what}: VM {name!r} cannot colocate with itself")
        colocated[vm] = target
        out.append(c.Colocate(vm, target))
    return out


def check_colocate_cycles(follows: dict[str, str]) -> None:
    """Raise if following ``colocate`` targets ever loops back (a -> b -> a)."""
    done: set[str] = set()
    for start in sorted(follows):
        path: list[str] = []
        node: str | None = start
        while node is not None and node not in done:
            if node in path:
                loop = [*path[path.index(node) :], node]
                raise PlacementError(f"colocate cycle: {' -> '.join(loop)}")
            path.append(node)
            node = follows.get(node)
        done.update(path)
