"""``vm ...``, ``clear vm config`` and ``host``: the VM API of the active namespace.

VM targets follow minimega's ``VMs.apply``: a range list of names, numbers are VM ids,
``all`` is every VM. With one explicit target, a missing VM gives ``vm not found: X`` and
a VM in the wrong state ``VM state error: X``; with several, the missing ones are skipped.
State changes are recorded at once (the state is what was asked for; the daemon corrects
it with ``report_vms`` when a host says otherwise) and returned as effects.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime

from dvms.namespace import schedule as sched
from dvms.namespace.config import (
    FIELDS,
    CommandError,
    check_colocate,
    check_schedule,
    clear_field,
    config_dump,
    set_field,
)
from dvms.namespace.effects import (
    SOURCE_MESHAGE,
    Flush,
    Kill,
    Migrate,
    Run,
    Start,
    Stop,
    Table,
    Text,
    invalid,
    match,
)
from dvms.namespace.state import VM_TYPES, Namespace, VmRecord, with_vms
from dvms.placement import PlacementError, check_placement, solve_launch
from dvms.placement import constraints as c
from dvms.ranges import RangeError, expand

__all__ = ["clear_vm", "host", "launch_queue", "status_table", "vm"]

INFO_COLUMNS = ("host", "id", "name", "state", "namespace", "type", "vcpus", "memory",
                "vlan", "disks", "tags")  # fmt: skip
SUMMARY_COLUMNS = ("host", "id", "name", "state", "namespace", "type", "vlan")


def vm(run: Run, words: list[str]) -> None:
    if len(words) < 2:
        raise invalid(words)
    verbs = ("config", "launch", "info", "start", "stop", "kill", "flush", "migrate")
    verb = match(words[1], verbs, words)
    args = words[2:]
    if verb == "config":
        _config(run, args, words)
    elif verb == "launch":
        _launch(run, args, words)
    elif verb == "info":
        _info(run, args, words)
    elif verb == "migrate":
        _migrate(run, args, words)
    else:
        _lifecycle(run, verb, args, words)


# ------------------------------------------------------------------------- vm config


def _config(run: Run, args: list[str], words: list[str]) -> None:
    ns = run.ns()
    if not args:
        run.output = Text(config_dump(ns.config))
        return
    name = match(args[0], tuple(FIELDS), words)
    values = args[1:]
    if name == "tags":
        _tags(run, ns, values, words)
        return
    if not values:
        run.output = Text(FIELDS[name].show(getattr(ns.config, name)))
        return
    value = FIELDS[name].parse(values)
    if name == "schedule":
        local = run.ctx.cluster.local
        value = local if value == "localhost" and local else value
        check_schedule(ns.config, value, ns.hosts)
    elif name == "colocate":
        check_colocate(ns.config, value)
    run.update(config=set_field(ns.config, name, value))


def _tags(run: Run, ns: Namespace, values: list[str], words: list[str]) -> None:
    tags = dict(ns.config.tags)
    if not values:
        run.output = Text(FIELDS["tags"].show(ns.config.tags))
    elif len(values) == 1:
        run.output = Text(tags.get(values[0], ""))
    elif len(values) == 2:
        tags[values[0]] = values[1]
        run.update(config=set_field(ns.config, "tags", tuple(sorted(tags.items()))))
    else:
        raise invalid(words)


def clear_vm(run: Run, words: list[str]) -> None:
    """``clear vm config [FIELD]`` and ``clear vm config tag KEY``."""
    if len(words) < 3 or match(words[2], ("config",), words) != "config":
        raise invalid(words)
    ns = run.ns()
    rest = words[3:]
    if not rest:
        run.update(config=clear_field(ns.config, None))
        return
    if rest[0] == "tag" and len(rest) == 2:
        keep = () if rest[1] == "all" else tuple(t for t in ns.config.tags if t[0] != rest[1])
        run.update(config=set_field(ns.config, "tags", keep))
        return
    if len(rest) != 1:
        raise invalid(words)
    run.update(config=clear_field(ns.config, match(rest[0], tuple(FIELDS), words)))


# ------------------------------------------------------------------------- vm launch


def _launch(run: Run, args: list[str], words: list[str]) -> None:
    if run.ctx.source == SOURCE_MESHAGE:
        raise CommandError(f"cannot run `{' '.join(words)}` via meshage")
    if not args:
        launch_queue(run)
        return
    if len(args) != 2:
        raise invalid(words)  # saved configs (`vm config save`) are not supported
    vm_type = match(args[0], VM_TYPES, words)
    ns = run.update(**_fields(sched.queue(run.ns(), args[1], vm_type)))
    if not ns.queueing:
        launch_queue(run)


def _fields(ns: Namespace) -> dict:
    return {"queue": ns.queue, "assignment": ns.assignment}


def launch_queue(run: Run) -> None:
    """``vm launch`` / ``ns schedule``: place and launch everything queued."""
    ns, effect = sched.launch(run.ctx, run.ns())
    run.save(ns)
    run.effects.append(effect)


def status_table(ns: Namespace) -> Table:
    rows = []
    for s in ns.stats:
        end = "" if s.end is None else _rfc822(s.end)
        rows.append((_rfc822(s.start), end, s.state, str(s.launched), str(s.failures),
                     str(s.total), str(s.hosts)))  # fmt: skip
    header = ("start", "end", "state", "launched", "failures", "total", "hosts")
    return Table(header, tuple(rows))


def _rfc822(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%d %b %y %H:%M UTC")


# --------------------------------------------------------------------------- vm info


def _info(run: Run, args: list[str], words: list[str]) -> None:
    if len(args) > 1:
        raise invalid(words)
    summary = bool(args) and match(args[0], ("summary",), words) == "summary"
    ns = run.ns()
    header = SUMMARY_COLUMNS if summary else INFO_COLUMNS
    rows = []
    for rec in sorted(ns.vms, key=lambda v: v.id):
        cells = _info_cells(ns, rec)
        rows.append(tuple(cells[h] for h in header))
    run.output = Table(header, tuple(rows))


def _info_cells(ns: Namespace, rec: VmRecord) -> dict[str, str]:
    cfg = rec.config
    return {
        "host": rec.host,
        "id": str(rec.id),
        "name": rec.name,
        "state": rec.state,
        "namespace": ns.name,
        "type": rec.vm_type,
        "vcpus": str(cfg.vcpus),
        "memory": str(cfg.memory),
        "vlan": "[" + ", ".join(cfg.networks) + "]",
        "disks": " ".join(cfg.disks),
        "tags": "{" + ",".join(f'"{k}":"{v}"' for k, v in cfg.tags) + "}",
    }


# ---------------------------------------------------------------------- vm lifecycle

# (vm, wild) -> (applicable, new state or None to forget the VM)
Transition = Callable[[VmRecord, bool], tuple[bool, str | None]]


def _start(vm: VmRecord, wild: bool) -> tuple[bool, str | None]:
    if vm.state == "RUNNING":
        if wild:
            return False, vm.state
        raise CommandError("vm is already running")
    if vm.state in ("QUIT", "ERROR") and wild:
        return False, vm.state
    return True, "RUNNING"


def _stop(vm: VmRecord, wild: bool) -> tuple[bool, str | None]:
    return (True, "PAUSED") if vm.state == "RUNNING" else (False, vm.state)


def _kill(vm: VmRecord, wild: bool) -> tuple[bool, str | None]:
    killable = vm.state in ("BUILDING", "RUNNING", "PAUSED")
    return (True, "QUIT") if killable else (False, vm.state)


def _flush(vm: VmRecord, wild: bool) -> tuple[bool, str | None]:
    return (True, None) if vm.state in ("QUIT", "ERROR") else (False, vm.state)


_TRANSITIONS: dict[str, tuple[Transition, type]] = {
    "start": (_start, Start),
    "stop": (_stop, Stop),
    "kill": (_kill, Kill),
    "flush": (_flush, Flush),
}


def targets(ns: Namespace, text: str) -> tuple[list[VmRecord], bool, list[str]]:
    """The VMs ``text`` selects, whether it was wild, and the expanded values."""
    try:
        values = expand(text)
    except RangeError as err:
        raise CommandError(str(err)) from None
    wild = "all" in values
    ids = {int(v) for v in values if v.isdigit()}
    names = {v for v in values if not v.isdigit()} - {"all"}
    chosen = [vm for vm in ns.vms if wild or vm.name in names or vm.id in ids]
    return chosen, wild, values


def _lifecycle(run: Run, verb: str, args: list[str], words: list[str]) -> None:
    if len(args) != 1 and not (verb == "flush" and not args):
        raise invalid(words)
    ns = run.ns()
    fn, effect = _TRANSITIONS[verb]
    chosen, wild, values = targets(ns, args[0] if args else "all")
    done: dict[str, str | None] = {}
    for rec in chosen:
        applicable, new_state = fn(rec, wild)
        if applicable:
            done[rec.name] = new_state
    if len(values) == 1 and not wild:
        if not chosen:
            raise CommandError(f"vm not found: {values[0]}")
        if not done:
            raise CommandError(f"VM state error: {values[0]}")
    if not done:
        return
    kept = [v for v in ns.vms if not (v.name in done and done[v.name] is None)]
    run.save(with_vms(ns, [replace(v, state=done.get(v.name) or v.state) for v in kept]))
    run.effects.append(effect(ns.name, tuple((v.name, v.host) for v in chosen if v.name in done)))


# ------------------------------------------------------------------------ vm migrate


def _migrate(run: Run, args: list[str], words: list[str]) -> None:
    if len(args) not in (1, 2):
        raise invalid(words)
    ns = run.ns()
    chosen, _, values = targets(ns, args[0])
    if not chosen:
        raise CommandError(f"vm not found: {values[0] if values else args[0]}")
    dst = args[1] if len(args) == 2 else None
    if dst is not None and dst in run.ctx.cluster.silent:
        raise CommandError(f"host {dst} is unreachable: it did not answer (down or cut off)")
    if dst is not None and dst not in ns.hosts:
        raise CommandError(f"host is not in namespace: {dst}")
    for rec in chosen:
        if rec.state not in ("BUILDING", "RUNNING", "PAUSED"):
            raise CommandError(f"VM state error: {rec.name}")
        target = dst or _pick(run, ns, rec)
        if target == rec.host:
            raise CommandError(f"vm {rec.name} is already on {target}")
        _check_move(run, ns, rec, target)
        ns = with_vms(ns, [replace(v, host=target) if v is rec else v for v in ns.vms])
        run.effects.append(Migrate(ns.name, rec.name, rec.host, target))
    run.save(ns)


def _launched_constraints(ns: Namespace) -> list[c.Constraint]:
    names = {v.name for v in ns.vms}
    return [c.Colocate(f"{ns.name}/{v.name}", f"{ns.name}/{v.config.colocate}")
            for v in ns.vms if v.config.colocate in names]  # fmt: skip


def _pick(run: Run, ns: Namespace, rec: VmRecord) -> str:
    """The least loaded other host that takes ``rec`` (capacity and coschedule)."""
    snap = sched.snapshot(run.ctx, ns)
    key = f"{ns.name}/{rec.name}"
    rest = replace(snap, vms=tuple(v for v in snap.vms if v.key != key))
    moving = replace(next(v for v in snap.vms if v.key == key), host=None, state="ready")
    ban = c.Ban((key,), frozenset({rec.host}))
    try:
        result = solve_launch(rest, [moving], [ban], run.ctx.placement)
    except PlacementError as err:
        raise CommandError(str(err)) from None
    if not result.ok:
        raise CommandError(str(result.refusal).replace(f"{ns.name}/", ""))
    return result.placement[key]


def _check_move(run: Run, ns: Namespace, rec: VmRecord, dst: str) -> None:
    snap = sched.snapshot(run.ctx, ns)
    key = f"{ns.name}/{rec.name}"
    constraints = _launched_constraints(ns)
    before = snap.placement()
    after = {**before, key: dst}

    def found(placement: dict[str, str]) -> set[str]:
        out = check_placement(snap, constraints, placement, run.ctx.placement)
        return {v.removeprefix("end: ").replace(f"{ns.name}/", "") for v in out}

    broken = sorted(found(after) - found(before))
    if broken:
        raise CommandError(f"cannot migrate {rec.name} to {dst}: {broken[0]}")


# ------------------------------------------------------------------------------ host


def host(run: Run, words: list[str]) -> None:
    """Per-host figures summed over every namespace (minimega's ``host``), for the
    hosts of the active namespace."""
    if len(words) != 1:
        raise invalid(words)
    snap = sched.snapshot(run.ctx, run.ns())
    rows = []
    for h in sorted(snap.hosts, key=lambda h: h.name):
        on = [v for v in snap.vms if v.host == h.name]
        limits = [v.coschedule for v in on if v.coschedule >= 0]
        rows.append((h.name, str(h.cpus), str(h.memory_mib), str(len(on)),
                     str(min(limits) + 1) if limits else "-1",
                     str(sum(v.vcpus for v in on)), str(sum(v.memory_mib for v in on)),
                     str(sum(v.nics for v in on))))  # fmt: skip
    header = ("host", "cpus", "memtotal", "vms", "vmlimit", "cpucommit", "memcommit", "netcommit")
    run.output = Table(header, tuple(rows))
