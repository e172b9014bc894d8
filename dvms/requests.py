"""The request table and timer heap every sans-I/O core composes.

``TimerHeap``: timers ordered by due time, ties broken by the order they were set (a
sequence number), so a run is deterministic. A timer is ``(when, seq, kind, ref)``:
``kind`` says which handler of the core runs (each core has its own enum and a table
from kind to handler), ``ref`` is that handler's argument.

``RequestTable``: the outstanding requests, by request id. A request is sent again until
answered or out of attempts, each attempt under a fresh random id, so a late answer to an
earlier attempt still counts and a duplicate cannot be mistaken for a new request. Each
attempt's send time is kept with its id: an answer says which attempt it answers, so
``Request.sent_time(rid)`` gives an unambiguous round-trip sample even after a
retransmission (as QUIC's packet numbers do; TCP needs Karn's rule because its
retransmissions reuse sequence numbers)::

    core: Request(addr, peer, msg, then, limit) --send()--> Send(addr, rid, msg)
          + a timer of its own kind (the core picks the timeout)
    answer (rid, src, sender) --match()--> the Request, done (its every id forgotten)
                                           or None: not ours, or not from whom we asked
    timer due, not done --> send() again, or give_up() and tell ``then`` it failed

``Request.then`` is the core's own record of what to do with the answer. Nothing here
reads a clock or does I/O; the random ids come from the core's injected RNG.
"""

from __future__ import annotations

import heapq
import random
from typing import Any, Generic, TypeVar

from dvms.effects import Address, Send

__all__ = ["Request", "RequestTable", "TimerHeap"]

K = TypeVar("K")
T = TypeVar("T")


class TimerHeap(Generic[K]):
    __slots__ = ("entries", "seq")

    def __init__(self) -> None:
        #: The heap itself (``heapq`` order; read ``entries[0]`` for the earliest).
        self.entries: list[tuple[float, int, K, Any]] = []
        self.seq = 0

    def at(self, when: float, kind: K, ref: Any = None) -> None:
        """Run ``kind``'s handler with ``ref`` at ``when`` (after every timer set for the
        same time before it)."""
        self.seq += 1
        heapq.heappush(self.entries, (when, self.seq, kind, ref))

    def next_deadline(self) -> float | None:
        entries = self.entries
        return entries[0][0] if entries else None

    def pop_due(self, now: float) -> tuple[float, int, K, Any] | None:
        """The earliest timer if it is due at ``now`` (removed), else None."""
        entries = self.entries
        if entries and entries[0][0] <= now:
            return heapq.heappop(entries)
        return None

    def pop(self) -> tuple[float, int, K, Any]:
        """Remove the earliest timer (a core discarding one that no longer matters)."""
        return heapq.heappop(self.entries)

    def __len__(self) -> int:
        return len(self.entries)


class Request(Generic[T]):
    """One outstanding request: ``msg`` to ``addr`` (node ``peer`` when known), at most
    ``limit`` attempts. ``then`` is the core's continuation record."""

    __slots__ = (
        "addr",
        "attempts",
        "backoff",
        "done",
        "first_sent",
        "limit",
        "msg",
        "peer",
        "rids",
        "sends",
        "sent_at",
        "then",
    )

    def __init__(
        self,
        addr: Address,
        peer: int | None,
        msg: Any,
        then: T,
        limit: int,
        backoff: bool = True,
    ) -> None:
        self.addr = addr
        self.peer = peer
        self.msg = msg
        self.then = then
        #: Attempts before the request counts as failed.
        self.limit = limit
        #: Whether each attempt's timeout doubles the last (the core applies it).
        self.backoff = backoff
        self.attempts = 0
        #: When the first and the latest attempt went out.
        self.first_sent = 0.0
        self.sent_at = 0.0
        #: Every attempt's request id, the latest last, and its send time (same order).
        self.rids: list[int] = []
        self.sends: list[float] = []
        #: Answered or given up: its timers are stale.
        self.done = False

    def sent_time(self, rid: int) -> float:
        """When the attempt with id ``rid`` (one of ``rids``) was sent."""
        rids = self.rids
        if rid == rids[-1]:
            return self.sent_at
        return self.sends[rids.index(rid)]


class RequestTable(Generic[T]):
    __slots__ = ("_pending", "_rng")

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._pending: dict[int, Request[T]] = {}

    def send(self, req: Request[T], now: float) -> Send:
        """One more attempt of ``req`` under a fresh request id: the datagram to send.
        The caller sets its timer (``req.attempts`` counts this attempt)."""
        pending = self._pending
        rid = self._rng.getrandbits(64)
        while rid in pending:
            rid = self._rng.getrandbits(64)
        if not req.attempts:
            req.first_sent = now
        req.attempts += 1
        req.sent_at = now
        req.rids.append(rid)
        req.sends.append(now)
        pending[rid] = req
        return Send(req.addr, rid, req.msg)

    def match(self, rid: int, src: Address, sender: int) -> Request[T] | None:
        """The request an answer with id ``rid`` from ``sender`` at ``src`` answers, now
        done; None if no request of ours has that id or it was sent to someone else."""
        req = self._pending.get(rid)
        if req is None or req.addr != src or (req.peer is not None and req.peer != sender):
            return None
        self._forget(req)
        return req

    def give_up(self, req: Request[T]) -> None:
        """Every attempt of ``req`` timed out: it is done, a late answer is unexpected."""
        self._forget(req)

    def _forget(self, req: Request[T]) -> None:
        pending = self._pending
        for r in req.rids:
            del pending[r]
        req.done = True

    def ids(self) -> list[int]:
        """The request ids still awaited (every attempt of every pending request)."""
        return list(self._pending)

    def get(self, rid: int) -> Request[T] | None:
        return self._pending.get(rid)

    def __len__(self) -> int:
        return len(self._pending)
