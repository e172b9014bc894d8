"""The interpreter: minimega command words -> operations on the namespace state.

    execute("ns add-hosts node[1-3]", ctx) -> Result(state, session, output, effects, error)

Grammar (minimega's; keywords may be abbreviated to a unique prefix):

    namespace [NAME [COMMAND...]]          clear namespace [NAME|all]
    ns hosts | add-hosts R | del-hosts R | load [cpucommit|memcommit|netcommit]
       | queueing [true|false] | queue | flush | run COMMAND...
       | bridge NAME [vxlan|gre] | del-bridge NAME
       | schedule [dry-run | dump | mv VMS HOST | status]
    vm config [FIELD [VALUE...]]            clear vm config [FIELD]
    vm launch [TYPE NAMES|N]  vm info [summary]  vm start|stop|kill|flush|migrate TARGET [HOST]
    host

Output flags may prefix any command: ``.columns a,b`` (keep those columns, in that
order) and ``.annotate true|false`` (add / drop the ``host`` column).
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import replace

from dvms.names import InvalidName, validate_namespace_name
from dvms.namespace import schedule as sched
from dvms.namespace import vmcmds
from dvms.namespace.config import CommandError, config_dump
from dvms.namespace.effects import (
    SOURCE_MESHAGE,
    ClearNamespace,
    Context,
    DelBridge,
    Result,
    Run,
    RunOnHosts,
    Session,
    SetBridge,
    Table,
    Text,
    invalid,
    match,
)
from dvms.namespace.state import DEFAULT_NAMESPACE, LOADS, Bridge
from dvms.ranges import RangeError, compress, expand

__all__ = ["execute"]

_NS_RUN_FORBIDDEN = (("read",), ("mesh", "send"), ("ns", "run"), ("vm", "launch"))
_MAX_DEPTH = 16


def execute(line: str | Sequence[str], ctx: Context) -> Result:
    """Run one command. Never raises on user input: refusals come back in ``error``."""
    run = Run(ctx)
    try:
        words = shlex.split(line) if isinstance(line, str) else list(line)
        if not words:
            return Result(ctx.state, ctx.session)
        command(run, words)
    except CommandError as err:
        return Result(ctx.state, ctx.session, error=str(err), format=run.format)
    except ValueError as err:  # shlex: unbalanced quotes
        return Result(ctx.state, ctx.session, error=f"invalid command: {err}", format=run.format)
    if run.partial_error is not None:
        return Result(run.state, ctx.session, error=run.partial_error, format=run.format)
    return Result(run.state, run.session, run.output, tuple(run.effects), format=run.format)


def command(run: Run, words: list[str]) -> None:
    """Dispatch one command (also used for ``namespace NAME COMMAND...``)."""
    run.depth += 1
    if run.depth > _MAX_DEPTH:
        raise CommandError("command nested too deeply")
    words, columns, annotate = _flags(run, words)
    if not words:
        raise invalid(words)
    head = match(words[0], ("namespace", "ns", "clear", "vm", "host"), words)
    handler = {"namespace": _namespace, "ns": _ns, "clear": _clear, "vm": vmcmds.vm,
               "host": vmcmds.host}[head]  # fmt: skip
    handler(run, words)
    if isinstance(run.output, Table) and (columns is not None or annotate is not None):
        run.output = _select(run.output, columns, annotate)


def _flags(run: Run, words: list[str]) -> tuple[list[str], list[str] | None, bool | None]:
    """The output flags leading ``words`` (``.columns``, ``.annotate``; ``.json`` and
    ``.headers`` go to ``run.format``; ``.compress`` merges identical responses of
    several hosts, and a dvms command has one response)."""
    columns: list[str] | None = None
    annotate: bool | None = None
    while words and words[0].startswith("."):
        if len(words) < 2:
            raise invalid(words)
        flag, value, words = words[0], words[1], words[2:]
        if flag in (".columns", ".column"):
            columns = [c for c in value.split(",") if c]
        elif flag == ".annotate" and value in ("true", "false"):
            annotate = value == "true"
        elif flag == ".json" and value in ("true", "false"):
            run.format = replace(run.format, json=value == "true")
        elif flag == ".headers" and value in ("true", "false"):
            run.format = replace(run.format, headers=value == "true")
        elif flag == ".compress" and value in ("true", "false"):
            continue
        else:
            raise invalid([flag, value, *words])
        if not words:
            raise CommandError(
                f"{flag} {value} applies to the command after it, e.g. `{flag} {value} vm info`"
            )
    return words, columns, annotate


def _select(table: Table, columns: list[str] | None, annotate: bool | None) -> Table:
    unknown = [c for c in columns or () if c not in table.header]
    if unknown:
        raise CommandError(
            f"unknown column{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
            f"this table has: {', '.join(table.header)}"
        )
    names = list(table.header) if columns is None else list(columns)
    if annotate and "host" in table.header and "host" not in names:
        names.insert(0, "host")
    if annotate is False and columns is None and "host" in names:
        names.remove("host")
    index = [table.header.index(n) for n in names]
    return Table(tuple(names), tuple(tuple(row[i] for i in index) for row in table.rows))


# --------------------------------------------------------------------- namespace


def _namespace(run: Run, words: list[str]) -> None:
    if len(words) == 1:
        rows = [(n, "", "true" if n == run.session.active else "false") for n in run.known()]
        run.output = Table(("namespace", "vlans", "active"), tuple(rows))
        return
    name = words[1]
    try:
        validate_namespace_name(name)
    except InvalidName as err:
        raise CommandError(str(err)) from None
    if run.state.get(name) is None:
        run.save(run.fresh(name))
    if len(words) == 2:
        run.session = Session(name)  # already active: a no-op, as in current minimega
        return
    outer = run.session
    run.session = Session(name)
    command(run, words[2:])
    run.session = outer  # `namespace NAME COMMAND` never changes the active namespace


def _clear(run: Run, words: list[str]) -> None:
    if len(words) < 2:
        raise invalid(words)
    what = match(words[1], ("namespace", "vm"), words)
    if what == "vm":
        vmcmds.clear_vm(run, words)
        return
    if len(words) == 2:
        run.session = Session(DEFAULT_NAMESPACE)
        return
    if len(words) != 3:
        raise invalid(words)
    _destroy(run, words[2])


def _destroy(run: Run, name: str) -> None:
    """``clear namespace NAME|all``: effects to wipe it on every host, then forget it."""
    if name == "all":
        targets = run.state.names()
    elif run.state.get(name) is not None:
        targets = [name]
    else:
        raise CommandError(f"unknown namespace: {name}")
    everywhere = tuple(sorted(run.ctx.cluster.host_names()))
    for target in targets:
        ns = run.state.get(target)
        assert ns is not None
        if ns.scheduling():
            raise CommandError("scheduler still running for namespace")
        for br in ns.bridges:
            run.effects.append(DelBridge(ns.name, br.name, tuple(sorted(br.hosts | ns.hosts))))
        vms = tuple((vm.name, vm.host) for vm in ns.vms)
        run.effects.append(ClearNamespace(ns.name, vms, everywhere))
        run.state = run.state.drop(target)
        if run.session.active == target:
            run.session = Session(DEFAULT_NAMESPACE)


# ---------------------------------------------------------------------------- ns

_NS_SUBCOMMANDS = ("hosts", "add-hosts", "del-hosts", "load", "queue", "flush", "queueing",
                   "schedule", "bridge", "del-bridge", "save", "snapshot", "run")  # fmt: skip


def _ns(run: Run, words: list[str]) -> None:
    if len(words) < 2:
        raise invalid(words)
    sub = match(words[1], _NS_SUBCOMMANDS, words)
    args = words[2:]
    if sub == "run":
        _ns_run(run, words)
        return
    if sub in ("save", "snapshot"):
        raise CommandError(f"ns {sub} is not supported by dvms")
    handler = {
        "hosts": _ns_hosts,
        "add-hosts": _ns_add_hosts,
        "del-hosts": _ns_del_hosts,
        "load": _ns_load,
        "queue": _ns_queue,
        "flush": _ns_flush,
        "queueing": _ns_queueing,
        "schedule": _ns_schedule,
        "bridge": _ns_bridge,
        "del-bridge": _ns_del_bridge,
    }[sub]
    handler(run, args, words)


def _arity(args: Sequence[str], words: Sequence[str], low: int, high: int) -> None:
    if not low <= len(args) <= high:
        raise invalid(words)


def _ns_hosts(run: Run, args: list[str], words: list[str]) -> None:
    _arity(args, words, 0, 0)
    run.output = Text(compress(run.ns().hosts))


def _expand_hosts(run: Run, text: str) -> list[str]:
    try:
        hosts = expand(text)
    except RangeError as err:
        raise CommandError(f"invalid hosts -- {err}") from None
    local = run.ctx.cluster.local
    return [local if h == "localhost" and local else h for h in hosts]


def _ns_add_hosts(run: Run, args: list[str], words: list[str]) -> None:
    _arity(args, words, 1, 1)
    cluster = run.ctx.cluster.host_names()
    hosts = _expand_hosts(run, args[0])
    add: set[str] = set()
    for host in hosts:
        if host == "all":  # every node, and the rest of the list is ignored (minimega)
            add = set(cluster)
            break
        if host not in cluster:
            raise CommandError(f"unknown host: `{host}`")
        add.add(host)
    run.update(hosts=run.ns().hosts | add)


def _ns_del_hosts(run: Run, args: list[str], words: list[str]) -> None:
    _arity(args, words, 1, 1)
    hosts = _expand_hosts(run, args[0])
    keep = frozenset() if "all" in hosts else run.ns().hosts - set(hosts)
    run.update(hosts=keep)


def _ns_load(run: Run, args: list[str], words: list[str]) -> None:
    _arity(args, words, 0, 1)
    if not args:
        run.output = Text(run.ns().load)
        return
    run.update(load=match(args[0], LOADS, words))


def _ns_queueing(run: Run, args: list[str], words: list[str]) -> None:
    _arity(args, words, 0, 1)
    if not args:
        run.output = Text("true" if run.ns().queueing else "false")
        return
    run.update(queueing=match(args[0], ("true", "false"), words) == "true")


def _ns_queue(run: Run, args: list[str], words: list[str]) -> None:
    _arity(args, words, 0, 0)
    parts = []
    for batch in run.ns().queue:
        named = [n for n in batch.names if n]
        parts.append(
            f"VMs: {len(batch.names)}\nNames: {compress(named) if named else ''}\n"
            f"VM Type: {batch.vm_type}\n\n{config_dump(batch.config)}\n\n"
        )
    run.output = Text("".join(parts))


def _ns_flush(run: Run, args: list[str], words: list[str]) -> None:
    _arity(args, words, 0, 0)
    run.update(queue=())  # the dry-run assignment survives (minimega)


def _ns_schedule(run: Run, args: list[str], words: list[str]) -> None:
    _arity(args, words, 0, 3)
    if not args:
        vmcmds.launch_queue(run)
        return
    sub = match(args[0], ("dry-run", "dump", "mv", "status"), words)
    ns = run.ns()
    if sub == "mv":
        _arity(args, words, 3, 3)
        new, error = sched.move(run.ctx, ns, args[1], args[2])
        run.save(new)
        run.partial_error = error
        return
    _arity(args, words, 1, 1)
    if sub == "dry-run":
        ns = run.update(assignment=sched.dry_run(run.ctx, ns))
    if sub in ("dry-run", "dump"):
        if ns.assignment is None:
            raise CommandError("must run dry-run first")
        rows = sorted(ns.assignment, key=lambda e: (e.batch, e.index))
        run.output = Table(("vm", "dst"), tuple((e.name, e.host) for e in rows))
        return
    run.output = vmcmds.status_table(ns)


def _ns_bridge(run: Run, args: list[str], words: list[str]) -> None:
    _arity(args, words, 1, 2)
    name = args[0]
    kind = match(args[1], ("vxlan", "gre"), words) if len(args) == 2 else "gre"
    if not name:
        raise CommandError("bridge name must not be empty string")
    ns = run.ns()
    if len(ns.hosts) == 1:
        return  # minimega: one host needs no tunnels, and nothing is recorded
    bridge = Bridge(name, kind, run.ctx.bridge_key % 2**32, ns.hosts)
    bridges = (*(b for b in ns.bridges if b.name != name), bridge)
    run.update(bridges=bridges)
    hosts = tuple(sorted(ns.hosts))
    run.effects.append(SetBridge(ns.name, name, kind, bridge.key, hosts))


def _ns_del_bridge(run: Run, args: list[str], words: list[str]) -> None:
    _arity(args, words, 1, 1)
    ns = run.ns()
    bridge = ns.bridge(args[0]) if args[0] else None
    if not args[0]:
        raise CommandError("bridge name must not be empty string")
    if bridge is None:
        raise CommandError("bridge is not associated with namespace")
    run.update(bridges=tuple(b for b in ns.bridges if b.name != bridge.name))
    run.effects.append(DelBridge(ns.name, bridge.name, tuple(sorted(bridge.hosts | ns.hosts))))


def _ns_run(run: Run, words: list[str]) -> None:
    if run.ctx.source == SOURCE_MESHAGE:
        raise CommandError(f"cannot run `{' '.join(words)}` via meshage")
    inner = words[2:]
    if not inner:
        raise invalid(words)
    if _has_command(inner, _NS_RUN_FORBIDDEN):
        raise CommandError(f"cannot run `{' '.join(inner)}` using `ns run`")
    ns = run.ns()
    if run.state.get(ns.name) is None:
        run.save(ns)
    run.effects.append(RunOnHosts(ns.name, tuple(sorted(ns.hosts)), tuple(inner)))


def _has_command(words: Sequence[str], forbidden: Sequence[tuple[str, ...]]) -> bool:
    """Does ``words`` (or a command nested in it with ``namespace NAME``) start with one
    of ``forbidden``? Output flags are skipped."""
    while words and words[0].startswith(".") and len(words) >= 2:
        words = words[2:]
    if any(tuple(words[: len(f)]) == f for f in forbidden):
        return True
    if len(words) > 2 and words[0] == "namespace":
        return _has_command(words[2:], forbidden)
    return False
