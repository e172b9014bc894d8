"""``dvms keygen [FILE]``: write a new cluster key."""

from __future__ import annotations

import argparse

from dvms.cli.main import UserError
from dvms.wire.keys import KeyFileError, generate_key, write_key


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "keygen",
        help="write a new cluster key file",
        description="Write a new random 256-bit cluster key (hex, mode 0600). Every node of "
        "a cluster loads the same key; datagrams signed with another key are dropped.",
    )
    p.add_argument(
        "file",
        nargs="?",
        help="where to write the key (default: where a node looks for it: "
        "/etc/dvms/cluster.key as root, else ~/.config/dvms/cluster.key)",
    )
    p.add_argument("--force", action="store_true", help="replace an existing file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        from dvms.runtime.config import default_key_file

        path = write_key(args.file or default_key_file(), generate_key(), force=args.force)
    except KeyFileError as exc:
        raise UserError(str(exc)) from None
    if getattr(args, "json", False):
        from dvms.cli.output import emit

        emit({"path": str(path)})
    else:
        print(f"wrote cluster key to {path}")
    return 0
