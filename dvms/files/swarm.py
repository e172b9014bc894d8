"""The scheduler of one swarm download: which peers to fetch from, how many chunks from
each, which chunk next, and whom to ban. Sans-I/O: the runtime opens the streams, asks
``slots()`` how many requests to keep open per peer, ``assign(peer)`` for each request,
and reports every answer (``on_chunk``) or failure (``release``, ``drop_peer``).

::

    peers (rtt by Vivaldi, bitmap or complete) --> slots(): nearest first, at most
        per_peer_inflight each and total_inflight in all, only peers holding a chunk
        we lack, never banned ones
    assign(peer) --> the rarest chunk among the live peers that this peer holds and
        nobody is fetching (ties in a random order drawn once per transfer)
    on_chunk(peer, i, ok) --> ok: chunk done; else the peer's bad count, banned at
        ban_after_bad (its chunks go back to the pool)

A chunk is in flight from one peer at a time; ``have`` (this node's bitmap) only grows.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from dvms.files.bitmap import Bitmap

__all__ = ["PeerState", "Swarm"]


@dataclass(slots=True)
class PeerState:
    #: Predicted round-trip time (Vivaldi), seconds; None if unknown (ranked last).
    rtt: float | None
    #: The chunks it holds; None: all of them (a complete provider).
    have: Bitmap | None
    #: Random rank among peers at the same distance.
    tiebreak: float
    inflight: set[int] = field(default_factory=set)
    good: int = 0
    bad: int = 0
    banned: bool = False

    def holds(self, index: int) -> bool:
        return self.have is None or index in self.have


class Swarm:
    def __init__(
        self,
        have: Bitmap,
        rng: random.Random,
        *,
        per_peer: int,
        total: int,
        ban_after: int,
        max_peers: int | None = None,
        complete_only: bool = False,
    ) -> None:
        """``max_peers`` limits the peers used at once; ``complete_only`` uses only
        complete providers (with both = 1 and ``total`` = 1: one source, one chunk at a
        time, the way a single-source copy works)."""
        self.have = have
        self.rng = rng
        self.per_peer = per_peer
        self.total = total
        self.ban_after = ban_after
        self.max_peers = max_peers
        self.complete_only = complete_only
        self.peers: dict[int, PeerState] = {}
        self._avail = [0] * have.size
        self._inflight: dict[int, int] = {}  # chunk -> peer fetching it
        self._order = list(range(have.size))
        rng.shuffle(self._order)
        self.verified = 0
        self.bad_chunks = 0

    # -- peers ---------------------------------------------------------------------------

    def add_peer(self, peer: int, rtt: float | None, have: Bitmap | None) -> None:
        """A provider (again: its distance and bitmap are updated; bans stay)."""
        if self.complete_only and have is not None:
            return
        old = self.peers.get(peer)
        if old is None:
            self.peers[peer] = PeerState(rtt, have, self.rng.random())
            self._count(False, have)
            return
        old.rtt = rtt
        self.set_have(peer, have)

    def set_have(self, peer: int, have: Bitmap | None) -> None:
        p = self.peers.get(peer)
        if p is None or p.banned:
            return
        self._count(p.have, have)
        p.have = have

    def _count(self, old: Bitmap | bool | None, new: Bitmap | bool | None) -> None:
        """Move the availability counts from bitmap ``old`` to ``new`` (None: all chunks,
        False: none)."""
        for i in range(self.have.size):
            was, now = _holds(old, i), _holds(new, i)
            if was != now:
                self._avail[i] += 1 if now else -1

    def drop_peer(self, peer: int) -> None:
        """A peer that went away (connection refused, stream broken): forget it."""
        p = self.peers.pop(peer, None)
        if p is None:
            return
        for i in p.inflight:
            self._inflight.pop(i, None)
        if not p.banned:
            self._count(p.have, False)

    def usable(self) -> list[int]:
        """Peers not banned, nearest first."""
        live = [(p.rtt is None, p.rtt or 0.0, p.tiebreak, k) for k, p in self.peers.items()]
        return [k for *_, k in sorted(live) if not self.peers[k].banned]

    def slots(self) -> dict[int, int]:
        """How many requests to keep open to each peer now (see the module text)."""
        out: dict[int, int] = {}
        left = self.total
        wanted = self._wanted()
        for k in self.usable():
            if left <= 0 or (self.max_peers is not None and len(out) >= self.max_peers):
                break
            p = self.peers[k]
            n = min(self.per_peer, left, sum(1 for i in wanted if p.holds(i)) + len(p.inflight))
            if n > 0:
                out[k] = n
                left -= n
        return out

    def _wanted(self) -> list[int]:
        return [i for i in self._order if i not in self.have and i not in self._inflight]

    # -- chunks --------------------------------------------------------------------------

    def assign(self, peer: int) -> int | None:
        """The next chunk to ask ``peer`` for, marked in flight; None if it holds none we
        need that nobody is fetching."""
        p = self.peers.get(peer)
        if p is None or p.banned or len(p.inflight) >= self.per_peer:
            return None
        if len(self._inflight) >= self.total:
            return None
        best: int | None = None
        for i in self._order:
            if i in self.have or i in self._inflight or not p.holds(i):
                continue
            if best is None or self._avail[i] < self._avail[best]:
                best = i
                if self._avail[i] <= 1:
                    break
        if best is not None:
            self._inflight[best] = peer
            p.inflight.add(best)
        return best

    def release(self, peer: int, index: int) -> None:
        """The request for ``index`` failed without an answer: someone else may fetch it."""
        p = self.peers.get(peer)
        if p is not None:
            p.inflight.discard(index)
        if self._inflight.get(index) == peer:
            del self._inflight[index]

    def missing_at(self, peer: int, index: int) -> None:
        """``peer`` answered that it does not hold ``index`` (its bitmap was stale)."""
        self.release(peer, index)
        p = self.peers.get(peer)
        if p is not None and p.have is not None and index in p.have:
            fresh = Bitmap(p.have.size)
            for i in range(p.have.size):
                if i in p.have and i != index:
                    fresh.set(i)
            self.set_have(peer, fresh)

    def on_chunk(self, peer: int, index: int, ok: bool) -> bool:
        """``peer`` sent chunk ``index``, which matched its hash (``ok``) or not. Returns
        True if the peer is banned now."""
        self.release(peer, index)
        p = self.peers.get(peer)
        if ok:
            if self.have.set(index):
                self.verified += 1
            if p is not None:
                p.good += 1
            return False
        self.bad_chunks += 1
        if p is None or p.banned:
            return False
        p.bad += 1
        if p.bad >= self.ban_after:
            p.banned = True
            for i in p.inflight:
                if self._inflight.get(i) == peer:
                    del self._inflight[i]
            p.inflight.clear()
            self._count(p.have, False)
            return True
        return False

    @property
    def done(self) -> bool:
        return self.have.complete

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    def banned(self) -> list[int]:
        return [k for k, p in self.peers.items() if p.banned]


def _holds(have: Bitmap | bool | None, index: int) -> bool:
    if isinstance(have, Bitmap):
        return index in have
    return have is None
