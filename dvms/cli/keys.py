"""``dvms keys list|install|use|remove``: the cluster keyring, on every node at once.

The node you talk to asks every node it finds by a crawl of the overlay and prints,
like ``serf keys``, on how many nodes each key is installed and primary, which nodes
refused a change and why, and which did not answer."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from dvms.cli.main import UserError
from dvms.cli.node import node_call, print_table

#: How long the CLI waits for the cluster's answers, seconds (a crawl, then each node
#: asked with retries).
KEYS_TIMEOUT_S = 60.0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "keys",
        help="list, install, switch and remove cluster keys on every node",
        description="Change the cluster keys of a live cluster, every node at once "
        "(docs/security.md). Rotate: `keys install NEW.key`, `keys use NEWID`, "
        "`keys remove OLDID`.",
    )
    ksub = p.add_subparsers(dest="keys_command", metavar="COMMAND", required=True)
    ls = ksub.add_parser(
        "list",
        help="which nodes hold which keys",
        description="Each key's id, on how many nodes it is installed and primary, and "
        "the nodes that lack it or did not answer.",
    )
    ls.set_defaults(func=run, op="list")
    inst = ksub.add_parser(
        "install",
        help="add a key to every node's keyring",
        description="Send the key in FILE (written by `dvms keygen FILE`) to every node, "
        "sealed under the current keys; each node accepts datagrams signed with it from "
        "now on and keeps it across restarts.",
    )
    inst.add_argument("file", metavar="FILE", help="key file (dvms keygen FILE)")
    inst.set_defaults(func=run, op="install")
    use = ksub.add_parser(
        "use",
        help="make an installed key the one every node signs with",
        description="Make KEY the primary key of every node (it must be installed).",
    )
    use.add_argument("key", metavar="KEY", help="key id (8 hex digits) or key file")
    use.set_defaults(func=run, op="use")
    rm = ksub.add_parser(
        "remove",
        help="remove a key from every node's keyring",
        description="Remove KEY from every node; datagrams signed with it are dropped from "
        "then on. The primary key is refused: `keys use` another first.",
    )
    rm.add_argument("key", metavar="KEY", help="key id (8 hex digits) or key file")
    rm.set_defaults(func=run, op="remove")


def _key_arg(args: argparse.Namespace) -> str:
    from dvms.wire.keys import KeyFileError, key_id, load_keyring

    text = args.file if args.op == "install" else args.key
    path = Path(text)
    if args.op != "install" and not path.exists():
        return str(text)  # a key id: the node checks it
    try:
        key = load_keyring(path).primary
    except KeyFileError as exc:
        raise UserError(str(exc)) from None
    return key.hex() if args.op == "install" else key_id(key).hex()


def run(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"op": args.op}
    if args.op != "list":
        body["key"] = _key_arg(args)
    result = node_call(args, "keys", body, timeout=KEYS_TIMEOUT_S)
    if args.json:
        from dvms.cli.output import emit

        emit(result)
    else:
        _print(result)
    return 1 if result["errors"] else 0


def _print(result: dict[str, Any]) -> None:
    total = result["total"]
    rows = [
        {
            "key": k["key"],
            "primary": f"{k['primary']}/{total}",
            "installed": f"{k['installed']}/{total}",
            "missing_on": ",".join(k["missing_on"]),
        }
        for k in result["keys"]
    ]
    print_table(rows, ("key", "primary", "installed", "missing_on"))
    for n in result["nodes"]:
        if n["lacking"]:
            print(f"{n['name']} receives datagrams signed with keys it lacks: "
                  f"{', '.join(n['lacking'])}")  # fmt: skip
    for e in result["errors"]:
        print(f"refused on {e}")
    if result["unreachable"]:
        print(f"(no answer from: {', '.join(result['unreachable'])})")


def register_revoke(nsub: argparse._SubParsersAction) -> None:
    p = nsub.add_parser(
        "revoke",
        help="revoke one node everywhere (operator key)",
        description="Sign a revocation of NODE with the operator key and hand it to the "
        "node you talk to, which stores it in the DHT and tells every node: each drops "
        "NODE's traffic, ignores its records and leaves it out of partitions "
        "(docs/security.md). Nodes honour it only if their operator_keys list the key.",
    )
    p.add_argument("node", metavar="NODE", help="node id (40 hex digits) or host name")
    p.add_argument(
        "--operator-key",
        required=True,
        metavar="FILE",
        help="the operator's private key (dvms keygen --operator FILE)",
    )
    p.set_defaults(func=revoke)


def _node_id(args: argparse.Namespace) -> int:
    text = args.node.lower()
    if len(text) == 40:
        try:
            return int(text, 16)
        except ValueError:
            pass
    members = node_call(args, "members", {}, timeout=KEYS_TIMEOUT_S)["members"]
    found = {m["node_id"] for m in members if m["name"] == args.node or m["node_id"] == text}
    if len(found) != 1:
        raise UserError(f"no node named {args.node} (give its node id: dvms members --json)")
    return int(found.pop(), 16)


def revoke(args: argparse.Namespace) -> int:
    import time

    from dvms.wire.revocation import RevocationError, sign_revocation

    try:
        private = bytes.fromhex(Path(args.operator_key).read_text().strip())
        rev = sign_revocation(private, _node_id(args), time.time())
    except OSError as exc:
        raise UserError(f"cannot read operator key {args.operator_key}: {exc.strerror}") from None
    except (ValueError, RevocationError) as exc:
        raise UserError(f"operator key {args.operator_key}: {exc}") from None
    result = node_call(args, "revoke", {"revocation": rev.encode()}, timeout=KEYS_TIMEOUT_S)
    if args.json:
        from dvms.cli.output import emit

        emit(result)
    else:
        who = result["name"] or result["node_id"]
        print(f"revoked {who} ({result['node_id']}): told {result['told']} nodes, "
              f"stored on {result['stored']}")  # fmt: skip
        for e in result["refused"]:
            print(f"refused on {e}")
        if result["unreachable"]:
            print(f"(no answer from: {', '.join(result['unreachable'])})")
    return 1 if result["refused"] else 0
