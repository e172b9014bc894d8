"""A crawl of the whole overlay as a pure state object: every node that answers, and
every node some routing table names that does not.

A cluster-wide view cannot ask "the nodes of my routing table": past a few hundred
nodes (k contacts per bucket) a table holds a small part of the cluster. The crawl
reads routing tables instead, as the libp2p DHT crawler does: it asks each node it
knows for the contents of its table, bucket by bucket, and stops when no new node
appears. Every node is in the tables of its closest neighbours (it looked itself up
when it joined), so from any start the crawl reaches every node that answers.

Reading one node's table: a ``FindNode`` for a target sharing exactly ``i`` leading
bits with the node's id returns the node's closest contacts to it, which are its
bucket ``i`` first, then every deeper bucket, then the shallower ones. So targets at
``i = 0, 1, 2, ...`` read its table from the far half of the id space inwards, and the
node is read in full once an answer holds fewer than ``k`` contacts at depth ``>= i``
(they were all returned). That is about log2(N / k) + 1 requests per node, asked one
after the other; ``parallelism`` bounds the requests in flight over all nodes.

Each node is NEW (found, not asked yet), ASKING (a request in flight), READ (its table
read in full), or FAIL (a request failed after its attempts; a node that had answered
before is asked once more first: under loss a live node loses all of an RPC's
datagrams now and then). The core owns RPCs and the deadline; at the deadline, nodes
not read yet are reported as such (``unfinished``).
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass

from dvms.overlay.messages import Contact

__all__ = ["Crawl", "CrawlResult", "id_at_depth"]

NEW, ASKING, READ, FAIL = 0, 1, 2, 3


def id_at_depth(node_id: int, depth: int, bits: int, rng: random.Random) -> int:
    """A random id sharing exactly ``depth`` leading bits with ``node_id`` (``depth <
    bits``)."""
    flip = 1 << (bits - 1 - depth)
    return node_id ^ flip ^ rng.getrandbits(bits - 1 - depth) if depth < bits - 1 else node_id ^ 1


@dataclass(frozen=True, slots=True)
class CrawlResult:
    crawl_id: int
    #: Every node that answered (this node first), with its Vivaldi coordinate in wire
    #: form (empty when unknown; our own is not included).
    answered: tuple[Contact, ...]
    coords: dict[int, tuple[float, ...]]
    #: Nodes some routing table named that did not answer.
    failed: tuple[Contact, ...]
    #: Nodes found but not read in full when the deadline passed.
    unfinished: tuple[Contact, ...]
    rpcs: int
    started: float
    finished: float
    timed_out: bool


class _Node:
    __slots__ = ("answers", "contact", "depth", "retried", "state")

    def __init__(self, contact: Contact) -> None:
        self.contact = contact
        self.state = NEW
        #: the depth of the next request
        self.depth = 0
        self.answers = 0
        self.retried = False


class Crawl:
    __slots__ = (
        "bits",
        "coords",
        "crawl_id",
        "deadline",
        "in_flight",
        "k",
        "nodes",
        "own",
        "parallelism",
        "queue",
        "rng",
        "rpcs",
        "started",
    )

    def __init__(
        self,
        crawl_id: int,
        *,
        own: Contact,
        seeds: list[Contact],
        k: int,
        bits: int,
        parallelism: int,
        rng: random.Random,
        started: float,
        deadline: float,
    ) -> None:
        """``seeds``: our own routing table (read without asking)."""
        self.crawl_id = crawl_id
        self.own = own
        self.k = k
        self.bits = bits
        self.parallelism = parallelism
        self.rng = rng
        self.started = started
        self.deadline = deadline
        self.nodes: dict[int, _Node] = {}
        self.coords: dict[int, tuple[float, ...]] = {}
        #: node ids with a request due (NEW, or READING its next bucket), in order found
        self.queue: deque[int] = deque()
        self.in_flight = 0
        self.rpcs = 0
        me = _Node(own)
        me.state = READ
        self.nodes[own.node_id] = me
        self.add(seeds)

    def add(self, contacts: list[Contact] | tuple[Contact, ...]) -> None:
        for c in contacts:
            if c.node_id not in self.nodes:
                self.nodes[c.node_id] = _Node(c)
                self.queue.append(c.node_id)

    def next_queries(self) -> list[tuple[Contact, int]]:
        """(node, target) pairs to ask now (``FindNode(target)``); empty if none is
        due."""
        out: list[tuple[Contact, int]] = []
        while self.queue and self.in_flight < self.parallelism:
            n = self.nodes[self.queue.popleft()]
            n.state = ASKING
            self.in_flight += 1
            self.rpcs += 1
            out.append((n.contact, id_at_depth(n.contact.node_id, n.depth, self.bits, self.rng)))
        return out

    def answered(
        self, node_id: int, contacts: tuple[Contact, ...], coord: tuple[float, ...]
    ) -> None:
        n = self.nodes.get(node_id)
        if n is None or n.state != ASKING:
            return
        self.in_flight -= 1
        n.answers += 1
        if coord:
            self.coords[node_id] = coord
        self.add(contacts)
        bits = self.bits
        deep = sum(1 for c in contacts if bits - (c.node_id ^ node_id).bit_length() >= n.depth)
        if deep < self.k or n.depth + 1 >= bits:
            n.state = READ
        else:
            n.depth += 1
            n.state = NEW
            self.queue.append(node_id)

    def failed(self, node_id: int) -> None:
        n = self.nodes.get(node_id)
        if n is None or n.state != ASKING:
            return
        self.in_flight -= 1
        if n.answers and not n.retried:
            n.retried = True
            n.state = NEW
            self.queue.append(node_id)
        else:
            n.state = FAIL

    def finished(self) -> bool:
        return not self.queue and self.in_flight == 0

    def result(self, now: float, *, timed_out: bool = False) -> CrawlResult:
        nodes = self.nodes.values()
        return CrawlResult(
            crawl_id=self.crawl_id,
            answered=tuple(n.contact for n in nodes if n.state == READ or n.answers),
            coords=dict(self.coords),
            failed=tuple(n.contact for n in nodes if n.state == FAIL and not n.answers),
            unfinished=tuple(
                n.contact for n in nodes if n.state in (NEW, ASKING) and not n.answers
            ),
            rpcs=self.rpcs,
            started=self.started,
            finished=now,
            timed_out=timed_out,
        )
