"""Revoked nodes: what this node honours, how it learns them and how it tells the rest.

A revocation (``dvms/wire/revocation.py``) counts only if one of this node's
``operator_keys`` signed it. Once it counts, the revoked node's datagrams are dropped
by the codec (``revoked``), the DHT records it published are refused
(``ValidatorRegistry.revoked``), and it leaves the routing table, which is where
partitions recruit from: it is never asked to join one again.

How revocations travel::

    dvms node revoke  -> control command ``revoke`` on one node: check, apply, keep
                         (<state_dir>/revoked), store in the DHT (revoked/<id>), then
                         RevokeNotice to every node a crawl finds (gather)
    RevokeNotice      -> check, apply, keep                      (each node)
    joined            -> RevocationsQuery to a few peers, apply what checks (a node that
                         was down when a revocation was pushed)
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import cbor2
import trio

from dvms.overlay.core import OverlayCore
from dvms.overlay.messages import Record
from dvms.overlay.records import Identity, RecordError, Validator, ValidatorRegistry
from dvms.runtime.capabilities import Dht, Handlers, Peers, Requester
from dvms.runtime.client import ControlError
from dvms.runtime.services.keys_messages import (
    RevocationsQuery,
    RevocationsReply,
    RevokeAck,
    RevokeNotice,
)
from dvms.wire.envelope import WireCodec
from dvms.wire.keys import write_private
from dvms.wire.revocation import (
    REVOKED_PREFIX,
    Revocation,
    RevocationError,
    decode_revocation,
)

__all__ = ["REVOKED_FILE", "RevocationService", "revocation_validator"]

log = logging.getLogger("dvms.revoke")

REVOKED_FILE = "revoked"
#: Peers asked for their revocations once this node joined.
_ASK_ON_JOIN = 3


def revocation_validator(operator_keys: frozenset[bytes]) -> Validator:
    """Records ``revoked/<id>``: the value is a revocation of that id an operator key
    signed (any node may store it: the operator's signature is what counts)."""

    def check(rec: Record) -> None:
        try:
            rev = decode_revocation(rec.value)
            if rec.name != f"{REVOKED_PREFIX}{rev.node_id:040x}":
                raise RevocationError(f"record {rec.name!r} holds another node's revocation")
            rev.verify(operator_keys)
        except RevocationError as exc:
            raise RecordError(str(exc)) from None

    return Validator(REVOKED_PREFIX, check)


class RevocationService:
    def __init__(
        self,
        operator_keys: frozenset[bytes],
        state_dir: Path,
        *,
        codec: WireCodec,
        overlay: OverlayCore,
        identity: Identity,
        requests: Requester,
        peers: Peers,
        dht: Dht,
        handlers: Handlers,
        joined: Callable[[], Awaitable[None]],
    ) -> None:
        self.operator_keys = operator_keys
        self.path = state_dir / REVOKED_FILE
        self.codec = codec
        self.overlay = overlay
        self.validators: ValidatorRegistry = overlay.store.validators
        self.identity = identity
        self.requests = requests
        self.peers = peers
        self.dht = dht
        self.joined = joined
        self.revoked: dict[int, Revocation] = {}
        handlers.register(RevokeNotice, self._answer_notice)
        handlers.register(RevocationsQuery, self._answer_query)
        self._load()

    # -- this node ---------------------------------------------------------------------

    def _load(self) -> None:
        if not self.path.exists():
            return
        for data in cbor2.loads(bytes.fromhex(self.path.read_text())):
            try:
                self.apply(decode_revocation(data), keep=False)
            except RevocationError as exc:  # e.g. its operator key left operator_keys
                log.warning("ignoring a kept revocation: %s", exc)

    def apply(self, rev: Revocation, *, keep: bool = True) -> bool:
        """Honour ``rev`` (RevocationError if no operator key of ours signed it); False
        if it was honoured already."""
        rev.verify(self.operator_keys)
        if rev.node_id in self.revoked:
            return False
        self.revoked[rev.node_id] = rev
        self.codec.revoked.add(rev.node_id)
        self.validators.revoked.add(rev.node_id)
        self.overlay.table.remove(rev.node_id)
        who = self.peers.host_name(rev.node_id) or "a node"
        if rev.node_id == self.overlay.node_id:
            log.error("this node (%040x) is revoked by an operator: its peers drop it", rev.node_id)
        else:
            log.warning("node %s (%040x) is revoked: its traffic is dropped", who, rev.node_id)
        if keep:
            data = cbor2.dumps([r.encode() for r in self.revoked.values()])
            write_private_bytes(self.path, data)
        return True

    async def _answer_notice(self, msg: RevokeNotice) -> RevokeAck:
        try:
            self.apply(decode_revocation(msg.revocation))
        except RevocationError as exc:
            return RevokeAck(self.peers.host_name(self.overlay.node_id) or "", False, str(exc))
        return RevokeAck(self.peers.host_name(self.overlay.node_id) or "", True, "")

    async def _answer_query(self, _msg: RevocationsQuery) -> RevocationsReply:
        return RevocationsReply(tuple(r.encode() for r in list(self.revoked.values())[:256]))

    # -- learning on join --------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await self.joined()
        for c in self.peers.peer_contacts()[:_ASK_ON_JOIN]:
            reply = await self.requests.request(c.addr, RevocationsQuery())
            if not isinstance(reply, RevocationsReply):
                continue
            for data in reply.revocations:
                try:
                    self.apply(decode_revocation(data))
                except RevocationError as exc:
                    log.warning("revocation from %s refused: %s", self.peers.name_of(c), exc)

    # -- the control command -----------------------------------------------------------

    async def command(self, args: dict[str, Any]) -> dict[str, Any]:
        """``revoke``: ``revocation`` (bytes, signed by the CLI with the operator key).
        Checked here first: a revocation this node refuses is refused, nothing sent."""
        data = args.get("revocation")
        if not isinstance(data, bytes):
            raise ControlError("revoke needs 'revocation', a signed revocation")
        try:
            rev = decode_revocation(data)
            self.apply(rev)
        except RevocationError as exc:
            raise ControlError(str(exc)) from None
        name = f"{REVOKED_PREFIX}{rev.node_id:040x}"
        rec = self.identity.sign_record(name, data, seq=1, ttl_s=self.overlay.config.record_ttl_s)
        stored = await self.dht.put(rec)
        replies, silent = await self.requests.gather(RevokeNotice(data))
        acks = [r for r in replies if isinstance(r, RevokeAck)]
        return {
            "node_id": f"{rev.node_id:040x}",
            "name": self.peers.host_name(rev.node_id) or "",
            "stored": stored,
            "told": sum(a.ok for a in acks),
            "refused": [f"{a.host}: {a.error}" for a in acks if not a.ok],
            "unreachable": sorted(
                self.peers.name_of(c) for c in silent if c.node_id != rev.node_id
            ),
        }


def write_private_bytes(path: Path, data: bytes) -> None:
    write_private(path, data.hex())
