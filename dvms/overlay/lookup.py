"""One iterative Kademlia lookup (FIND_NODE or FIND_VALUE) as a pure state object.

The core owns RPCs and timers; a ``Lookup`` only decides whom to ask next and when it is
finished. Candidates are kept sorted by XOR distance to the target. Each is NEW (not asked
yet), WAIT (asked, no answer yet), DONE (answered) or FAIL (gave up after retries).

Rule (the paper's, made strict): keep up to ``alpha`` RPCs in flight to the closest NEW
candidates among the ``k`` closest non-failed ones; the lookup ends only when the ``k``
closest non-failed candidates have all answered. Nodes that fail drop out and the next
ones move up, so the result is the ``k`` closest nodes that answered. Our own node is a
candidate that has already answered, so it appears in the result when it belongs there.

``hops`` is the length of the referral chain that led to the closest answering node
(1 = it was already in our table).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from dvms.overlay.messages import Contact, Record

__all__ = ["Lookup", "LookupResult"]

NEW, WAIT, DONE, FAIL = 0, 1, 2, 3


class _Cand:
    __slots__ = ("contact", "depth", "state")

    def __init__(self, contact: Contact, depth: int, state: int = NEW) -> None:
        self.contact = contact
        self.depth = depth
        self.state = state


@dataclass(frozen=True, slots=True)
class LookupResult:
    lookup_id: int
    kind: str
    target: int
    contacts: tuple[Contact, ...]
    records: tuple[Record, ...]
    hops: int
    rpcs: int
    started: float
    finished: float
    timed_out: bool


class Lookup:
    __slots__ = (
        "alpha",
        "cands",
        "deadline",
        "in_flight",
        "k",
        "kind",
        "lookup_id",
        "order",
        "records",
        "retried",
        "rpcs",
        "slow",
        "started",
        "target",
    )

    def __init__(
        self,
        lookup_id: int,
        kind: str,
        target: int,
        *,
        k: int,
        alpha: int,
        own: Contact,
        seeds: list[Contact],
        started: float,
        deadline: float,
    ) -> None:
        self.lookup_id = lookup_id
        self.kind = kind
        self.target = target
        self.k = k
        self.alpha = alpha
        self.started = started
        self.deadline = deadline
        self.cands: dict[int, _Cand] = {}
        #: XOR distances to the target, ascending; ``distance ^ target`` is the node id.
        #: Plain ints compare much faster than (distance, id) tuples.
        self.order: list[int] = []
        self.in_flight = 0
        self.rpcs = 0
        self.records: list[Record] = []
        #: Candidates that missed their first timeout: still awaited, but they no longer
        #: hold one of the alpha slots, so a dead node cannot stall the lookup.
        self.slow: set[int] = set()
        #: Candidates asked a second time after a failed RPC (see ``failed``).
        self.retried: set[int] = set()
        self._insert(own, 0, DONE)
        self.add(seeds, 1)

    def _insert(self, contact: Contact, depth: int, state: int = NEW) -> None:
        node_id = contact.node_id
        if node_id in self.cands:
            return
        self.cands[node_id] = _Cand(contact, depth, state)
        bisect.insort(self.order, node_id ^ self.target)

    def add(self, contacts: list[Contact] | tuple[Contact, ...], depth: int) -> None:
        cands = self.cands
        target = self.target
        fresh: list[int] = []
        for c in contacts:
            node_id = c.node_id
            if node_id not in cands:
                cands[node_id] = _Cand(c, depth, NEW)
                fresh.append(node_id ^ target)
        if fresh:
            # One C-level sort of the (sorted) order plus the newcomers beats an insort
            # per contact (timsort merges the two runs).
            order = self.order
            order.extend(fresh)
            order.sort()

    def next_queries(self) -> list[Contact]:
        """Candidates to ask now (marked WAIT); empty if none is due."""
        out: list[Contact] = []
        if self.in_flight >= self.alpha:
            return out
        seen = 0
        cands = self.cands
        target = self.target
        for d in self.order:
            c = cands[d ^ target]
            if c.state == FAIL:
                continue
            seen += 1
            if c.state == NEW:
                c.state = WAIT
                self.in_flight += 1
                self.rpcs += 1
                out.append(c.contact)
                if self.in_flight >= self.alpha:
                    break
            if seen >= self.k:
                break
        return out

    def stalled(self, node_id: int) -> None:
        """The RPC to ``node_id`` timed out once and is being retried: free its slot."""
        c = self.cands.get(node_id)
        if c is not None and c.state == WAIT and node_id not in self.slow:
            self.slow.add(node_id)
            self.in_flight -= 1

    def _settle(self, c: _Cand) -> None:
        if c.contact.node_id in self.slow:
            self.slow.discard(c.contact.node_id)
        else:
            self.in_flight -= 1

    def answered(
        self, node_id: int, contacts: tuple[Contact, ...], records: tuple[Record, ...] = ()
    ) -> None:
        c = self.cands.get(node_id)
        if c is None or c.state != WAIT:
            return
        c.state = DONE
        self._settle(c)
        if records:
            self.records.extend(records)
        self.add(contacts, c.depth + 1)

    def failed(self, node_id: int, *, retry: bool = False) -> None:
        """The RPC to ``node_id`` failed after all its attempts. With ``retry`` (the
        caller knows the node was alive until now) it is asked once more, with a fresh
        RPC: under loss a live node loses all of an RPC's attempts now and then, and
        leaving it out would make the lookup miss one of the k closest."""
        c = self.cands.get(node_id)
        if c is None or c.state != WAIT:
            return
        self._settle(c)
        if retry and node_id not in self.retried:
            self.retried.add(node_id)
            c.state = NEW
        else:
            c.state = FAIL

    def finished(self) -> bool:
        """True when the k closest non-failed candidates have all answered."""
        seen = 0
        cands = self.cands
        target = self.target
        for d in self.order:
            st = cands[d ^ target].state
            if st == FAIL:
                continue
            if st != DONE:
                return False
            seen += 1
            if seen >= self.k:
                return True
        return self.in_flight == 0 and not self.slow

    def result(self, now: float, *, timed_out: bool = False) -> LookupResult:
        best: list[_Cand] = []
        cands = self.cands
        target = self.target
        for d in self.order:
            c = cands[d ^ target]
            if c.state == DONE:
                best.append(c)
                if len(best) >= self.k:
                    break
        hops = next((c.depth for c in best if c.depth > 0), 0)
        return LookupResult(
            lookup_id=self.lookup_id,
            kind=self.kind,
            target=self.target,
            contacts=tuple(c.contact for c in best),
            records=tuple(self.records),
            hops=hops,
            rpcs=self.rpcs,
            started=self.started,
            finished=now,
            timed_out=timed_out,
        )
