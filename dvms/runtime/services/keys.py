"""The node's cluster keyring on a live cluster (``dvms keys list|install|use|remove``).

The ring is the one object the wire codec signs and checks with; this service changes
it and keeps it in ``<state_dir>/keyring`` (0600, one hex key per line, the primary
first, then ``# removed KEYID`` lines), so a restarted node comes back with the ring it
had. At start the node takes that file if there is one, and adds the keys of its
configured key file to it (not as primary) unless they were removed: a key the operator
gave the node by hand is never lost, and a removed key does not come back.

A change is asked of every node found by a crawl of the overlay (``gather``), this node
first, and each node answers with its ring after the change, or why it refused; the
command reports per node, like ``serf keys``. Each node checks a change by itself:
``use`` of a key it lacks and ``remove`` of its primary are refused there. A rotation::

    dvms keygen new.key && dvms keys install new.key   # every node holds both keys
    dvms keys use NEWID                                # every node signs with the new
    dvms keys remove OLDID                             # the old key is gone

A node that missed steps rejoins as long as it holds a key still installed (the
envelope signs towards a peer with that peer's primary when it holds it); one that holds
none is refused by its peers, and both sides log the key id they lack.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from dvms.runtime.capabilities import Handlers, Peers, Requester
from dvms.runtime.client import ControlError
from dvms.runtime.services.keys_messages import KeysChange, KeysQuery, KeysReply, WrappedKey
from dvms.wire.envelope import WireCodec
from dvms.wire.keys import (
    KeyFileError,
    Keyring,
    KeyringError,
    format_key_id,
    key_id,
    load_keyring,
    parse_key_id,
    write_private,
)

__all__ = [
    "KEYRING_FILE",
    "KeyService",
    "load_node_keyring",
    "removed_ids",
    "seal_key",
    "unseal_key",
    "write_node_keyring",
]

log = logging.getLogger("dvms.keys")

#: The ring this node keeps, inside its state directory.
KEYRING_FILE = "keyring"
OPS = ("install", "use", "remove")
_WRAP_INFO = b"dvms key wrap\0"


_REMOVED = "# removed "


def load_node_keyring(key_file: Path, state_dir: Path) -> Keyring:
    """The ring a node starts with: ``state_dir/keyring`` if there is one, plus the keys
    of ``key_file`` not removed since (added, not made primary); else the key file's."""
    given = load_keyring(key_file)
    kept = state_dir / KEYRING_FILE
    if not kept.exists():
        return given
    ring = load_keyring(kept)
    removed = removed_ids(kept)
    for key in given.ordered_keys():
        if key_id(key) in removed:
            continue
        try:
            ring.install(key)
        except KeyringError as exc:
            raise KeyFileError(f"{kept}: {exc}") from None
    return ring


def removed_ids(path: Path) -> set[bytes]:
    """The key ids the ``# removed`` lines of a node's keyring file name."""
    out = set()
    for line in path.read_text().splitlines():
        if line.startswith(_REMOVED):
            try:
                out.add(parse_key_id(line.removeprefix(_REMOVED)))
            except KeyringError:
                continue
    return out


def write_node_keyring(path: Path, ring: Keyring, removed: set[bytes]) -> None:
    text = ring.to_text() + "".join(
        f"{_REMOVED}{k.hex()}\n" for k in sorted(removed) if k not in ring
    )
    write_private(path, text)


def _wrapping_key(key: bytes) -> bytes:
    return hmac.new(key, _WRAP_INFO, hashlib.sha256).digest()


def seal_key(ring: Keyring, new: bytes) -> tuple[WrappedKey, ...]:
    """``new`` sealed under each key of ``ring`` (a receiver opens the copy it can)."""
    out = []
    for kid in ring.ids():
        key = ring.get(kid)
        assert key is not None
        nonce = secrets.token_bytes(12)
        sealed = ChaCha20Poly1305(_wrapping_key(key)).encrypt(nonce, new, _WRAP_INFO + kid)
        out.append(WrappedKey(kid, nonce, sealed))
    return tuple(out)


def unseal_key(ring: Keyring, wrapped: tuple[WrappedKey, ...], want: bytes) -> bytes | None:
    """The key with id ``want`` from a copy sealed under a key of ``ring``, or None."""
    for w in wrapped:
        key = ring.get(w.key_id)
        if key is None or len(w.nonce) != 12:
            continue
        try:
            new = ChaCha20Poly1305(_wrapping_key(key)).decrypt(
                w.nonce, w.sealed, _WRAP_INFO + w.key_id
            )
        except InvalidTag:
            continue
        if key_id(new) == want:
            return new
    return None


class KeyService:
    """Answers ``KeysQuery``/``KeysChange`` and runs the ``keys`` control command."""

    def __init__(
        self,
        codec: WireCodec,
        state_dir: Path,
        *,
        host_name: str,
        requests: Requester,
        peers: Peers,
        handlers: Handlers,
    ) -> None:
        self.codec = codec
        self.ring: Keyring = codec.keys
        self.path = state_dir / KEYRING_FILE
        self.removed = removed_ids(self.path) if self.path.exists() else set()
        self.host_name = host_name
        self.requests = requests
        self.peers = peers
        handlers.register(KeysQuery, self._answer_query)
        handlers.register(KeysChange, self._answer_change)

    # -- one node ----------------------------------------------------------------------

    def _reply(self, error: str = "") -> KeysReply:
        ring = self.ring
        lacking = {k for k in self.codec.unknown_keys.values() if k not in ring}
        return KeysReply(
            self.host_name, ring.primary_id, tuple(ring.ids()), tuple(sorted(lacking))[:8], error
        )

    async def _answer_query(self, _msg: KeysQuery) -> KeysReply:
        return self._reply()

    async def _answer_change(self, msg: KeysChange) -> KeysReply:
        try:
            changed = self._apply(msg)
        except KeyringError as exc:
            return self._reply(str(exc))
        if changed:
            if msg.op == "remove":
                self.removed.add(msg.key_id)
            else:
                self.removed.discard(msg.key_id)
            write_node_keyring(self.path, self.ring, self.removed)
            log.info("keyring: %s key %s", msg.op, format_key_id(msg.key_id))
        return self._reply()

    def _apply(self, msg: KeysChange) -> bool:
        ring = self.ring
        if msg.op == "install":
            if msg.key_id in ring:
                return False
            new = unseal_key(ring, msg.wrapped, msg.key_id)
            if new is None:
                raise KeyringError(
                    f"key {format_key_id(msg.key_id)} arrived sealed under no key held here"
                )
            return ring.install(new)
        if msg.op == "use":
            return ring.use(msg.key_id)
        if msg.op == "remove":
            return ring.remove(msg.key_id)
        raise KeyringError(f"unknown keys operation {msg.op!r}")

    # -- the control command -----------------------------------------------------------

    async def command(self, args: dict[str, Any]) -> dict[str, Any]:
        """``keys``: ``op`` list | install | use | remove; ``key`` (install: the key, hex;
        use, remove: a key id). Asks every node; a change is checked here first, so a
        change this node refuses changes nothing anywhere."""
        op = str(args.get("op", "list"))
        if op == "list":
            msg: Any = KeysQuery()
        else:
            msg = self._change(op, str(args.get("key", "")))
        replies, silent = await self.requests.gather(msg)
        nodes = sorted((r for r in replies if isinstance(r, KeysReply)), key=lambda r: r.host)
        return _report(op, nodes, sorted(self.peers.name_of(c) for c in silent))

    def _change(self, op: str, text: str) -> KeysChange:
        ring = self.ring
        try:
            if op == "install":
                try:
                    new = bytes.fromhex(text)
                except ValueError:
                    raise KeyringError("keys install needs a key (hex)") from None
                Keyring([new])  # checks the length
                return KeysChange(op, key_id(new), seal_key(ring, new))
            if op not in OPS:
                raise KeyringError(f"keys: unknown operation {op!r} (list, {', '.join(OPS)})")
            kid = parse_key_id(text)
            if op == "use" and kid not in ring:
                raise KeyringError(
                    f"key {format_key_id(kid)} is not installed on this node: "
                    "install it first (dvms keys install)"
                )
            if op == "remove" and kid == ring.primary_id:
                ring.remove(kid)  # raises: the primary key is refused, one line
            return KeysChange(op, kid)
        except KeyringError as exc:
            raise ControlError(str(exc)) from None


def _report(op: str, nodes: list[KeysReply], unreachable: list[str]) -> dict[str, Any]:
    """Per key: on how many nodes it is installed and primary; per node: its ring."""
    total = len(nodes)
    keys: dict[bytes, dict[str, Any]] = {}
    for r in nodes:
        for kid in r.keys:
            row = keys.setdefault(kid, {"key": kid.hex(), "installed": 0, "primary": 0})
            row["installed"] += 1
            row["primary"] += kid == r.primary
    for row in keys.values():
        row["missing_on"] = sorted(r.host for r in nodes if bytes.fromhex(row["key"]) not in r.keys)
    return {
        "op": op,
        "keys": sorted(keys.values(), key=lambda k: (-k["primary"], -k["installed"], k["key"])),
        "nodes": [
            {
                "name": r.host,
                "primary": r.primary.hex(),
                "keys": [k.hex() for k in r.keys],
                "lacking": [k.hex() for k in r.lacking],
                "error": r.error,
            }
            for r in nodes
        ],
        "total": total,
        "errors": [f"{r.host}: {r.error}" for r in nodes if r.error],
        "unreachable": unreachable,
    }
