"""Requests with retries for the partition core: each request gets a fresh request id per
attempt, a timeout that starts from the overlay's RTT estimate of the peer and doubles,
and exactly one outcome (the reply, or None once every attempt timed out).

A peer that let every attempt time out is reported (``PeerUnreachable``: the node glue
marks the routing-table contact failed) and kept out of recruitment for
``dead_peer_s``; any message from it clears that.

A mixin of ``PartitionCore`` (it uses the core's RNG, timers and overlay).
"""

from __future__ import annotations

from typing import Any

from dvms.effects import Address, Send
from dvms.overlay.messages import Contact
from dvms.partition.events import PeerUnreachable
from dvms.partition.timers import T_RPC

__all__ = ["PendingRequest", "Rpc"]


class PendingRequest:
    __slots__ = ("attempts", "backoff", "dst", "max_attempts", "msg", "on_reply", "peer", "rids")

    def __init__(
        self,
        dst: Address,
        peer: int | None,
        msg: Any,
        on_reply,
        max_attempts: int,
        backoff: bool = True,
    ) -> None:
        self.dst = dst
        self.peer = peer
        self.msg = msg
        self.on_reply = on_reply  # called with (reply msg or None on failure, now, out)
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.attempts = 0
        self.rids: list[int] = []


class Rpc:
    # -- RPC ---------------------------------------------------------------------------

    def _request(
        self,
        peer: Contact,
        msg: Any,
        on_reply,
        now: float,
        out: list[Any],
        *,
        attempts: int | None = None,
        backoff: bool = True,
    ) -> None:
        """Send ``msg`` to ``peer`` until answered or ``attempts`` (default
        ``rpc_attempts``) timed out, each timeout twice the last unless not ``backoff``;
        ``on_reply(reply or None, now, out)``."""
        rpc = PendingRequest(
            peer.addr,
            peer.node_id,
            msg,
            on_reply,
            attempts or self.config.rpc_attempts,
            backoff,
        )
        self._transmit(rpc, now, out)

    def _transmit(self, rpc: PendingRequest, now: float, out: list[Any]) -> None:
        rid = self.rng.getrandbits(64)
        rpc.attempts += 1
        rpc.rids.append(rid)
        self._rpcs[rid] = rpc
        base = self.overlay.table.rto(rpc.peer) if rpc.peer is not None else None
        timeout = max(base or 0.0, self.config.rpc_timeout_s)
        if rpc.backoff:
            timeout *= 2 ** (rpc.attempts - 1)
        self._at(now + timeout, T_RPC, rpc)
        out.append(Send(rpc.dst, rid, rpc.msg))

    def _rpc_timeout(self, rpc: PendingRequest, now: float, out: list[Any]) -> None:
        if not rpc.rids or rpc.rids[-1] not in self._rpcs:
            return  # answered
        if rpc.attempts < rpc.max_attempts:
            self._transmit(rpc, now, out)
            return
        for r in rpc.rids:
            self._rpcs.pop(r, None)
        self.stats["rpc_failed"] += 1
        if rpc.peer is not None and rpc.peer != self.me.node_id:
            if rpc.peer not in self._dead:
                self.stats["peers_reported"] += 1
                out.append(PeerUnreachable(rpc.peer))
            self._dead[rpc.peer] = now + self.config.dead_peer_s
        rpc.on_reply(None, now, out)

    def _alive(self, sender: int) -> None:
        """Any message from ``sender`` proves it is up again."""
        if self._dead:
            self._dead.pop(sender, None)

    def dead_peers(self, now: float) -> set[int]:
        """Peers that recently let a request time out (kept out of recruitment)."""
        if not self._dead:
            return set()
        for node_id in [n for n, until in self._dead.items() if until <= now]:
            del self._dead[node_id]
        return set(self._dead)

    def _on_reply(self, src, sender, rid, msg, now, out) -> None:
        rpc = self._rpcs.get(rid)
        if rpc is None or rpc.dst != src or (rpc.peer is not None and rpc.peer != sender):
            self.stats["unexpected_response"] += 1
            return
        for r in rpc.rids:
            self._rpcs.pop(r, None)
        rpc.on_reply(msg, now, out)
