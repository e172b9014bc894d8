"""The Kademlia node as a sans-I/O core.

Inputs (each takes ``now``, seconds on whatever clock the caller runs):

- ``on_message(src, sender, rid, msg, now=)``: a decoded, authenticated datagram;
- ``on_timer(now=)``: call when ``next_deadline()`` has passed;
- commands: ``start(seeds)``, ``lookup(target)``, ``get(name)``, ``put(record)``,
  ``crawl()``, ``leave(notice)``.

Outputs: a list of effects (``OverlayEffect``), ``Send`` (a datagram to send) and
``Emit`` (an event for the application: ``Joined``, ``LookupDone``, ``PutDone``,
``CrawlDone``, ``LeaveDone``, ``PeerLeft``). The core never awaits, never reads a clock
and never touches a socket; the Trio runner (``dvms.runtime.node``) and the simulator
(``dvms.sim``) both drive this same class.

How it works::

    request in  --> table.seen(sender) --> reply (Pong/Nodes/Value/Stored + our coordinate)
    command     --> Lookup --> up to alpha RPCs --> responses/timeouts --> Lookup --> ...
    RPC         --> timer (adaptive RTO, retried with backoff, then a failure input)
    response    --> RTT sample --> routing table (srtt) + Vivaldi update
    timer due   --> its handler, by kind (``_timer_handlers``)
    RPC outcome --> its purpose's continuation (``_continuations``: lookup, seed, store)
                    + ``rpc_stats`` (result and latency by request type)
    leave       --> Leave (signed) to every routing-table peer; then only their answers
                    are taken --> LeaveDone
    Leave in    --> checked signature --> peer out of the table, into ``left``, Pong,
                    PeerLeft (hearing from it again makes it a live peer again)

Requests and timers live in the kernel's ``RequestTable`` and ``TimerHeap``
(``dvms.requests``), which the partition core uses too.

Every answered RPC gives an RTT sample, measured from the send time of the attempt it
answers: each attempt goes out under its own request id, so an answer is never ambiguous
(as with QUIC's packet numbers; Karn's rule, which samples only first attempts, is for
TCP's reused sequence numbers). Sampling retransmitted RPCs too lets the timeout grow to
a peer that became slow (a busy daemon answering in 150 ms when its timeout was 20 ms):
with first attempts only, the fast answers would be the only samples and nearly every
RPC to that peer would be sent twice. An answer to an earlier attempt arriving after a
later one was sent is measured from its own attempt.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from dvms.effects import Address, Emit, Send
from dvms.overlay.clock import ClockNote, ClockOffsets
from dvms.overlay.config import KademliaConfig
from dvms.overlay.crawl import Crawl, CrawlResult
from dvms.overlay.lookup import Lookup, LookupResult
from dvms.overlay.messages import (
    REQUESTS,
    Contact,
    FindNode,
    FindValue,
    Leave,
    Nodes,
    Ping,
    Pong,
    Record,
    Store,
    Stored,
    Value,
)
from dvms.overlay.records import (
    RecordError,
    RecordStore,
    ValidatorRegistry,
    key_of,
    verify_leave,
)
from dvms.overlay.routing import RoutingTable
from dvms.overlay.rpcstats import RpcStats
from dvms.requests import Request, RequestTable, TimerHeap
from dvms.vivaldi import Coordinate

__all__ = [
    "CrawlDone",
    "Joined",
    "LeaveDone",
    "LookupDone",
    "OverlayCore",
    "OverlayEffect",
    "OverlayTimer",
    "PeerLeft",
    "Purpose",
    "PutDone",
]

#: Everything an overlay core returns.
OverlayEffect = Send | Emit


class OverlayTimer(IntEnum):
    """What a timer of the overlay core is for (its handler: ``_timer_handlers``)."""

    RPC = 0  # an RPC attempt timed out (ref: the Request)
    LOOKUP = 1  # a lookup's deadline (ref: lookup id)
    PROBE = 2  # ping a random contact (Vivaldi sample, liveness)
    REFRESH = 3  # look up the buckets nobody talked to
    HOUSEKEEPING = 4  # expire records, republish ours
    JOIN = 5  # contact the seeds again
    CRAWL = 6  # a crawl's deadline (ref: crawl id)


class Purpose(IntEnum):
    """Why an RPC was sent: where its outcome goes (``_continuations``)."""

    LOOKUP = 0  # a lookup's FindNode/FindValue (ref: lookup id)
    PROBE = 1  # a periodic Ping
    EVICT = 2  # a Ping to a full bucket's oldest contact
    SEED = 3  # a Ping to a seed while joining
    STORE = 4  # a Store of a put (ref: the _Put)
    CRAWL = 5  # a crawl's FindNode (ref: crawl id)
    LEAVE = 6  # our Leave to a peer, as this node stops


#: A message handler: (src, sender, rid, msg, now, out).
_Handler = Callable[[Address, int, int, Any, float, list[OverlayEffect]], None]
#: A timer handler: (ref, now, out).
_TimerHandler = Callable[[Any, float, list[OverlayEffect]], None]
#: An RPC continuation: (request, reply or None if it failed, was_answering, now, out).
_Continuation = Callable[["_Rpc", Any, bool, float, list[OverlayEffect]], None]

_COORD_CACHE: dict[tuple[float, ...], Coordinate] = {}
_COORD_CACHE_MAX = 50_000
#: Messages are immutable: one Ping serves every request.
_PING = Ping()


def decode_coord(wire: tuple[float, ...], dim: int) -> Coordinate:
    """Validate a peer's wire coordinate, memoised: the same coordinate reaches many
    nodes (every reply of its owner until it moves), and decoding is pure."""
    coord = _COORD_CACHE.get(wire)
    if coord is None or len(coord.vec) != dim:
        coord = Coordinate.from_wire(wire, dim)
        if len(_COORD_CACHE) >= _COORD_CACHE_MAX:
            _COORD_CACHE.clear()
        _COORD_CACHE[wire] = coord
    return coord


def _remember_coord(wire: tuple[float, ...], coord: Coordinate) -> None:
    """Seed the decode memo with a coordinate we just computed ourselves (finite: the
    Vivaldi client resets a non-finite one), so peers decoding it need not validate it
    again. Entries with a negative error or height are left to ``from_wire`` to refuse."""
    if coord.error >= 0.0 and coord.height >= 0.0:
        if len(_COORD_CACHE) >= _COORD_CACHE_MAX:
            _COORD_CACHE.clear()
        _COORD_CACHE[wire] = coord


@dataclass(frozen=True, slots=True)
class Joined:
    """The join lookup finished: the node knows its neighbourhood."""

    contacts: int


@dataclass(frozen=True, slots=True)
class LookupDone:
    result: LookupResult
    #: For value lookups: the winning valid record, if any replica had one.
    record: Record | None = None


@dataclass(frozen=True, slots=True)
class CrawlDone:
    """A crawl of the overlay ended (``OverlayCore.crawl``)."""

    result: CrawlResult


@dataclass(frozen=True, slots=True)
class LeaveDone:
    """Every peer told of our leave answered or timed out (``OverlayCore.leave``)."""

    told: int
    acknowledged: int


@dataclass(frozen=True, slots=True)
class PeerLeft:
    """A peer said it stops cleanly (a signed ``Leave``): it is out of the routing table
    and in ``OverlayCore.left``."""

    contact: Contact


@dataclass(frozen=True, slots=True)
class PutDone:
    name: str
    #: Replicas that acknowledged (our own copy included when we are among the k closest).
    stored: int


class _Ask:
    """An RPC's continuation: its purpose, the purpose's argument (a lookup id, a _Put)
    and the peer's Contact when we know it already (reused when it answers)."""

    __slots__ = ("contact", "purpose", "ref")

    def __init__(self, purpose: Purpose, ref: Any, contact: Contact | None) -> None:
        self.purpose = purpose
        self.ref = ref
        self.contact = contact


_Rpc = Request[_Ask]


class _Put:
    __slots__ = ("pending", "record", "stored")

    def __init__(self, record: Record) -> None:
        self.record = record
        self.pending = 0
        self.stored = 0


class OverlayCore:
    def __init__(
        self,
        contact: Contact,
        config: KademliaConfig,
        rng: random.Random,
        *,
        vivaldi: Any | None = None,
        validators: ValidatorRegistry | None = None,
        now: float = 0.0,
    ) -> None:
        self.contact = contact
        self.node_id = contact.node_id
        self.config = config
        self.rng = rng
        self.vivaldi = vivaldi
        self.table = RoutingTable(contact.node_id, config, now=now)
        self.store = RecordStore(
            validators or ValidatorRegistry(),
            max_records=config.max_records,
            max_ttl_s=config.record_ttl_s,
        )
        self.joined = False
        self.stats: Counter[str] = Counter()
        #: Outcomes and latencies of our RPCs by request type (read by the metrics).
        self.rpc_stats = RpcStats()
        #: Peers that left cleanly (a signed Leave), oldest first: node id -> (contact,
        #: when). A peer leaves it when we hear from it again.
        self.left: dict[int, tuple[Contact, float]] = {}
        #: Set once ``leave`` ran: [peers told, outcomes so far, acknowledged so far].
        self._leaving: list[int] | None = None
        #: Each peer's clock offset, from the timestamps of its datagrams (``clock.py``).
        self.clocks = ClockOffsets()
        self.requests: RequestTable[_Ask] = RequestTable(rng)
        self._lookups: dict[int, Lookup] = {}
        self._lookup_kind: dict[int, tuple[str, Any]] = {}
        self._next_lookup = 1
        self._crawls: dict[int, Crawl] = {}
        self._timers: TimerHeap[OverlayTimer] = TimerHeap()
        self._timer_handlers: dict[OverlayTimer, _TimerHandler] = {
            OverlayTimer.RPC: self._rpc_timeout,
            OverlayTimer.LOOKUP: self._lookup_timeout,
            OverlayTimer.PROBE: self._probe,
            OverlayTimer.REFRESH: self._refresh,
            OverlayTimer.HOUSEKEEPING: self._housekeeping,
            OverlayTimer.JOIN: self._contact_seeds,
            OverlayTimer.CRAWL: self._crawl_timeout,
        }
        #: What an RPC's outcome leads to, by its purpose (None: nothing more).
        self._continuations: dict[Purpose, _Continuation | None] = {
            Purpose.LOOKUP: self._lookup_answered,
            Purpose.PROBE: None,
            Purpose.EVICT: None,
            Purpose.SEED: self._seed_answered,
            Purpose.STORE: self._store_answered,
            Purpose.CRAWL: self._crawl_answered,
            Purpose.LEAVE: self._leave_answered,
        }
        self._published: dict[str, tuple[Record, float]] = {}
        self._seeds: list[Address] = []
        self._coord_wire: tuple[float, ...] = ()
        #: Our Pong (it carries our coordinate): built on the first Ping after the
        #: coordinate changed, not at every change (most changes see no Ping).
        self._pong: Pong | None = Pong()
        self._seed_pending = 0
        self._seed_ok = False
        self._rtt_samples = 0
        #: Fast probes left in the current error surge (``_probe``); refilled once the
        #: error estimate falls to ``probe_fast_rearm_error``.
        self._fast_left = config.probe_fast_burst
        #: Still in the fast period of a new coordinate (``_probe``): until
        #: ``probe_fast_samples`` samples or an error estimate down to
        #: ``probe_fast_settled_error``, whichever comes first.
        self._new_coord = True
        self._gsrtt = 0.0
        self._grttvar = 0.0
        self._handlers: dict[type, _Handler] = {
            Ping: self._on_ping,
            FindNode: self._on_find_node,
            FindValue: self._on_find_value,
            Store: self._on_store,
            Leave: self._on_leave,
            Pong: self._on_response,
            Nodes: self._on_response,
            Value: self._on_response,
            Stored: self._on_response,
        }
        self._update_coord_wire()

    # -- timers ------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """The earliest live timer. Timers of RPCs that were answered and of lookups that
        ended are discarded here instead of waking the caller for nothing (most RPCs are
        answered long before their timeout: this halves the events of a simulation)."""
        timers = self._timers
        entries = timers.entries
        while entries:
            _, _, kind, ref = entries[0]
            if (
                (kind == OverlayTimer.RPC and ref.done)
                or (kind == OverlayTimer.LOOKUP and ref not in self._lookups)
                or (kind == OverlayTimer.CRAWL and ref not in self._crawls)
            ):
                timers.pop()
                continue
            return entries[0][0]
        return None

    def on_timer(self, *, now: float) -> list[OverlayEffect]:
        out: list[OverlayEffect] = []
        timers = self._timers
        handlers = self._timer_handlers
        while (timer := timers.pop_due(now)) is not None:
            if self._leaving is not None and timer[2] != OverlayTimer.RPC:
                continue  # a leaving node starts nothing new
            handlers[timer[2]](timer[3], now, out)
        return out

    def _lookup_timeout(self, lid: int, now: float, out: list[OverlayEffect]) -> None:
        lk = self._lookups.get(lid)
        if lk is not None:
            self._finish_lookup(lk, now, out, timed_out=True)

    # -- commands ----------------------------------------------------------------------

    def start(self, seeds: list[Address], *, now: float) -> list[OverlayEffect]:
        """Begin life: join through ``seeds`` (addresses; their ids are learned from the
        replies). With no seeds this node is the first of its cluster."""
        out: list[OverlayEffect] = []
        self._seeds = [s for s in seeds if s != self.contact.addr]
        jitter = self.rng.random()
        timers, cfg = self._timers, self.config
        timers.at(now + cfg.probe_fast_interval_s * (0.5 + jitter), OverlayTimer.PROBE)
        timers.at(now + cfg.refresh_interval_s * (0.5 + jitter / 2), OverlayTimer.REFRESH)
        timers.at(now + cfg.housekeeping_interval_s * (0.5 + jitter), OverlayTimer.HOUSEKEEPING)
        if not self._seeds:
            self.joined = True
            out.append(Emit(Joined(0)))
        else:
            self._contact_seeds(None, now, out)
        return out

    def lookup(
        self, target: int, *, now: float, kind: str = "node"
    ) -> tuple[int, list[OverlayEffect]]:
        """Find the k nodes closest to ``target``; ends with ``Emit(LookupDone)``."""
        out: list[OverlayEffect] = []
        lid = self._start_lookup(kind, target, None, now, out)
        return lid, out

    def get(self, name: str, *, now: float) -> tuple[int, list[OverlayEffect]]:
        """Fetch the record ``name``; ends with ``Emit(LookupDone(record=...))``."""
        out: list[OverlayEffect] = []
        lid = self._start_lookup("value", key_of(name), name, now, out, self._width(name))
        return lid, out

    def put(self, record: Record, *, now: float) -> list[OverlayEffect]:
        """Store ``record`` on the k nodes closest to its key and republish it until
        ``unpublish``; ends with ``Emit(PutDone)``. Raises RecordError if invalid."""
        self.store.validators.validate(record)
        self._published[record.name] = (record, now)
        out: list[OverlayEffect] = []
        self._start_lookup(
            "put", key_of(record.name), _Put(record), now, out, self._width(record.name)
        )
        return out

    def crawl(self, *, now: float) -> tuple[int, list[OverlayEffect]]:
        """Find every node of the overlay by reading routing tables (``crawl.py``);
        ends with ``Emit(CrawlDone)``, at the latest after ``crawl_timeout_s``."""
        out: list[OverlayEffect] = []
        cid = self._next_lookup
        self._next_lookup += 1
        cfg = self.config
        cr = Crawl(
            cid,
            own=self.contact,
            seeds=list(self.table.contacts()),
            k=cfg.k,
            bits=cfg.id_bits,
            parallelism=cfg.crawl_parallelism,
            rng=self.rng,
            started=now,
            deadline=now + cfg.crawl_timeout_s,
        )
        self._crawls[cid] = cr
        self._timers.at(cr.deadline, OverlayTimer.CRAWL, cid)
        self.stats["crawl"] += 1
        self._pump_crawl(cr, now, out)
        return cid, out

    def leave(self, notice: Leave, *, now: float) -> list[OverlayEffect]:
        """This node stops cleanly: send ``notice`` (signed by the node's key) to every
        peer of the routing table, ``leave_attempts`` datagrams each; ends with
        ``Emit(LeaveDone)``. From now on the core answers no request and starts nothing
        (a peer hearing from us again would take us back as alive)."""
        out: list[OverlayEffect] = []
        peers = list(self.table.contacts())
        self._leaving = [len(peers), 0, 0]
        for c in peers:
            self._request(
                c.addr, c.node_id, notice, Purpose.LEAVE, None, now, out, c,
                self.config.leave_attempts,
            )  # fmt: skip
        if not peers:
            out.append(Emit(LeaveDone(0, 0)))
        return out

    def unpublish(self, name: str) -> None:
        self._published.pop(name, None)

    # -- queries -----------------------------------------------------------------------

    def coordinate(self) -> Any | None:
        return self.vivaldi.coordinate if self.vivaldi is not None else None

    def predicted_rtt(self, node_id: int) -> float | None:
        """Predicted RTT (seconds) to a peer whose coordinate we know, else None."""
        e = self.table.get(node_id)
        if e is None or not e.coord or self.vivaldi is None:
            return None
        try:
            coord = decode_coord(e.coord, self.vivaldi.config.dimensionality)
        except ValueError:
            return None
        return self.vivaldi.coordinate.distance_to(coord)

    def rtt_to_coord(self, wire: tuple[float, ...]) -> float | None:
        """Predicted RTT (seconds) to a node whose coordinate is ``wire`` (as a reply
        carries it), else None."""
        if not wire or self.vivaldi is None:
            return None
        try:
            coord = decode_coord(wire, self.vivaldi.config.dimensionality)
        except ValueError:
            return None
        return self.vivaldi.coordinate.distance_to(coord)

    def nearest_peers(
        self, n: int, *, exclude: set[int] | None = None
    ) -> list[tuple[Contact, float]]:
        """The ``n`` known peers with the smallest predicted RTT (ties by node id)."""
        scored: list[tuple[float, int, Contact]] = []
        for node_id in list(self.table.index):
            if exclude and node_id in exclude:
                continue
            rtt = self.predicted_rtt(node_id)
            if rtt is not None:
                scored.append((rtt, node_id, self.table.index[node_id].contact))
        scored.sort(key=lambda t: (t[0], t[1]))
        return [(c, rtt) for rtt, _, c in scored[:n]]

    def clock_sample(
        self, sender: int, sent: float, received: float, *, stale: bool = False, now: float
    ) -> list[ClockNote]:
        """A datagram of ``sender`` stamped ``sent`` (its wall clock) arrived at
        ``received`` (ours): one sample of its clock offset, with half the smoothed RTT
        to it as the one-way delay. Returns what to log (``ClockOffsets.sample``)."""
        e = self.table.index.get(sender)
        rtt = e.srtt if e is not None else None
        return self.clocks.sample(sender, sent, received, rtt, stale=stale, now=now)

    # -- input: messages ---------------------------------------------------------------

    def on_message(
        self, src: Address, sender: int, rid: int, msg: Any, *, now: float
    ) -> list[OverlayEffect]:
        handler = self._handlers.get(type(msg))
        if handler is None:
            self.stats["unknown_message"] += 1
            return []
        if self._leaving is not None and type(msg) in REQUESTS:
            self.stats["ignored_leaving"] += 1
            return []
        out: list[OverlayEffect] = []
        handler(src, sender, rid, msg, now, out)
        return out

    def _note_sender(self, src: Address, sender: int, now: float, out: list[OverlayEffect]) -> None:
        e = self.table.index.get(sender)
        if e is not None and e.contact.port == src[1] and e.contact.host == src[0]:
            self.table.heard(e, now)
            return
        try:
            contact = Contact(sender, src[0], src[1])
        except ValueError:
            return
        if self.left:
            self.left.pop(sender, None)  # it is back
        to_ping = self.table.seen(contact, now)
        if to_ping is not None:
            self._request(
                to_ping.addr, to_ping.node_id, _PING, Purpose.EVICT, None, now, out, to_ping
            )

    def _on_ping(
        self, src: Address, sender: int, rid: int, msg: Ping, now: float, out: list[OverlayEffect]
    ) -> None:
        self._note_sender(src, sender, now, out)
        pong = self._pong
        if pong is None:
            pong = self._pong = Pong(self._coord_wire)
        out.append(Send(src, rid, pong))

    def _on_find_node(
        self,
        src: Address,
        sender: int,
        rid: int,
        msg: FindNode,
        now: float,
        out: list[OverlayEffect],
    ) -> None:
        self._note_sender(src, sender, now, out)
        contacts = tuple(
            self.table.closest(msg.target, self.config.k, exclude=sender, healthy=True)
        )
        out.append(Send(src, rid, Nodes(contacts, self._coord_wire)))

    def _on_find_value(
        self,
        src: Address,
        sender: int,
        rid: int,
        msg: FindValue,
        now: float,
        out: list[OverlayEffect],
    ) -> None:
        self._note_sender(src, sender, now, out)
        rec = self.store.get(msg.key, now)
        contacts = tuple(self.table.closest(msg.key, self.config.k, exclude=sender, healthy=True))
        out.append(Send(src, rid, Value((rec,) if rec else (), contacts, self._coord_wire)))

    def _on_store(
        self, src: Address, sender: int, rid: int, msg: Store, now: float, out: list[OverlayEffect]
    ) -> None:
        self._note_sender(src, sender, now, out)
        ok = self.store.put(msg.record, now)
        out.append(Send(src, rid, Stored(ok, self._coord_wire)))

    def _on_leave(
        self, src: Address, sender: int, rid: int, msg: Leave, now: float, out: list[OverlayEffect]
    ) -> None:
        """A peer stops cleanly: forget it as a contact, remember it as left, answer."""
        if not verify_leave(msg, sender):
            self.stats["bad_leave"] += 1
            return
        e = self.table.get(sender)
        try:
            contact = e.contact if e is not None else Contact(sender, src[0], src[1])
        except ValueError:
            return
        self.table.gone(sender, now)
        left = self.left
        left.pop(sender, None)
        left[sender] = (contact, now)
        while len(left) > self.config.left_memory:
            del left[next(iter(left))]
        self.stats["peer_left"] += 1
        pong = self._pong
        if pong is None:
            pong = self._pong = Pong(self._coord_wire)
        out.append(Send(src, rid, pong))
        out.append(Emit(PeerLeft(contact)))

    def _on_response(
        self, src: Address, sender: int, rid: int, msg: Any, now: float, out: list[OverlayEffect]
    ) -> None:
        rpc = self.requests.match(rid, src, sender)
        if rpc is None:
            self.stats["unexpected_response"] += 1
            return
        rtt = now - rpc.sent_time(rid)  # this attempt's round trip (module docstring)
        self.rpc_stats.answered(rpc.msg, msg, now - rpc.first_sent)
        self._learn(src, sender, msg.coord, rtt, now, out, rpc.then.contact)
        self._rpc_result(rpc, msg, now, out)

    def _learn(
        self,
        src: Address,
        sender: int,
        coord: tuple[float, ...],
        rtt: float | None,
        now: float,
        out: list[OverlayEffect],
        known: Contact | None = None,
    ) -> None:
        table = self.table
        e = table.index.get(sender)
        if e is not None and e.contact.port == src[1] and e.contact.host == src[0]:
            table.heard(e, now, rtt)
            to_ping = None
        else:
            if (
                known is not None
                and known.node_id == sender
                and known.port == src[1]
                and known.host == src[0]
            ):
                contact = known  # the Contact we asked: no need to build and check another
            else:
                try:
                    contact = Contact(sender, src[0], src[1])
                except ValueError:
                    return
            if self.left:
                self.left.pop(sender, None)  # it is back
            to_ping = table.seen(contact, now, rtt)
            e = table.index.get(sender)
        if e is not None and coord:
            e.coord = coord
        if rtt is not None:
            self._observe_rtt(rtt)
            if coord and self.vivaldi is not None:
                self._vivaldi_sample(sender, coord, rtt, now)
        if to_ping is not None:
            self._request(
                to_ping.addr, to_ping.node_id, _PING, Purpose.EVICT, None, now, out, to_ping
            )

    def _vivaldi_sample(
        self, sender: int, coord: tuple[float, ...], rtt: float, now: float
    ) -> None:
        viv = self.vivaldi
        if viv is None:
            return
        try:
            peer = decode_coord(coord, viv.config.dimensionality)
            viv.update(sender, peer, rtt, now=now)
        except ValueError:
            self.stats["bad_coordinate"] += 1
            return
        self._update_coord_wire()

    def _update_coord_wire(self) -> None:
        if self.vivaldi is not None:
            c = self.vivaldi.coordinate
            wire = (*c.vec, c.error, c.adjustment, c.height)  # Coordinate.to_wire, as a tuple
            # Our previous coordinate is superseded and leaves the decode memo, so the
            # memo holds about one coordinate per node, not every one a node ever had
            # (a full memo is emptied, and every peer's coordinate is decoded again).
            # Why: tests/overlay/test_core.py::test_a_superseded_coordinate_leaves_the_memo
            _COORD_CACHE.pop(self._coord_wire, None)
            self._coord_wire = wire
            self._pong = None
            _remember_coord(wire, c)

    # -- RPC machinery -----------------------------------------------------------------

    def _request(
        self,
        addr: Address,
        peer: int | None,
        msg: Any,
        purpose: Purpose,
        ref: Any,
        now: float,
        out: list[OverlayEffect],
        contact: Contact | None = None,
        attempts: int | None = None,
    ) -> _Rpc:
        """``attempts``: datagrams before giving up (default ``rpc_attempts``)."""
        limit = attempts or self.config.rpc_attempts
        rpc: _Rpc = Request(addr, peer, msg, _Ask(purpose, ref, contact), limit)
        self._transmit(rpc, now, out)
        self.stats["rpc"] += 1
        return rpc

    def _timeout_for(self, rpc: _Rpc) -> float:
        cfg = self.config
        e = self.table.index.get(rpc.peer) if rpc.peer is not None else None
        if e is not None and e.srtt is not None:  # RoutingTable.rto, inlined (hot)
            base = min(cfg.rto_max_s, max(cfg.rto_min_s, e.srtt + 4 * e.rttvar))
        else:
            base = self._unknown_rto()
        if rpc.attempts == 1:
            return base if base < cfg.rto_max_s * 2 else cfg.rto_max_s * 2
        return min(cfg.rto_max_s * 2, base * cfg.rto_backoff ** (rpc.attempts - 1))

    def _unknown_rto(self) -> float:
        """Timeout for a peer we never measured: what our RTT samples so far say about
        the network (srtt + 4 rttvar over all peers), at most ``rpc_timeout_s``."""
        cfg = self.config
        if self._rtt_samples < 8:
            return cfg.rpc_timeout_s
        return min(cfg.rpc_timeout_s, max(cfg.rto_min_s, self._gsrtt + 4 * self._grttvar))

    def _observe_rtt(self, rtt: float) -> None:
        self._rtt_samples += 1
        if self._rtt_samples == 1:
            self._gsrtt, self._grttvar = rtt, rtt / 2
        else:
            self._grttvar += 0.25 * (abs(self._gsrtt - rtt) - self._grttvar)
            self._gsrtt += 0.125 * (rtt - self._gsrtt)

    def _transmit(self, rpc: _Rpc, now: float, out: list[OverlayEffect]) -> None:
        send = self.requests.send(rpc, now)
        self._timers.at(now + self._timeout_for(rpc), OverlayTimer.RPC, rpc)
        out.append(send)

    def _rpc_timeout(self, rpc: _Rpc, now: float, out: list[OverlayEffect]) -> None:
        if rpc.done:
            return
        if rpc.attempts < rpc.limit:
            self.stats["retransmit"] += 1
            self.rpc_stats.retransmitted(rpc.msg)
            self._transmit(rpc, now, out)
            ask = rpc.then
            if rpc.attempts == 2 and ask.purpose == Purpose.LOOKUP and rpc.peer is not None:
                lk = self._lookups.get(ask.ref)
                if lk is not None:
                    lk.stalled(rpc.peer)
                    self._pump(lk, now, out)
            return
        self.requests.give_up(rpc)
        self.stats["rpc_failed"] += 1
        self.rpc_stats.timed_out(rpc.msg)
        # Was the peer answering until now (no failure in our table yet, or not in it:
        # a peer just vouched for it)? Then this is more likely loss than death.
        e = self.table.get(rpc.peer) if rpc.peer is not None else None
        was_answering = e is None or e.failures == 0
        if rpc.peer is not None:
            self.table.failed(rpc.peer, now)
        self._rpc_result(rpc, None, now, out, was_answering=was_answering)

    def _rpc_result(
        self,
        rpc: _Rpc,
        msg: Any,
        now: float,
        out: list[OverlayEffect],
        *,
        was_answering: bool = False,
    ) -> None:
        """Route an RPC outcome (``msg`` None = failed) to the continuation of its
        purpose; a probe or an eviction ping needs none beyond what every answer and
        failure does (``_learn``, ``table.failed``)."""
        then = self._continuations[rpc.then.purpose]
        if then is not None:
            then(rpc, msg, was_answering, now, out)

    def _lookup_answered(
        self, rpc: _Rpc, msg: Any, was_answering: bool, now: float, out: list[OverlayEffect]
    ) -> None:
        """A lookup's FindNode/FindValue was answered or failed: tell the lookup, which
        says whom to ask next."""
        lk = self._lookups.get(rpc.then.ref)
        if lk is None or rpc.peer is None:  # a lookup always asks a known id
            return
        if msg is None:
            lk.failed(rpc.peer, retry=was_answering and self.config.lookup_retry_attempts > 0)
        elif isinstance(msg, Value):
            records = tuple(self._valid_records(msg.records, lk.target))
            lk.answered(rpc.peer, msg.contacts, records)
        elif isinstance(msg, Nodes):
            lk.answered(rpc.peer, msg.contacts)
        else:
            lk.failed(rpc.peer)
        self._pump(lk, now, out)

    def _store_answered(
        self, rpc: _Rpc, msg: Any, was_answering: bool, now: float, out: list[OverlayEffect]
    ) -> None:
        """A replica answered a put's Store (or never did): the put is done once every
        Store has an outcome."""
        put: _Put = rpc.then.ref
        put.pending -= 1
        if msg is not None and msg.ok:
            put.stored += 1
        if put.pending == 0:
            out.append(Emit(PutDone(put.record.name, put.stored)))

    def _leave_answered(
        self, rpc: _Rpc, msg: Any, was_answering: bool, now: float, out: list[OverlayEffect]
    ) -> None:
        leaving = self._leaving
        if leaving is None:
            return
        leaving[1] += 1
        if msg is not None:
            leaving[2] += 1
        if leaving[1] == leaving[0]:
            out.append(Emit(LeaveDone(leaving[0], leaving[2])))

    def _valid_records(self, records: tuple[Record, ...], key: int) -> list[Record]:
        good: list[Record] = []
        for rec in records:
            try:
                if key_of(rec.name) != key:
                    raise RecordError("record does not belong to the key asked for")
                self.store.validators.validate(rec)
            except RecordError:
                self.stats["bad_record"] += 1
                continue
            good.append(rec)
        return good

    # -- lookups -----------------------------------------------------------------------

    def _width(self, name: str) -> int | None:
        """Replicas of record ``name`` (its validator's, else None: k)."""
        try:
            return self.store.validators.for_name(name).replicas
        except RecordError:
            return None

    def _start_lookup(
        self,
        kind: str,
        target: int,
        ref: Any,
        now: float,
        out: list[OverlayEffect],
        width: int | None = None,
    ) -> int:
        """``width``: how many closest nodes the lookup settles on (default k)."""
        lid = self._next_lookup
        self._next_lookup += 1
        cfg = self.config
        seeds = self.table.closest(target, cfg.k)
        lk = Lookup(
            lid,
            kind,
            target,
            k=cfg.refresh_beta if kind == "refresh" else min(width or cfg.k, cfg.k),
            alpha=cfg.alpha,
            own=self.contact,
            seeds=seeds,
            started=now,
            deadline=now + cfg.lookup_timeout_s,
        )
        self._lookups[lid] = lk
        self._lookup_kind[lid] = (kind, ref)
        self.table.touch(target, now)
        self._timers.at(lk.deadline, OverlayTimer.LOOKUP, lid)
        self.stats[f"lookup_{kind}"] += 1
        self._pump(lk, now, out)
        return lid

    def _pump(self, lk: Lookup, now: float, out: list[OverlayEffect]) -> None:
        msg: Any = FindValue(lk.target) if lk.kind == "value" else FindNode(lk.target)
        retried = lk.retried
        for c in lk.next_queries():
            attempts = self.config.lookup_retry_attempts if c.node_id in retried else None
            self._request(
                c.addr, c.node_id, msg, Purpose.LOOKUP, lk.lookup_id, now, out, c, attempts
            )
        if lk.finished():
            self._finish_lookup(lk, now, out)

    def _finish_lookup(
        self, lk: Lookup, now: float, out: list[OverlayEffect], *, timed_out: bool = False
    ) -> None:
        del self._lookups[lk.lookup_id]
        kind, ref = self._lookup_kind.pop(lk.lookup_id)
        result = lk.result(now, timed_out=timed_out)
        if kind == "put":
            self._send_stores(ref, result, now, out)
        elif kind == "join":
            self._join_done(result, now, out)
        elif kind == "value":
            out.append(Emit(LookupDone(result, self._select(result.records, ref, now))))
        elif kind != "refresh":
            out.append(Emit(LookupDone(result)))

    def _select(self, records: tuple[Record, ...], name: str, now: float) -> Record | None:
        local = self.store.get(key_of(name), now)
        candidates = [*records, *([local] if local else [])]
        if not candidates:
            return None
        validator = self.store.validators.for_name(name)
        best = candidates[0]
        for rec in candidates[1:]:
            best = validator.select(best, rec)
        return best

    def _send_stores(
        self, put: _Put, result: LookupResult, now: float, out: list[OverlayEffect]
    ) -> None:
        for c in result.contacts:
            if c.node_id == self.node_id:
                if self.store.put(put.record, now):
                    put.stored += 1
                continue
            put.pending += 1
            self._request(c.addr, c.node_id, Store(put.record), Purpose.STORE, put, now, out)
        if put.pending == 0:
            out.append(Emit(PutDone(put.record.name, put.stored)))

    # -- crawls -------------------------------------------------------------------------

    def _pump_crawl(self, cr: Crawl, now: float, out: list[OverlayEffect]) -> None:
        for c, target in cr.next_queries():
            self._request(
                c.addr, c.node_id, FindNode(target), Purpose.CRAWL, cr.crawl_id, now, out, c
            )
        if cr.finished():
            self._finish_crawl(cr, now, out)

    def _crawl_answered(
        self, rpc: _Rpc, msg: Any, was_answering: bool, now: float, out: list[OverlayEffect]
    ) -> None:
        cr = self._crawls.get(rpc.then.ref)
        if cr is None or rpc.peer is None:
            return
        if isinstance(msg, Nodes):
            cr.answered(rpc.peer, msg.contacts, msg.coord)
        else:
            cr.failed(rpc.peer)
        self._pump_crawl(cr, now, out)

    def _crawl_timeout(self, cid: int, now: float, out: list[OverlayEffect]) -> None:
        cr = self._crawls.get(cid)
        if cr is not None:
            self._finish_crawl(cr, now, out, timed_out=True)

    def _finish_crawl(
        self, cr: Crawl, now: float, out: list[OverlayEffect], *, timed_out: bool = False
    ) -> None:
        del self._crawls[cr.crawl_id]
        out.append(Emit(CrawlDone(cr.result(now, timed_out=timed_out))))

    # -- join, probing, refresh, housekeeping ------------------------------------------

    def _contact_seeds(self, _ref: None, now: float, out: list[OverlayEffect]) -> None:
        self._seed_pending = len(self._seeds)
        self._seed_ok = False
        for addr in self._seeds:
            self._request(addr, None, _PING, Purpose.SEED, None, now, out)

    def _seed_answered(
        self, rpc: _Rpc, msg: Any, was_answering: bool, now: float, out: list[OverlayEffect]
    ) -> None:
        """The first seed to answer starts the join lookup; if none does, join again."""
        self._seed_pending -= 1
        if msg is not None and not self._seed_ok:
            self._seed_ok = True
            self._start_lookup("join", self.node_id, None, now, out)
        elif self._seed_pending == 0 and not self._seed_ok:
            self.stats["join_retry"] += 1
            self._timers.at(now + self.config.join_retry_s, OverlayTimer.JOIN)

    def _join_done(self, result: LookupResult, now: float, out: list[OverlayEffect]) -> None:
        others = [c for c in result.contacts if c.node_id != self.node_id]
        if not others and self._seeds:
            # A join lookup no other node answered leaves us knowing a seed or two while
            # nobody knows us, and our traffic to those seeds keeps our buckets looking
            # fresh, so no refresh repairs it: join again from the seeds.
            # Why: tests/overlay/test_core.py::
            # test_a_join_lookup_nobody_answered_is_retried_not_taken_for_joined
            self.stats["join_retry"] += 1
            self._timers.at(now + self.config.join_retry_s, OverlayTimer.JOIN)
            return
        if not self.joined:
            self.joined = True
            out.append(Emit(Joined(len(self.table))))
        # Fill the buckets farther away than our closest neighbour, one lookup each.
        if others:
            top = min(self.table.cpl(others[0].node_id), self.config.refresh_max_cpl)
            for index in range(top):
                target = self.table.random_id_in_bucket(index, self.rng)
                self._start_lookup("refresh", target, None, now, out)

    def _probe(self, _ref: None, now: float, out: list[OverlayEffect]) -> None:
        cfg = self.config
        period = cfg.probe_interval_s
        viv = self.vivaldi
        if viv is not None:
            error = viv.coordinate.error
            if self._new_coord and (
                self._rtt_samples >= cfg.probe_fast_samples or error <= cfg.probe_fast_settled_error
            ):
                self._new_coord = False  # for good: a later surge gets a bounded burst
            if self._new_coord:
                # A new coordinate converging (a settled estimate ends it sooner).
                # Why: tests/overlay/test_probe_rate.py
                period = cfg.probe_fast_interval_s
            elif error <= cfg.probe_fast_rearm_error:
                self._fast_left = cfg.probe_fast_burst
            elif error > cfg.probe_fast_error and self._fast_left > 0:
                # The network changed under us: a bounded burst of fast probes. An
                # error still high after it is not one more probes would cure.
                # Why: tests/overlay/test_probe_rate.py
                self._fast_left -= 1
                period = cfg.probe_fast_interval_s
        self._timers.at(now + period * (0.9 + 0.2 * self.rng.random()), OverlayTimer.PROBE)
        e = self.table.random_entry(self.rng)
        if e is not None:
            c = e.contact
            self._request(c.addr, c.node_id, _PING, Purpose.PROBE, None, now, out, c)

    def _refresh(self, _ref: None, now: float, out: list[OverlayEffect]) -> None:
        self._timers.at(now + self.config.refresh_interval_s / 4, OverlayTimer.REFRESH)
        for index in self.table.stale_buckets(now):
            target = self.table.random_id_in_bucket(index, self.rng)
            self._start_lookup("refresh", target, None, now, out)

    def _housekeeping(self, _ref: None, now: float, out: list[OverlayEffect]) -> None:
        self._timers.at(now + self.config.housekeeping_interval_s, OverlayTimer.HOUSEKEEPING)
        self.store.expire(now)
        horizon = now - self.config.republish_interval_s
        for name, (rec, published) in list(self._published.items()):
            if published <= horizon:
                self._published[name] = (rec, now)
                self._start_lookup("put", key_of(name), _Put(rec), now, out, self._width(name))
