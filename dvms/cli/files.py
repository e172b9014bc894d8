"""``dvms file``: files shared between peers, in minimega's words (``file get|list|
delete|status``) plus ``add`` and ``providers``. Files are addressed by name or by root
(64 hex digits); ``docs/files.md`` describes how they travel."""

from __future__ import annotations

import argparse
import os
from typing import Any

from dvms.cli.main import UserError
from dvms.cli.node import print_table, socket_path
from dvms.cli.output import emit
from dvms.runtime.client import ControlError, call

#: ``file add`` (hashing and copying a large image) and ``file get --wait`` wait this
#: long for the node by default, seconds (``--timeout``).
LONG_TIMEOUT_S = 3600.0
#: Other file commands, seconds.
SHORT_TIMEOUT_S = 60.0


def _call(args: argparse.Namespace, cmd: str, body: dict[str, Any], timeout: float) -> Any:
    try:
        return call(socket_path(args), cmd, body, timeout=timeout)
    except ControlError as exc:
        raise UserError(str(exc)) from None


def register(sub: argparse._SubParsersAction) -> None:
    f = sub.add_parser(
        "file",
        help="files shared between peers: add, get, list, status, delete, providers",
        description="Files (VM images, kernels) are content-addressed: a root (SHA-256 of "
        "the file's manifest of chunk hashes) names one content for good; a name points "
        "at a root and can be republished. Peers fetch chunks from every node that holds "
        "them, hashing each. `file:NAME` in `vm config disk|kernel|initrd|cdrom` uses them.",
    )
    fsub = f.add_subparsers(dest="file_command", metavar="COMMAND", required=True)
    p = fsub.add_parser("add", help="add a local file (prints name, root, size)")
    p.add_argument("path", metavar="PATH", help="the local file to add (read by the node)")
    p.add_argument("--name", default="", help="publish it under this name (republish: new root)")
    p.add_argument(
        "--timeout", type=float, default=LONG_TIMEOUT_S, help="wait this long, seconds (3600)"
    )
    p.set_defaults(func=file_add)
    p = fsub.add_parser("get", help="fetch a file from the peers (NAME or ROOT)")
    p.add_argument("ref", metavar="NAME|ROOT", help="a file name, or a root (64 hex digits)")
    p.add_argument(
        "--wait", action="store_true", help="return when it is complete: its local path, root"
    )
    p.add_argument(
        "--single-source",
        action="store_true",
        help="one provider, one chunk at a time (a baseline for comparison)",
    )
    p.add_argument(
        "--timeout", type=float, default=LONG_TIMEOUT_S, help="with --wait, seconds (3600)"
    )
    p.set_defaults(func=file_get)
    for word, helptext, func in (
        ("list", "files held here (complete and partial)", file_list),
        ("status", "transfers: chunks done/total, bytes/s, peers, bad chunks", file_status),
    ):
        p = fsub.add_parser(word, help=helptext, description=helptext)
        p.set_defaults(func=func)
    p = fsub.add_parser("delete", help="delete the local copy (NAME or ROOT); stop providing")
    p.add_argument("ref", metavar="NAME|ROOT", help="a file name, or a root (64 hex digits)")
    p.set_defaults(func=file_delete)
    p = fsub.add_parser("providers", help="the nodes that hold a file (NAME or ROOT)")
    p.add_argument("ref", metavar="NAME|ROOT", help="a file name, or a root (64 hex digits)")
    p.set_defaults(func=file_providers)


def _print(args: argparse.Namespace, result: Any) -> bool:
    if args.json:
        emit(result)
    return bool(args.json)


def file_add(args: argparse.Namespace) -> int:
    path = os.path.abspath(args.path)
    if not os.path.isfile(path):
        raise UserError(f"no such file: {args.path}")
    r = _call(args, "file_add", {"path": path, "name": args.name}, args.timeout)
    if not _print(args, r):
        print(f"{r['name'] or '-'}  {r['root']}  {r['size']}")
    return 0


def file_get(args: argparse.Namespace) -> int:
    body = {
        "ref": args.ref,
        "wait": args.wait,
        "timeout": args.timeout,
        "single_source": args.single_source,
    }
    r = _call(args, "file_get", body, args.timeout + SHORT_TIMEOUT_S if args.wait else 60.0)
    if not _print(args, r):
        if args.wait:
            print(f"{r['path']}  {r['root']}")
        else:
            print(f"{r['state']}: {r['chunks_done']}/{r['chunks']} chunks of {r['root']}")
    return 0


def file_list(args: argparse.Namespace) -> int:
    r = _call(args, "file_list", {}, SHORT_TIMEOUT_S)
    if not _print(args, r):
        rows = [
            {
                **e,
                "name": ",".join(e["names"]) or None,
                "root": e["root"][:16],
                "held": f"{e['chunks_held']}/{e['chunks']}",
                "pinned": ",".join(e["pinned"]) or None,
            }
            for e in r["files"]
        ]
        print_table(rows, ("name", "root", "size", "format", "held", "pinned", "path"))
    return 0


def file_status(args: argparse.Namespace) -> int:
    r = _call(args, "file_status", {}, SHORT_TIMEOUT_S)
    if not _print(args, r):
        rows = [
            {
                **t,
                "root": t["root"][:16],
                "done": f"{t['chunks_done']}/{t['chunks']}",
                "name": t["name"] or None,
            }
            for t in r["transfers"]
        ]
        print_table(
            rows,
            ("name", "root", "state", "done", "bytes_per_s", "peers", "bad_chunks", "banned"),
        )
        for t in r["transfers"]:
            if t["error"]:
                print(f"E: {t['root'][:16]}: {t['error']}")
    return 0


def file_delete(args: argparse.Namespace) -> int:
    r = _call(args, "file_delete", {"ref": args.ref}, SHORT_TIMEOUT_S)
    if not _print(args, r):
        print(f"deleted {r['root']} (withdrawn from {r['withdrawn']} nodes)")
    return 0


def file_providers(args: argparse.Namespace) -> int:
    r = _call(args, "file_providers", {"ref": args.ref}, SHORT_TIMEOUT_S)
    if not _print(args, r):
        rows = [{**p, "node_id": p["node_id"][:16]} for p in r["providers"]]
        print_table(rows, ("node_id", "address", "complete", "rtt_ms"))
    return 0
