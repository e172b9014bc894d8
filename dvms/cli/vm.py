"""Cluster commands sent to any node: ``submit``, ``vm info|kill``, ``host``,
``partitions``, ``rtt``, ``members``. The node you talk to gathers the answer from the
others."""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

from dvms.cli import output, plan, show
from dvms.cli.main import UserError
from dvms.cli.node import node_call, print_table
from dvms.runtime.client import submit_body

#: How long the CLI waits for the node's answer, seconds, where that may take a
#: partition (placing and creating VMs): ``submit``, ``vjob show --wait``, ``script`` (per
#: command) and minimega command lines; ``--timeout`` of the first three.
SUBMIT_TIMEOUT_S = 300.0
#: ``vjob show`` without ``--wait`` (reading one record) waits this long, seconds.
SHOW_TIMEOUT_S = 30.0


#: How ``vjob show|stop|remove`` name a vjob.
_VJOB_REF = "the vjob's id (`submit` printed it), a unique prefix of it, or its name"


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text!r}")
    return value


def _timeout_flag(p: argparse.ArgumentParser, default: float | None, what: str) -> None:
    p.add_argument("--timeout", type=_seconds, default=default, metavar="SECONDS", help=what)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "submit",
        help="place and create the VMs of a vjob file",
        description="Send a vjob (TOML, docs/vjob.md) to the node; it runs a DVMS "
        "partition to place every VM under the vjob's constraints and returns once the "
        "VMs are created, or refused (exit 1).",
    )
    p.add_argument("vjob", metavar="VJOB_FILE", help="the vjob TOML file (docs/vjob.md)")
    p.add_argument(
        "--no-wait",
        dest="wait",
        action="store_false",
        help="return as soon as the vjob is accepted (journaled and replicated), with its "
        "id; follow it with `dvms vjob show ID`",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print where the VMs would go on the hosts as they are now, and create "
        "nothing (exit 1 if it would be refused, with the reason)",
    )
    _timeout_flag(p, SUBMIT_TIMEOUT_S, f"wait this long for the answer ({SUBMIT_TIMEOUT_S:g})")
    p.set_defaults(func=submit)

    vj = sub.add_parser(
        "vjob",
        help="vjobs: list, show, stop, remove, validate",
        description="Vjobs are journaled by the node that accepted them and kept in the "
        "DHT; any node can show one, and the cluster finishes a vjob whose node died.",
    )
    vjsub = vj.add_subparsers(dest="vjob_command", metavar="COMMAND", required=True)
    vl = vjsub.add_parser(
        "list",
        help="every vjob of the cluster",
        description="Every vjob of the cluster, gathered from every node (found by a "
        "crawl of the overlay); names the nodes that did not answer.",
    )
    vl.set_defaults(func=vjob_list)
    vs = vjsub.add_parser(
        "show",
        help="one vjob, from any node",
        description="Show a vjob: its state, owner, history and where its VMs were placed; "
        "while it is placed, the VMs whose hosts are fetching their file: images, with the "
        "bytes fetched.",
    )
    vs.add_argument("id", metavar="ID|NAME", help=_VJOB_REF)
    vs.add_argument("--wait", action="store_true", help="wait until it is done or failed")
    _timeout_flag(
        vs,
        None,
        f"wait this long for the answer ({SUBMIT_TIMEOUT_S:g} with --wait, else "
        f"{SHOW_TIMEOUT_S:g})",
    )
    vs.set_defaults(func=vjob_show)
    va = vjsub.add_parser(
        "validate",
        help="check a vjob file, no cluster needed",
        description="Read a vjob file as `submit` would and say what it asks for (VMs, "
        "vCPUs, memory, constraints), or the first problem in it, naming the key "
        "(exit 1). Needs no running node.",
    )
    va.add_argument("file", metavar="VJOB_FILE", help="the vjob TOML file (docs/vjob.md)")
    va.set_defaults(func=lambda args: plan.validate(args))
    st = vjsub.add_parser(
        "stop",
        help="kill a vjob's VMs; it stays listed as stopped",
        description="Destroy every VM the vjob placed, wherever it runs now (its "
        "namespace forgets them too); the vjob stays in `vjob list` as stopped until "
        "`vjob remove`. A vjob still being placed is refused: stop it once it ends.",
    )
    st.add_argument("id", metavar="ID|NAME", help=_VJOB_REF)
    st.set_defaults(func=vjob_stop)
    rm = vjsub.add_parser(
        "remove",
        help="forget a stopped or failed vjob",
        description="Delete the vjob's record from the cluster, so that it leaves `vjob "
        "list`. Only a stopped or failed vjob (one with no VMs) is removed.",
    )
    rm.add_argument("id", metavar="ID|NAME", help=_VJOB_REF)
    rm.set_defaults(func=vjob_remove)

    vm = sub.add_parser("vm", help="VMs across the cluster", description="VM commands.")
    vsub = vm.add_subparsers(dest="vm_command", metavar="COMMAND", required=True)
    info = vsub.add_parser(
        "info",
        help="VMs of the active namespace (--all: every VM of the cluster)",
        description="minimega's `vm info`: the VMs of your active namespace "
        "($DVMS_NAMESPACE, default minimega) with "
        "minimega's columns (the interpreter's table, brought up to what the hosts report). "
        "--all: every VM of every host and namespace, gathered from the peers; "
        "--namespace NS: the same, one namespace.",
    )
    info.add_argument("--all", action="store_true", help="every VM of the cluster")
    info.add_argument("--namespace", help="every VM of this namespace, from the hosts")
    info.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    info.set_defaults(func=vm_info)
    vshow = vsub.add_parser(
        "show",
        help="one VM: where it runs, its size and recent events",
        description="Describe one VM (kubectl describe-like), found on whichever host "
        "runs it: namespace, state, host, size, and the newest events about it from "
        "every node (created, migrated...). An HA VM can have other copies: a fenced "
        "older one, or a restart under way (no host yet); they are listed after it "
        "(JSON: other_copies).",
    )
    vshow.add_argument("name", metavar="NAME", help="the VM's name")
    vshow.add_argument("--namespace", help="the VM's namespace, when its name is in several")
    vshow.set_defaults(func=lambda args: show.vm_show(args))
    kill = vsub.add_parser(
        "kill",
        help="minimega: vm kill TARGET (QUIT); --all: destroy VMs of any namespace",
        description="minimega's `vm kill TARGET` in the active namespace: the VMs are "
        "powered off and stay listed as QUIT until `vm flush`. With --all (or --namespace "
        "NS), destroy and undefine the named VMs (a range: vm[1-2]) wherever they run, in "
        "any namespace (that one); exit 1 if a name was not found.",
    )
    kill.add_argument(
        "names", metavar="NAMES", help="VM name, id, range (vm[1-2]) or `all` to kill"
    )
    kill.add_argument("--all", action="store_true", help="in every namespace, destroyed")
    kill.add_argument("--namespace", help="only VMs of this namespace, destroyed")
    kill.set_defaults(func=vm_kill)

    for word, helptext in (
        ("launch", "minimega: vm launch [kvm NAMES|N] (placed through a partition)"),
        ("config", "minimega: vm config [FIELD [VALUE...]]"),
        ("start", "minimega: vm start TARGET (resume or boot VMs of the namespace)"),
        ("stop", "minimega: vm stop TARGET (pause)"),
        ("flush", "minimega: vm flush (forget QUIT and ERROR VMs)"),
        ("migrate", "minimega: vm migrate TARGET [HOST] (live; capacity re-checked)"),
    ):
        p = vsub.add_parser(word, help=helptext, description=helptext)
        p.add_argument(
            "rest",
            nargs=argparse.REMAINDER,
            metavar="ARG",
            help=f"the words of minimega's `vm {word}` (docs/namespaces.md)",
        )
        p.set_defaults(func=lambda args, word=word: minimega(args, ["vm", word, *args.rest]))
    for word, helptext in (
        (
            "namespace",
            "minimega: namespace [NAME [COMMAND...]] (each shell has its own active "
            "namespace: $DVMS_NAMESPACE)",
        ),
        ("ns", "minimega: ns hosts|add-hosts|del-hosts|load|queueing|queue|schedule ..."),
        ("clear", "minimega: clear namespace|vm config ..."),
    ):
        p = sub.add_parser(word, help=helptext, description=helptext)
        p.add_argument(
            "rest",
            nargs=argparse.REMAINDER,
            metavar="ARG",
            help=f"the words of minimega's `{word}` command (docs/namespaces.md)",
        )
        p.set_defaults(func=lambda args, word=word: minimega(args, [word, *args.rest]))

    # a minimega line led by output flags (dvms .columns name vm info): main() routes it
    # here; no help= keeps it out of the command list
    line = sub.add_parser("ns-line", description="A minimega command with output flags.")
    line.add_argument(
        "rest", nargs=argparse.REMAINDER, metavar="ARG", help="the minimega command line"
    )
    line.set_defaults(func=lambda args: minimega(args, args.rest))
    sc = sub.add_parser(
        "script",
        help="run a file of minimega commands",
        description="Run minimega commands from FILE (- or none: standard input), one per "
        "line, on the node, in order; `#` starts a comment. Each command's output is "
        "printed as minimega prints it (--echo: after the command, as `## command`); a "
        "refused command prints `E: ...` and the script goes on. Exit 1 if any failed.",
    )
    sc.add_argument(
        "file", nargs="?", default="-", metavar="FILE", help="command file (default: stdin)"
    )
    sc.add_argument("--echo", action="store_true", help="print each command before its output")
    _timeout_flag(sc, SUBMIT_TIMEOUT_S, f"wait this long per command ({SUBMIT_TIMEOUT_S:g})")
    sc.set_defaults(func=script)

    host = sub.add_parser(
        "host",
        help="every host: size and load; host show NAME: one host described",
        description="List the hosts of every node that answers, with their size and what "
        "their VMs commit; `host show NAME` describes one: its VMs and recent events.",
    )
    host.set_defaults(func=host_cmd)
    hsub = host.add_subparsers(dest="host_command", metavar="COMMAND")
    hshow = hsub.add_parser(
        "show",
        help="one host: size, VMs and recent events",
        description="Describe one host (kubectl describe-like): its size and load, the "
        "VMs it runs, and the newest events any node recorded on it.",
    )
    hshow.add_argument("name", metavar="HOST", help="the host's name")
    hshow.set_defaults(func=lambda args: show.host_show(args))
    parts = sub.add_parser(
        "partitions",
        help="partitions in flight and recent",
        description="Partitions this node took part in (--all: every node's), with "
        "members, leader, state and outcome.",
    )
    parts.add_argument("--all", action="store_true", help="gather from every node")
    parts.set_defaults(func=partitions)
    rtt = sub.add_parser(
        "rtt",
        help="round-trip time to a host",
        description="Measured (3 control-plane pings), smoothed and Vivaldi-predicted RTT.",
    )
    rtt.add_argument("host", metavar="HOST", help="host name, host:port or node id")
    rtt.set_defaults(func=rtt_cmd)
    members = sub.add_parser(
        "members",
        help="the cluster's members as this node sees them",
        description="Every node of the cluster, found by a crawl of the overlay (routing "
        "tables read until no new node appears): name, address, state (alive; suspect: "
        "this node's last RPCs to it failed, or the crawl's deadline came first; left: "
        "it told this node it stopped cleanly; failed: named by a routing table or known "
        "before, and silent) and the RTT Vivaldi predicts from this node.",
    )
    members.set_defaults(func=members_cmd)


_call = node_call


def _json(result: Any) -> None:
    output.emit(result)


def _warn_unreachable(result: dict[str, Any]) -> None:
    if result.get("unreachable"):
        print(f"(no answer from: {', '.join(result['unreachable'])})")


def submit(args: argparse.Namespace) -> int:
    if args.dry_run:
        return plan.dry_run(args)
    from dvms.placement.vjob import VjobError, load_vjob
    from dvms.ranges import RangeError

    try:
        vjob = load_vjob(args.vjob)
    except (VjobError, RangeError, OSError) as exc:
        raise UserError(str(exc)) from None
    body = submit_body(vjob, wait=args.wait)
    t0 = time.monotonic()
    result = _call(args, "submit", body, timeout=args.timeout)
    if args.json:
        _json(result)
    elif not args.wait:
        print(f"vjob {result['id']} accepted ({result['vms']} VMs): dvms vjob show {result['id']}")
        return 0
    elif result["ok"]:
        print_table(result["placed"], ("name", "host", "namespace"))
        print(
            f"{len(result['placed'])} VMs placed by a partition of "
            f"{result['partition_size']} nodes in {time.monotonic() - t0:.2f} s"
        )
        print(_where_to_look(vjob.namespace))
    if not result["ok"]:
        raise UserError(f"vjob {vjob.name} refused: {result['reason']}")
    return 0


def _where_to_look(namespace: str) -> str:
    """After ``submit``: where its VMs show (``vm info`` alone shows your namespace's)."""
    if namespace:
        return f"they are in namespace {namespace}: dvms namespace {namespace} vm info"
    return "they are in no namespace: dvms vm info --all"


def vjob_list(args: argparse.Namespace) -> int:
    result = _call(args, "vjob_list", {})
    if args.json:
        _json(result)
        return 0
    cols = ("id", "name", "namespace", "state", "vms", "placed", "owner", "reason")
    print_table(result["vjobs"], cols)
    if result["truncated"]:
        print("(some node holds more vjobs than one reply carries: only its newest are shown)")
    _warn_unreachable(result)
    return 0


def vjob_show(args: argparse.Namespace) -> int:
    timeout = args.timeout or (SUBMIT_TIMEOUT_S if args.wait else SHOW_TIMEOUT_S)
    rec = _call(args, "vjob_show", {"id": args.id, "wait": args.wait}, timeout=timeout)
    if args.json:
        _json(rec)
        return 0 if rec["state"] != "failed" else 1
    for key in ("id", "name", "namespace", "state", "reason"):
        print(f"{key + ':':11}{rec.get(key, '')}")
    print(f"{'owner:':11}{rec['owner'].get('name')} ({rec['owner'].get('host')}:"
          f"{rec['owner'].get('port')})")  # fmt: skip
    for line in rec.get("history", []):
        print(f"{'':11}{line}")
    if rec["placed"]:
        print_table(rec["placed"], ("name", "host", "namespace"))
    if rec.get("fetches"):
        print("waiting for files:")
        rows = [{**f, "progress": _progress(f)} for f in rec["fetches"]]
        print_table(rows, ("name", "host", "file", "progress", "state"))
    return 0 if rec["state"] != "failed" else 1


def _progress(fetch: dict) -> str:
    done, total = fetch["done_bytes"], fetch["total_bytes"]
    if not total:
        return "-"
    return f"{done / 2**20:,.1f} of {total / 2**20:,.1f} MiB ({done / total:.0%})"


def vjob_stop(args: argparse.Namespace) -> int:
    rec = _call(args, "vjob_stop", {"id": args.id}, timeout=SHOW_TIMEOUT_S)
    if args.json:
        _json(rec)
        return 0
    print(f"vjob {rec['id']} ({rec['name']}) stopped: {len(rec['killed'])} of "
          f"{len(rec['placed'])} VMs killed")  # fmt: skip
    for key in rec["killed"]:
        print(f"killed {key}")
    return 0


def vjob_remove(args: argparse.Namespace) -> int:
    rec = _call(args, "vjob_remove", {"id": args.id}, timeout=SHOW_TIMEOUT_S)
    if args.json:
        _json(rec)
    else:
        print(f"vjob {rec['id']} ({rec['name']}) removed")
    return 0


def vm_info(args: argparse.Namespace) -> int:
    if not (args.all or args.namespace):
        return minimega(args, ["vm", "info", *args.rest])
    result = _call(args, "vm_info", {"namespace": args.namespace})
    if args.json:
        _json(result)
        return 0
    rows = [{**v, "ha": _ha_cell(v)} for v in result["vms"]]
    print_table(rows, ("name", "state", "host", "namespace", "vcpus", "memory", "ha"))
    _warn_unreachable(result)
    return 0


def _ha_cell(vm: dict[str, Any]) -> str:
    """``ok g2``: the HA state and the generation of this copy; "-" without HA."""
    return f"{vm['ha']} g{vm['generation']}" if vm.get("ha") else "-"


def vm_kill(args: argparse.Namespace) -> int:
    if not (args.all or args.namespace):
        return minimega(args, ["vm", "kill", args.names])
    result = _call(args, "vm_kill", {"names": args.names, "namespace": args.namespace})
    if args.json:
        _json(result)
    else:
        for row in result["killed"]:
            print(f"killed {row['name']} on {row['host']}")
        _warn_unreachable(result)
    for err in result["errors"]:
        print(f"E: {err}")
    if result["not_found"]:
        raise UserError(f"vm not found: {', '.join(result['not_found'])}")
    return 1 if result["errors"] else 0


def script(args: argparse.Namespace) -> int:
    import shlex

    try:
        text = sys.stdin.read() if args.file == "-" else open(args.file).read()  # noqa: SIM115
    except OSError as exc:
        raise UserError(f"cannot read {args.file}: {exc.strerror or exc}") from None
    failed = 0
    active = active_namespace()
    done: list[dict[str, Any]] = []  # --json: one entry per command, in order
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            words = shlex.split(line)
        except ValueError as exc:
            failed += 1
            done.append({"line": n, "command": line, "ok": False, "error": str(exc)})
            if not args.json:
                print(f"E: line {n}: {exc}")
            continue
        if args.echo and not args.json:
            print(f"## {line}")
        params = {"words": words, "namespace": active}
        result = _call(args, "ns", params, timeout=args.timeout)
        active = result.get("namespace", active)  # `namespace NAME` switches for the script
        failed += not result["ok"]
        if args.json:
            done.append({"line": n, "command": line, **result})
        else:
            print(result["text"], end="")
    if args.json:
        _json({"commands": done, "failed": failed, "namespace": active})
    return 1 if failed else 0


#: The environment variable holding a shell's active namespace (minimega keeps one per
#: client; for the CLI the client is the shell).
NAMESPACE_ENV = "DVMS_NAMESPACE"
DEFAULT_NAMESPACE = "minimega"


def active_namespace() -> str:
    """This shell's active namespace: ``$DVMS_NAMESPACE``, else minimega's default."""
    from dvms.names import is_valid_namespace_name

    name = os.environ.get(NAMESPACE_ENV) or DEFAULT_NAMESPACE
    if not is_valid_namespace_name(name):
        raise UserError(f"{NAMESPACE_ENV}={name!r} is not a valid namespace name")
    return name


def minimega(args: argparse.Namespace, words: list[str]) -> int:
    active = active_namespace()
    params = {"words": words, "namespace": active}
    result = _call(args, "ns", params, timeout=SUBMIT_TIMEOUT_S)
    if args.json:
        _json({k: v for k, v in result.items() if k != "text"})
    else:
        print(result["text"], end="")
    now = result.get("namespace", active)
    if now != active and result["ok"]:
        # `namespace NAME` alone: the node keeps no active namespace; the shell does
        print(
            f"dvms: to stay in namespace {now} in this shell: export {NAMESPACE_ENV}={now}",
            file=sys.stderr,
        )
    return 0 if result["ok"] else 1


def host_cmd(args: argparse.Namespace) -> int:
    result = _call(args, "host", {})
    if args.json:
        _json(result)
        return 0
    print_table(result["hosts"], ("name", "cpus", "memory", "vms", "vcpus", "memused", "uri"))
    _warn_unreachable(result)
    return 0


def partitions(args: argparse.Namespace) -> int:
    result = _call(args, "partitions", {"all": args.all})
    if args.json:
        _json(result)
        return 0
    rows = []
    for p in result["partitions"]:
        took = p["ended"] - p["started"] if p["ended"] is not None else None
        rows.append(
            {
                **p,
                "members": ",".join(p["members"]),
                "events": ",".join(p["events"]),
                "duration_s": f"{took:.2f}" if took is not None else None,
            }
        )
    cols = ("pid", "state", "leader", "members", "events", "actions", "outcome", "duration_s")
    print_table(rows, cols)
    _warn_unreachable(result)
    return 0


def members_cmd(args: argparse.Namespace) -> int:
    result = _call(args, "members", {})
    if args.json:
        _json(result)
        return 0
    print_table(result["members"], ("name", "address", "state", "rtt_ms", "clock_offset_s"))
    states = [m["state"] for m in result["members"]]
    crawl = result["crawl"]
    summary = ", ".join(
        f"{states.count(s)} {s}"
        for s in ("alive", "suspect", "left", "failed", "clock_skew", "revoked", "unknown_key")
        if s in states
    )
    print(
        f"{len(states)} members ({summary}); crawl: {crawl['rpcs']} RPCs in {crawl['duration_s']} s"
    )
    for m in result["members"]:
        if m.get("unknown_key"):
            print(f"{m['name'] or m['address']} signs with key {m['unknown_key']}, which this "
                  "node does not hold (dvms keys list)")  # fmt: skip
    return 0


def rtt_cmd(args: argparse.Namespace) -> int:
    result = _call(args, "rtt", {"host": args.host})
    if args.json:
        _json(result)
    else:
        print_table([result], ("host", "address", "measured_ms", "srtt_ms", "predicted_ms"))
    return 0
