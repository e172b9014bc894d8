"""Queue, dry-run, mv and launch: minimega's namespace scheduler on the placement engine.

    vm launch TYPE NAMES  -> queue()       names checked, config snapshotted, assignment dropped
    ns schedule dry-run   -> dry_run()     engine places the queue on the namespace's hosts
    ns schedule mv        -> move()        edit the assignment (capacity/coschedule/colocate
                                           re-checked; a pin is overridden, as in minimega)
    ns schedule / vm launch -> launch()    saved or fresh assignment -> Launch effect

All functions are pure: they take a ``Namespace`` and return a new one (or raise
``CommandError`` with minimega's text), so a refusal leaves the queue as it was.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import replace

from dvms.names import InvalidName, validate_vm_name
from dvms.namespace.config import CommandError, VmConfig
from dvms.namespace.effects import Context, Launch, PlacedVm
from dvms.namespace.state import (
    VM_STATES,
    AssignEntry,
    Batch,
    Namespace,
    ScheduleStat,
    State,
    VmRecord,
    with_vms,
)
from dvms.placement import Host, PlacementError, Snapshot, Vm, check_placement, solve_launch
from dvms.placement import constraints as c
from dvms.placement.explain import Refusal
from dvms.ranges import RangeError, expand, natural_key

__all__ = [
    "adopt_vms",
    "dry_run",
    "forget_vms",
    "launch",
    "launch_finished",
    "launch_names",
    "move",
    "queue",
    "report_vms",
]

_COUNT = re.compile(r"[+-]?[0-9]+")
_MAX_COUNT = 2**31 - 1


def launch_names(arg: str) -> list[str]:
    """minimega's ``expandLaunchNames``: a count gives that many unnamed VMs ("")."""
    if _COUNT.fullmatch(arg) and -_MAX_COUNT - 1 <= int(arg) <= _MAX_COUNT:
        if int(arg) <= 0:
            raise CommandError("invalid number of vms (must be > 0)")
        return [""] * int(arg)
    try:
        names = expand(arg)
    except RangeError as err:
        raise CommandError(str(err)) from None
    if not names:
        raise CommandError("no VMs to launch")
    seen: set[str] = set()
    for name in names:
        if name == "all":
            raise CommandError(f"invalid vm name, `{name}` is a reserved word")
        if _COUNT.fullmatch(name):
            raise CommandError(f"invalid vm name, `{name}` is an integer")
        if name in seen:
            raise CommandError(f"`{name}` is specified twice in VMs to launch")
        seen.add(name)
    return names


def queue(ns: Namespace, arg: str, vm_type: str) -> Namespace:
    """minimega's ``Namespace.Queue``: check the names, snapshot the config, append."""
    names = launch_names(arg)
    cfg = ns.config
    if len(names) > 1 and cfg.uuid:
        raise CommandError("cannot launch multiple VMs with a pre-configured UUID")
    launched = {vm.name for vm in ns.vms}
    for name in names:
        if name in launched:
            raise CommandError(f"vm already exists with name `{name}`")
        if name:
            try:
                validate_vm_name(name)
            except InvalidName as err:
                raise CommandError(str(err)) from None
    if cfg.uuid and cfg.uuid in {vm.config.uuid for vm in ns.vms}:
        raise CommandError(f"vm already exists with UUID `{cfg.uuid}`")
    queued = ns.queued_names()
    for name in names:
        if name and name in queued:
            raise CommandError(f"vm already queued with name `{name}`")
    if cfg.uuid and cfg.uuid in {b.config.uuid for b in ns.queue}:
        raise CommandError(f"vm already queued with UUID `{cfg.uuid}`")
    batch = Batch(vm_type, tuple(names), cfg)
    return replace(ns, queue=(*ns.queue, batch), assignment=None)


# ------------------------------------------------------------------------ the engine


def _key(ns: Namespace, name: str) -> str:
    return f"{ns.name}/{name}"


def _slot_name(batch: int, index: int, name: str) -> str:
    return name or f"#{batch}.{index}"  # '#' never occurs in a VM name


def _slots(ns: Namespace) -> list[tuple[int, int, str, Batch]]:
    return [(i, j, n, b) for i, b in enumerate(ns.queue) for j, n in enumerate(b.names)]


def snapshot(ctx: Context, ns: Namespace) -> Snapshot:
    """The namespace's live hosts with every VM on them (all namespaces, any state until
    flushed, as minimega's host stats count them)."""
    hosts = tuple(h for h in ctx.cluster.hosts if h.name in ns.hosts and h.online)
    names = {h.name for h in hosts}
    vms: dict[str, Vm] = {vm.key: vm for vm in ctx.cluster.vms if vm.host in names}
    for other in ctx.state.namespaces:
        if other.name == ns.name:
            continue
        for rec in other.vms:
            if rec.host in names:
                vms.setdefault(f"{other.name}/{rec.name}", _running(other.name, rec))
    for rec in ns.vms:  # our own table wins: it has the config we launched with
        if rec.host in names:
            vms[_key(ns, rec.name)] = _running(ns.name, rec)
    return Snapshot(hosts, tuple(vms.values()))


def _running(namespace: str, rec: VmRecord) -> Vm:
    cfg = rec.config
    return Vm(rec.name, namespace, cfg.vcpus, cfg.memory, len(cfg.networks), rec.host,
              "running", coschedule=cfg.coschedule)  # fmt: skip


def _ready(ns: Namespace, name: str, cfg: VmConfig) -> Vm:
    return Vm(name, ns.name, cfg.vcpus, cfg.memory, len(cfg.networks), None, "ready",
              coschedule=cfg.coschedule)  # fmt: skip


def _unrooted_targets(ns: Namespace) -> list[str]:
    """Colocate targets minimega reports as nonexistent: a queued VM whose colocate chain
    never reaches a placed VM (missing target, or a cycle)."""
    follows = {n: b.config.colocate for _, _, n, b in _slots(ns) if n and b.config.colocate}
    unnamed = [b.config.colocate for _, _, n, b in _slots(ns) if not n and b.config.colocate]
    queued = ns.queued_names()
    launched = {vm.name for vm in ns.vms}

    def rooted(start: str) -> bool:
        seen, node = set(), start
        while node in follows and node not in seen:
            seen.add(node)
            node = follows[node]
        return node not in seen and (node in launched or node in queued)

    bad = {t for n, t in follows.items() if not rooted(n)}
    bad |= {t for t in unnamed if t not in launched and (t not in queued or not rooted(t))}
    return sorted(bad)


def _constraints(ns: Namespace, *, pins: bool) -> list[c.Constraint]:
    """Schedule pins (unless ``pins`` is False) and colocate links for the queue."""
    launched = {vm.name: vm.host for vm in ns.vms}
    queued = ns.queued_names()
    out: list[c.Constraint] = []
    for i, j, name, batch in _slots(ns):
        key = _key(ns, _slot_name(i, j, name))
        target = batch.config.colocate
        if pins and batch.config.schedule:
            out.append(c.Schedule(key, batch.config.schedule))
        if target in queued:
            out.append(c.Colocate(key, _key(ns, target)))
        elif target in launched:
            # as minimega: colocating with a launched VM pins to its host
            link = c.Colocate(key, _key(ns, target))
            out.append(c.Schedule(key, launched[target]) if pins else link)
    return out


def _precheck(ns: Namespace, snap: Snapshot) -> None:
    if not ns.hosts:
        raise CommandError("namespace must contain at least one host to launch VMs")
    if not ns.queue:
        raise CommandError("namespace must contain at least one queued VM to launch VMs")
    if not snap.hosts:
        raise CommandError("no hosts to schedule VMs on")


def dry_run(ctx: Context, ns: Namespace) -> tuple[AssignEntry, ...]:
    """A fresh assignment for the whole queue (raises ``CommandError`` on refusal)."""
    snap = snapshot(ctx, ns)
    _precheck(ns, snap)
    online = {h.name for h in snap.hosts}
    constraints = _constraints(ns, pins=True)
    for k in constraints:
        if isinstance(k, c.Schedule) and k.host not in online:
            raise CommandError(f"VM scheduled on unknown host: `{k.host}`")
    missing = _unrooted_targets(ns)
    if missing:
        raise CommandError(f"nonexistent colocate VMs: [{', '.join(missing)}]")
    vms = [_ready(ns, _slot_name(i, j, n), b.config) for i, j, n, b in _slots(ns)]
    try:
        result = solve_launch(snap, vms, constraints, ctx.placement)
    except PlacementError as err:
        raise CommandError(str(err)) from None
    if not result.ok:
        raise CommandError(_refusal_text(ns, result.refusal))
    return tuple(
        AssignEntry(i, j, n, result.placement[_key(ns, _slot_name(i, j, n))])
        for i, j, n, _ in _slots(ns)
    )


def _refusal_text(ns: Namespace, refusal: Refusal | None) -> str:
    if refusal is None:  # pragma: no cover - the engine always explains a refusal
        return "no host fits the queued VMs"
    verdicts = sorted(refusal.hosts, key=lambda v: v.host)
    if verdicts and all(v.rule == "coschedule" for v in verdicts):
        return verdicts[0].detail  # minimega's "too many VMs scheduled on H for ..."
    named = tuple(_said(key.removeprefix(f"{ns.name}/")) for key in refusal.vms)
    return str(replace(refusal, vms=named)).replace(f"{ns.name}/", "")


def _said(slot: str) -> str:
    """A queue slot as an operator knows it: its name, or for an unnamed VM of ``vm
    launch N`` its place in the queue."""
    if not slot.startswith("#"):
        return slot
    batch, _, index = slot[1:].partition(".")
    return f"unnamed VM {int(index) + 1} of queued launch {int(batch) + 1}"


# ------------------------------------------------------------------------------- mv


def move(ctx: Context, ns: Namespace, targets: str, dst: str) -> tuple[Namespace, str | None]:
    """``ns schedule mv``: the new namespace and minimega's error for a target that was
    not found (targets before it stay moved, as in minimega). A move that would break
    capacity, coschedule or colocate is refused as a whole (``CommandError``)."""
    if ns.assignment is None:
        raise CommandError("must run dry-run first")
    if dst not in ns.hosts:
        raise CommandError("new dst host is not in namespace")
    try:
        names = expand(targets)
    except RangeError as err:
        raise CommandError(str(err)) from None
    entries = list(ns.assignment)
    moved: list[str] = []
    error = None
    for name in names:
        found = [k for k, e in enumerate(entries) if name and e.name == name]
        if not found:
            error = f"reassign {name}: vm not found"
            break
        entries[found[0]] = replace(entries[found[0]], host=dst)
        moved.append(name)
    if moved and ns.queue:
        broken = _new_violations(ctx, ns, ns.assignment, entries)
        if broken:
            raise CommandError(f"cannot move {', '.join(moved)} to {dst}: {broken[0]}")
    return replace(ns, assignment=tuple(entries)), error


def _new_violations(
    ctx: Context, ns: Namespace, before: Iterable[AssignEntry], after: Iterable[AssignEntry]
) -> list[str]:
    snap = snapshot(ctx, ns)
    ready = [_ready(ns, _slot_name(i, j, n), b.config) for i, j, n, b in _slots(ns)]
    snap = _with_hosts(snap.with_vms(ready), [e.host for e in after])
    constraints = [*_constraints(ns, pins=False), c.Running(tuple(vm.key for vm in ready))]

    def violations(entries: Iterable[AssignEntry]) -> set[str]:
        placement = dict(snap.placement())
        for e in entries:
            placement[_key(ns, _slot_name(e.batch, e.index, e.name))] = e.host
        found = check_placement(snap, constraints, placement, ctx.placement)
        return {v.removeprefix("end: ").replace(f"{ns.name}/", "") for v in found}

    return sorted(violations(after) - violations(before))


def _with_hosts(snap: Snapshot, names: Iterable[str]) -> Snapshot:
    """Add stand-ins for assigned hosts that left the cluster (so the check can name them)."""
    known = {h.name for h in snap.hosts}
    extra = tuple(Host(n, online=False) for n in sorted(set(names) - known))
    return Snapshot(snap.hosts + extra, snap.vms) if extra else snap


# --------------------------------------------------------------------------- launch


def launch(ctx: Context, ns: Namespace) -> tuple[Namespace, Launch]:
    """minimega's ``Schedule(false)``: launch as the saved assignment says (or a fresh
    one), name the unnamed VMs ``vm-<k>``, record them BUILDING, open a status row."""
    if not ns.hosts:
        raise CommandError("namespace must contain at least one host to launch VMs")
    if not ns.queue:
        raise CommandError("namespace must contain at least one queued VM to launch VMs")
    assignment = ns.assignment if ns.assignment is not None else dry_run(ctx, ns)
    taken = {vm.name for vm in ns.vms} | ns.queued_names()
    counter, next_id = ns.next_name, ns.next_id
    records, out = list(ns.vms), []
    for entry in sorted(assignment, key=lambda e: (e.batch, e.index)):
        batch = ns.queue[entry.batch]
        name = entry.name
        while not name:
            candidate = f"vm-{counter}"
            counter += 1
            name = "" if candidate in taken else candidate
        taken.add(name)
        records.append(VmRecord(next_id, name, entry.host, "BUILDING", batch.vm_type, batch.config))
        out.append(PlacedVm(name, entry.host, batch.vm_type, batch.config))
        next_id += 1
    stat = ScheduleStat(ctx.now, None, "running", 0, 0, len(out), len(ns.hosts),
                        launcher=ctx.cluster.local)  # fmt: skip
    new = replace(ns, queue=(), assignment=None, vms=tuple(records), stats=(*ns.stats, stat),
                  next_name=counter, next_id=next_id)  # fmt: skip
    return new, Launch(ns.name, tuple(out), len(new.stats) - 1)


def finish(ns: Namespace, schedule: int, failed: Mapping[str, str], now: float) -> Namespace:
    """Close status row ``schedule``: VMs named in ``failed`` were not created (they are
    dropped from the table so their names are free again); failures count VMs."""
    if not 0 <= schedule < len(ns.stats) or ns.stats[schedule].state != "running":
        raise ValueError(f"namespace {ns.name}: no running schedule #{schedule}")
    stat = ns.stats[schedule]
    n_failed = sum(1 for name in failed if ns.vm(name) is not None)
    done = replace(stat, end=now, state="completed", launched=stat.total - n_failed,
                   failures=n_failed)  # fmt: skip
    stats = (*ns.stats[:schedule], done, *ns.stats[schedule + 1 :])
    return replace(ns, stats=stats, vms=tuple(vm for vm in ns.vms if vm.name not in failed))


def launch_token(namespace: str, start: float) -> str:
    """What names one launch between nodes: its namespace and its status row's start."""
    return f"{namespace}@{start:.6f}"


def interrupt(ns: Namespace, schedule: int, reported: set[str], now: float) -> Namespace:
    """Close running row ``schedule`` whose launcher stopped before finishing it: the VMs
    of the namespace still BUILDING that no host reports (``reported``) were not created
    and are dropped, as ``finish`` drops a failed launch's VMs."""
    launcher = ns.stats[schedule].launcher
    failed = {vm.name: f"launch interrupted: {launcher} stopped before creating it"
              for vm in ns.vms if vm.state == "BUILDING" and vm.name not in reported}  # fmt: skip
    return finish(ns, schedule, failed, now)


# ------------------------------------------------------------- reports from the daemon


def _namespace(state: State, namespace: str) -> Namespace:
    ns = state.get(namespace)
    if ns is None:
        raise ValueError(f"unknown namespace: {namespace}")
    return ns


def launch_finished(
    state: State, namespace: str, schedule: int, failed: Mapping[str, str], *, now: float
) -> State:
    """Close the ``ns schedule status`` row of a ``Launch``: every VM of it was created
    except those in ``failed`` (name -> error), which are dropped from the namespace."""
    return state.put(finish(_namespace(state, namespace), schedule, failed, now))


def report_vms(state: State, namespace: str, reports: Mapping[str, tuple[str, str]]) -> State:
    """Hosts' word on VMs of ``namespace``: name -> (host, state). Unknown names are
    ignored (a report may race with ``vm flush``)."""
    ns = _namespace(state, namespace)
    for host, vm_state in reports.values():
        if vm_state not in VM_STATES or not host:
            raise ValueError(f"bad report ({host!r}, {vm_state!r})")
    vms = [replace(v, host=reports[v.name][0], state=reports[v.name][1]) if v.name in reports
           else v for v in ns.vms]  # fmt: skip
    return state.put(with_vms(ns, vms))


def adopt_vms(state: State, namespace: str, vms: Mapping[str, tuple[str, str, VmConfig]]) -> State:
    """VMs of ``namespace`` created by other means than ``vm launch`` (``submit``, or
    found on the hosts): name -> (host, state, config). Each one the table does not hold
    yet gets a record with the next free id, in name order; names already in the table
    or queued are left as they are. ``namespace`` must exist."""
    ns = _namespace(state, namespace)
    taken = {vm.name for vm in ns.vms} | ns.queued_names()
    records, next_id = list(ns.vms), ns.next_id
    for name in sorted((n for n in vms if n not in taken), key=natural_key):
        host, vm_state, config = vms[name]
        records.append(VmRecord(next_id, name, host, vm_state, "kvm", config))
        next_id += 1
    if next_id == ns.next_id:
        return state
    # one replace: a table with ids at or above next_id is not a valid namespace
    return state.put(replace(ns, vms=tuple(sorted(records, key=lambda v: v.id)), next_id=next_id))


def forget_vms(state: State, namespace: str, names: set[str]) -> State:
    """Drop VMs that vanished from their hosts."""
    ns = _namespace(state, namespace)
    return state.put(with_vms(ns, [v for v in ns.vms if v.name not in names]))
