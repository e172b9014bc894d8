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
    p.add_argument(
        "--operator",
        action="store_true",
        help="write an operator key pair instead (Ed25519: FILE private, FILE.pub public; "
        "FILE required): every node lists the public key in its operator_keys and honours "
        "the revocations it signs (dvms node revoke)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.operator:
        return _operator(args)
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


def _operator(args: argparse.Namespace) -> int:
    from pathlib import Path

    from dvms.wire.keys import write_private
    from dvms.wire.revocation import generate_operator_key

    if not args.file:
        raise UserError("keygen --operator needs FILE: where to write the private key")
    path, pub_path = Path(args.file), Path(args.file + ".pub")
    for p in (path, pub_path):
        if p.exists() and not args.force:
            raise UserError(f"{p} already exists (use --force to replace it)")
    private, public = generate_operator_key()
    write_private(path, private.hex() + "\n")
    pub_path.write_text(public.hex() + "\n")
    if getattr(args, "json", False):
        from dvms.cli.output import emit

        emit({"path": str(path), "public_path": str(pub_path), "public_key": public.hex()})
    else:
        print(f"wrote operator key to {path} (keep it off the nodes) and {pub_path}")
        print(f'every node\'s config: operator_keys = ["{public.hex()}"]')
    return 0
