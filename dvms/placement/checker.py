"""The independent checker: does a placement, or every step of a plan, obey the rules?

This module shares nothing with the solver but the model and the constraint records:
it never imports the workspace, the filters or the search. It recomputes everything
from scratch with the plainest code that states each rule (BtrPlace's
``ReconfigurationPlanChecker`` plays the same role): replay the actions in time order
(ends before starts at equal times), check continuous constraints and capacities after
every arrival (a host may start over capacity -- that is what overload relief is for --
but nothing may arrive on it until it fits), and every constraint on the final state.

A VM that migrates is present on both hosts from start to end: its current allocation
on the source, its new one (``preserve`` applied) on the destination.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from dvms.placement import constraints as c
from dvms.placement.config import PlacementConfig
from dvms.placement.model import CPU_DEMAND, MEMORY, NICS, VCPUS, Snapshot, Vm, paused_gc
from dvms.placement.plan import Action

__all__ = ["check_placement", "check_plan"]


@dataclass
class _Replay:
    snapshot: Snapshot
    constraints: Sequence[c.Constraint]
    config: PlacementConfig
    relief: bool

    def __post_init__(self) -> None:
        self.vms: dict[str, Vm] = {vm.key: vm for vm in self.snapshot.vms}
        self.hosts = {h.name: h for h in self.snapshot.hosts}
        names = {VCPUS, MEMORY, NICS} | ({CPU_DEMAND} if self.relief else set())
        for h in self.snapshot.hosts:
            names |= set(h.capacity)
        for vm in self.snapshot.vms:
            names |= set(vm.usage)
        self.resources = sorted(names)
        self.wanted: dict[tuple[str, str], int] = {}
        for k in self.constraints:
            if isinstance(k, c.Preserve):
                for key in k.vms:
                    old = self.wanted.get((key, k.resource), 0)
                    self.wanted[(key, k.resource)] = max(old, k.amount)
        # the tightest coschedule limit of each VM (its field, then constraints):
        # VMs allowed on its host, itself included
        self.coschedule: dict[str, int] = {
            key: vm.coschedule + 1 for key, vm in self.vms.items() if vm.coschedule >= 0
        }
        for k in self.constraints:
            if isinstance(k, c.Coschedule):
                for key in k.vms:
                    self.coschedule[key] = min(self.coschedule.get(key, k.amount + 1), k.amount + 1)
        #: sleeping VMs (snapshot + suspended by the plan); None: not tracked (a final
        #: placement alone says nothing about how a VM stopped)
        self.asleep: set[str] | None = None
        # allocation of every VM (current consumption until an action changes it)
        self.alloc = {
            key: {r: vm.demand(r) for r in self.resources} for key, vm in self.vms.items()
        }

    def future(self, key: str) -> dict[str, int]:
        now = self.alloc[key]
        return {r: max(now[r], self.wanted.get((key, r), 0)) for r in self.resources}

    # -- rules on one instant -------------------------------------------------------

    def capacity(
        self,
        present: Mapping[str, list[tuple[str, dict]]],
        when: str,
        only: set | None = None,
        counts: set | None = None,
    ) -> list[str]:
        """Capacities of every host (or of ``only``); coschedule limits of every host
        (or of ``counts``: where VMs arrive, an allocation adds no VM)."""
        out = []
        for host, items in present.items():
            if only is not None and host not in only:
                continue
            h = self.hosts[host]
            if items and not h.online:
                out.append(f"{when}: offline host {host} runs {items[0][0]}")
            for r in self.resources:
                total = sum(a[r] for _, a in items)
                if total > h.limit(r, self.config):
                    out.append(f"{when}: {r} on {host} is {total} > {h.limit(r, self.config)}")
            if counts is not None and host not in counts:
                continue
            limits = [self.coschedule[key] for key, _ in items if key in self.coschedule]
            if limits and len({k for k, _ in items}) > min(limits):
                out.append(
                    f"{when}: too many VMs scheduled on {host} for coschedule "
                    f"requirement of {min(limits)}"
                )
        return out

    def rules(
        self,
        present: Mapping[str, list[tuple[str, dict]]],
        when: str,
        *,
        final: bool,
        moved: set[str],
    ) -> list[str]:
        """Constraint violations at one instant (all of them at the end, else only the
        continuous ones). ``present`` maps each host to the (vm, allocation) on it."""
        hosts_of: dict[str, set[str]] = defaultdict(set)
        for host, items in present.items():
            for key, _ in items:
                hosts_of[key].add(host)
        out = []
        for k in self.constraints:
            if not (final or k.continuous):
                continue
            why = _rule(k, hosts_of, present, self, moved)
            if why:
                out.append(f"{when}: {k.kind} {why}")
        return out


def _rule(
    k: c.Constraint,
    on: Mapping[str, set[str]],
    present: Mapping[str, list[tuple[str, dict[str, int]]]],
    rp: _Replay,
    moved: set[str],
) -> str | None:
    """The violation of one constraint (None when it holds)."""
    if isinstance(k, c.Ban | c.Fence | c.Schedule | c.Root):
        return _rule_hosts(k, on, moved)
    return _rule_sets(k, on, present, rp)


def _rule_hosts(k: c.Constraint, on: Mapping[str, set[str]], moved: set[str]) -> str | None:
    """Rules on where each VM is: ban, fence, schedule, root."""
    if isinstance(k, c.Ban | c.Fence):
        for key in k.vms:
            bad = (
                on.get(key, set()) & k.hosts
                if isinstance(k, c.Ban)
                else on.get(key, set()) - k.hosts
            )
            if bad:
                return f"{key} on {sorted(bad)[0]}"
    elif isinstance(k, c.Schedule):
        if on.get(k.vm) and on[k.vm] != {k.host}:
            return f"{k.vm} is not on {k.host}"
    elif isinstance(k, c.Root):
        for key in k.vms:
            if key in moved:
                return f"{key} moved"
    return None


def _rule_sets(
    k: c.Constraint,
    on: Mapping[str, set[str]],
    present: Mapping[str, list[tuple[str, dict[str, int]]]],
    rp: _Replay,
) -> str | None:
    """Rules on sets of VMs or hosts, resources and states."""
    if isinstance(k, c.Spread):
        seen: dict[str, str] = {}
        for key in k.vms:
            for host in on.get(key, ()):
                if host in seen:
                    return f"{seen[host]} and {key} share {host}"
                seen[host] = key
    elif isinstance(k, c.Gather | c.Colocate):
        keys = k.vms if isinstance(k, c.Gather) else (k.vm, k.target)
        hosts = set().union(*(on.get(key, set()) for key in keys))
        if len(hosts) > 1:
            return f"{', '.join(keys)} are on {', '.join(sorted(hosts))}"
    elif isinstance(k, c.Among):
        used = {
            i
            for key in k.vms
            for host in on.get(key, ())
            for i, g in enumerate(k.groups)
            if host in g
        }
        outside = [
            key for key in k.vms for host in on.get(key, ()) if not any(host in g for g in k.groups)
        ]
        if len(used) > 1 or outside:
            return "VMs are not inside a single group"
    elif isinstance(k, c.Lonely):
        for host, items in present.items():
            here = {key for key, _ in items}
            if here & set(k.vms) and here - set(k.vms):
                return f"{host} mixes members and others"
    elif isinstance(k, c.Split):
        for host, items in present.items():
            here = {key for key, _ in items}
            touched = [i for i, part in enumerate(k.parts) if here & set(part)]
            if len(touched) > 1:
                return f"{host} runs VMs of parts {touched[0]} and {touched[1]}"
    elif isinstance(k, c.SplitAmong):
        owner: dict[int, int] = {}
        for i, part in enumerate(k.parts):
            used = set()
            for key in part:
                for host in on.get(key, ()):
                    inside = [g for g, hosts in enumerate(k.groups) if host in hosts]
                    if not inside:
                        return f"{key} runs on {host}, in none of the groups"
                    used.add(inside[0])
            if len(used) > 1:
                return f"part {i} runs in {len(used)} groups"
            for g in used:
                if owner.setdefault(g, i) != i:
                    return f"parts {owner[g]} and {i} share group {g}"
    elif isinstance(k, c.ResourceCapacity | c.RunningCapacity):
        total = 0
        for host in k.hosts:
            for _, a in present.get(host, []):
                total += 1 if isinstance(k, c.RunningCapacity) else a.get(k.resource, 0)
        if total > k.amount:
            return f"{total} > {k.amount} on {', '.join(sorted(k.hosts))}"
    elif isinstance(k, c.Preserve):
        for key in k.vms:
            if on.get(key) and rp.alloc[key].get(k.resource, 0) < k.amount:
                return f"{key} has {rp.alloc[key].get(k.resource, 0)} {k.resource} < {k.amount}"
    elif isinstance(k, c.Running | c.Ready):
        for key in k.vms:
            if bool(on.get(key)) != (k.kind == "running"):
                return f"{key} does not end {k.kind}"
    elif isinstance(k, c.Sleeping):
        for key in k.vms:
            if on.get(key):
                return f"{key} still runs"
            if rp.asleep is not None and key not in rp.asleep:
                return f"{key} is not suspended"
    elif isinstance(k, c.Offline):
        for host in sorted(k.hosts):
            if present.get(host):
                return f"{host} still runs {present[host][0][0]}"
    return None


def check_placement(
    snapshot: Snapshot,
    constraints: Sequence[c.Constraint],
    placement: Mapping[str, str],
    config: PlacementConfig | None = None,
    *,
    relief: bool = False,
) -> list[str]:
    """Violations of a final ``placement`` (VM key -> host; every running VM listed),
    with ``preserve`` allocations assumed granted. Empty list = viable."""
    rp = _Replay(snapshot, constraints, config or PlacementConfig(), relief)
    out = [f"unknown VM {key!r}" for key in placement if key not in rp.vms]
    out += [f"unknown host {host!r}" for host in placement.values() if host not in rp.hosts]
    if out:
        return out
    for key in placement:
        rp.alloc[key] = rp.future(key)
    present: dict[str, list[tuple[str, dict[str, int]]]] = defaultdict(list)
    for key, host in placement.items():
        present[host].append((key, rp.alloc[key]))
    moved = {k for k, h in placement.items() if rp.vms[k].host not in (None, h)}
    return (
        rp.capacity(present, "end")
        + rp.rules(present, "end", final=True, moved=moved)
        + _kept_states(rp, placement)
    )


def _kept_states(rp: _Replay, placement: Mapping[str, str]) -> list[str]:
    forced = {
        key
        for k in rp.constraints
        if isinstance(k, c.Running | c.Ready | c.Sleeping)
        for key in k.vms
    }
    out = []
    for key, vm in rp.vms.items():
        if key not in forced and (vm.state == "running") != (key in placement):
            out.append(f"end: {key} changed state without a running/ready constraint")
    return out


def check_plan(
    snapshot: Snapshot,
    constraints: Sequence[c.Constraint],
    actions: Iterable[Action],
    config: PlacementConfig | None = None,
    *,
    relief: bool = False,
) -> list[str]:
    """Replay ``actions`` from ``snapshot``; violations at any instant or at the end."""
    with paused_gc():
        return _check_plan(snapshot, constraints, actions, config or PlacementConfig(), relief)


def _check_plan(
    snapshot: Snapshot,
    constraints: Sequence[c.Constraint],
    actions: Iterable[Action],
    config: PlacementConfig,
    relief: bool,
) -> list[str]:
    rp = _Replay(snapshot, constraints, config, relief)
    rp.asleep = {key for key, vm in rp.vms.items() if vm.state == "sleeping"}
    acts = sorted(actions, key=lambda a: (a.start, a.end))
    errors = _well_formed(rp, acts, config)
    if errors:
        return errors
    where = _running(rp)
    times = sorted({a.start for a in acts} | {a.end for a in acts})
    moved: set[str] = set()
    for t in times:
        for a in acts:
            if a.end == t:
                _finish(rp, a, where)
        for a in acts:
            if a.start == t and a.kind == "migrate":
                moved.add(a.vm)
        present = _present(rp, acts, where, t)
        # a host may start over capacity (overload); nothing may arrive until it fits
        arriving = {a.dst for a in acts if a.start == t and a.kind in ("migrate", "boot")}
        growing = {a.dst for a in acts if a.start == t and a.kind == "allocate"}
        errors += rp.capacity(present, f"t={t}", arriving | growing, arriving) + rp.rules(
            present, f"t={t}", final=False, moved=moved
        )
    final: dict[str, list[tuple[str, dict]]] = defaultdict(list)
    for key, host in where.items():
        final[host].append((key, rp.alloc[key]))
    errors += rp.capacity(final, "end") + rp.rules(final, "end", final=True, moved=moved)
    return errors + _kept_states(rp, where)


def _running(rp: _Replay) -> dict[str, str]:
    """VM key -> host of every running VM (the model gives every running VM a host)."""
    return {
        key: vm.host for key, vm in rp.vms.items() if vm.state == "running" and vm.host is not None
    }


#: The fields each kind of action must set (``_well_formed`` reports a missing one).
_NEEDS = {
    "migrate": ("src", "dst"),
    "boot": ("dst",),
    "shutdown": ("src",),
    "suspend": ("src",),
    "allocate": ("dst", "resource", "amount"),
}


def _finish(rp: _Replay, a: Action, where: dict[str, str]) -> None:
    if (a.kind == "migrate" or a.kind == "boot") and a.dst is not None:
        where[a.vm] = a.dst
        rp.alloc[a.vm] = rp.future(a.vm)
    elif a.kind == "shutdown":
        where.pop(a.vm, None)
    elif a.kind == "suspend":
        where.pop(a.vm, None)
        if rp.asleep is not None:
            rp.asleep.add(a.vm)
    elif a.kind == "allocate" and a.resource is not None and a.amount is not None:
        rp.alloc[a.vm][a.resource] = a.amount


def _present(
    rp: _Replay, acts: Sequence[Action], where: Mapping[str, str], t: int
) -> dict[str, list[tuple[str, dict[str, int]]]]:
    """Host -> [(vm, allocation)] at instant t, counting actions in progress."""
    present: dict[str, list[tuple[str, dict]]] = defaultdict(list)
    for key, host in where.items():
        present[host].append((key, rp.alloc[key]))
    for a in acts:
        if not a.start <= t < a.end:
            continue
        if a.dst is None:
            continue  # reported by _well_formed
        if a.kind in ("migrate", "boot"):
            present[a.dst].append((a.vm, rp.future(a.vm)))
        elif a.kind == "allocate":
            items = present[a.dst]
            for i, (key, alloc) in enumerate(items):
                if key == a.vm:
                    items[i] = (key, {**alloc, a.resource: max(alloc[a.resource], a.amount)})
    return present


def _well_formed(rp: _Replay, acts: Sequence[Action], config: PlacementConfig) -> list[str]:
    out = []
    where = _running(rp)
    busy: dict[str, int] = {}
    for a in acts:  # sorted by start
        if a.vm not in rp.vms:
            out.append(f"action on unknown VM {a.vm!r}")
            continue
        if busy.get(a.vm, -1) > a.start:
            out.append(f"t={a.start}: {a.vm} is in two actions at once")
        busy[a.vm] = a.end
        if a.kind == "migrate" and where.get(a.vm) != a.src:
            out.append(f"t={a.start}: migrate {a.vm} from {a.src} but it is on {where.get(a.vm)}")
        if a.kind == "boot" and a.vm in where:
            out.append(f"t={a.start}: boot of running {a.vm}")
        if a.kind in ("shutdown", "suspend") and where.get(a.vm) != a.src:
            out.append(f"t={a.start}: {a.kind} of {a.vm} which is not on {a.src}")
        if a.kind == "suspend" and a.dst not in (None, a.src):
            out.append(f"t={a.start}: suspend of {a.vm} to another host ({a.dst})")
        if a.end <= a.start:
            out.append(f"{a.kind} {a.vm}: end {a.end} <= start {a.start}")
        missing = [name for name in _NEEDS.get(a.kind, ()) if getattr(a, name) is None]
        if missing:
            out.append(f"{a.kind} {a.vm}: no {missing[0]}")
        if a.kind in ("migrate", "boot") and a.dst is not None:
            where[a.vm] = a.dst
        elif a.kind in ("shutdown", "suspend"):
            where.pop(a.vm, None)
    for t in sorted({a.start for a in acts}):
        live = [a for a in acts if a.kind == "migrate" and a.start <= t < a.end]
        for host in {a.src for a in live} | {a.dst for a in live}:
            n_out = sum(a.src == host for a in live)
            n_in = sum(a.dst == host for a in live)
            if n_out > config.max_migrations_out or n_in > config.max_migrations_in:
                out.append(f"t={t}: {host} has {n_out} migrations out, {n_in} in")
    return out
