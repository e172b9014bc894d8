"""``dvms audit show|verify``: a node's audit log of the commands that changed something
(``dvms.runtime.control.audit``: JSON lines, hash-chained, fsynced)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from dvms.cli.main import UserError
from dvms.cli.node import node_call, print_table
from dvms.cli.output import emit
from dvms.runtime.control import audit

COLUMNS = ("seq", "time", "uid", "pid", "cmd", "args", "result")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "audit",
        help="the node's audit log of commands that changed something",
        description="Every control command that changes something (submit, vm kill, ns "
        "commands that change a namespace, file add, debug load, key changes, ...) is "
        "one JSON line of <state_dir>/audit.log: time, uid and pid of the caller, command, "
        "arguments, result; each line carries the hash of the line before.",
    )
    asub = p.add_subparsers(dest="audit_command", metavar="COMMAND", required=True)
    show = asub.add_parser(
        "show",
        help="the last lines of the node's audit log",
        description="The node's (--socket) last audit lines, oldest first.",
    )
    show.add_argument("-n", "--lines", type=int, default=20, help="lines shown (default 20)")
    show.set_defaults(func=show_cmd)
    verify = asub.add_parser(
        "verify",
        help="check an audit log's hash chain",
        description="Check the hash chain of the audit log at PATH (default: the node's, "
        "asked through --socket): a removed or edited line is named by its line number. "
        "Exit status 1 if the chain is broken.",
    )
    verify.add_argument("path", metavar="PATH", nargs="?", help="an audit log file")
    verify.set_defaults(func=verify_cmd)


def show_cmd(args: argparse.Namespace) -> int:
    res = node_call(args, "audit_show", {"count": args.lines})
    if args.json:
        emit(res)
        return 0
    rows = [
        {**line, "args": " ".join(f"{k}={v}" for k, v in (line.get("args") or {}).items())}
        for line in res["lines"]
    ]
    print_table(rows, COLUMNS)
    return 0


def verify_cmd(args: argparse.Namespace) -> int:
    if args.path:
        path = Path(args.path)
        if not path.exists():
            raise UserError(f"audit verify: no such file {path}")
        n, found = audit.verify(path)
        doc: dict[str, Any] = {"path": str(path), "checked": n, "problems": [str(p) for p in found]}
    else:
        res = node_call(args, "audit_show", {"count": 0, "verify": True})
        doc = {k: res[k] for k in ("path", "checked", "problems")}
    doc["ok"] = not doc["problems"]
    if args.json:
        emit(doc)
    else:
        for problem in doc["problems"]:
            print(f"{doc['path']}: {problem}")
        if doc["ok"]:
            print(f"{doc['path']}: {doc['checked']} lines, chain intact")
    return 0 if doc["ok"] else 1
