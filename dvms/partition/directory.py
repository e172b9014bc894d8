"""The DHT directory of VM names: ``vm/<namespace>/<name>`` -> where the VM runs.

Records are the overlay's signed records (``dvms.overlay.records``): validated by every
replica, kept for their TTL and republished by their writer. The value is one
``Location``::

    claimed  a launch event holds the name (written by its entry node before any
             partition is built; names are unique per namespace across the cluster)
    hosted   the VM runs on ``host`` (node ``node_id``): written after each create and
             each live migration by the node that carried the action out
    free     the launch that claimed the name failed before creating the VM

``Directory`` is the sans-I/O client that turns the partition core's directory effects
(``ClaimNames``, ``RecordLocation``, ``ReleaseNames``) into overlay gets and puts and
feeds the answers back (``PartitionCore.on_names_claimed``); ``dvms.stack.core.NodeCore``
routes effects through it, so the simulator and the daemon share it.

Ordering: a record's ``seq`` is one more than the version the writer just read (a
``get`` before each ``put``), and a ``hosted`` record two more, so that a VM created
while its failed launch frees its other names is never shown free. Writers of one name
follow each other (claim, then create, then one migration at a time, each seconds
apart), so reading the last version first is enough. Two lookups are saved on the
common path, a launch of new names (each lookup and put reaches k = 20 nodes, in a
small cluster all of them): a claim is put first, at version 1, and read back; every
``hosted`` or ``free`` record is at version 2 or more, so the read-back shows an older
record winning (taken; or freed, then claimed again over it) or ours. Two simultaneous
claims are decided by the overlay's own rule (higher seq, then larger signature), and
the loser reads the other's claim back. The claim's version travels with the event
(``Event.claims``, ``CreateVm.claim_seq``), so the creating node writes ``hosted`` at
claim + 2 without reading first. Per new VM: 3 lookups (claim put, read-back, location
put).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import cbor2

from dvms.effects import Emit
from dvms.overlay.core import LookupDone, OverlayCore, PutDone
from dvms.overlay.messages import Record
from dvms.overlay.records import Identity, RecordError, Validator
from dvms.partition.events import (
    ClaimNames,
    PeerUnreachable,
    RecordLocation,
    ReleaseNames,
)

__all__ = [
    "CLAIMED",
    "FREE",
    "HOSTED",
    "PREFIX",
    "Directory",
    "Location",
    "decode_location",
    "directory_validator",
    "location_of",
    "record_name",
]

PREFIX = "vm/"
CLAIMED, HOSTED, FREE = "claimed", "hosted", "free"
_STATES = (CLAIMED, HOSTED, FREE)
_MAX_NAME = 128


@dataclass(frozen=True, slots=True)
class Location:
    state: str
    host: str = ""
    node_id: int = 0
    event_id: int = 0

    def live(self) -> bool:
        return self.state != FREE


def record_name(namespace: str, name: str) -> str:
    return f"{PREFIX}{namespace}/{name}"


def encode_location(loc: Location) -> bytes:
    return cbor2.dumps([loc.state, loc.host, loc.node_id, loc.event_id])


def decode_location(value: bytes) -> Location:
    """Parse a record value; raises ``RecordError`` on anything malformed."""
    try:
        item = cbor2.loads(value)
    except Exception:  # cbor2 raises several types on garbage
        raise RecordError("directory record: not CBOR") from None
    if not (isinstance(item, list) and len(item) == 4):
        raise RecordError("directory record: expected [state, host, node, event]")
    state, host, node_id, event_id = item
    if state not in _STATES:
        raise RecordError(f"directory record: unknown state {state!r}")
    if not isinstance(host, str) or len(host) > _MAX_NAME:
        raise RecordError("directory record: bad host name")
    for n, bits in ((node_id, 160), (event_id, 64)):
        if type(n) is not int or not 0 <= n < 1 << bits:
            raise RecordError("directory record: bad node or event id")
    return Location(state, host, node_id, event_id)


def _check(rec: Record) -> None:
    namespace, sep, name = rec.name[len(PREFIX) :].partition("/")
    if not sep or not name or len(namespace) > _MAX_NAME or len(name) > _MAX_NAME:
        raise RecordError(f"directory record {rec.name!r}: expected vm/<namespace>/<name>")
    decode_location(rec.value)


def directory_validator(replicas: int | None = None) -> Validator:
    """The validator of ``vm/`` records (register it on every node's overlay); they are
    stored on the ``replicas`` nodes closest to their key (None: the overlay's k)."""
    return Validator(PREFIX, _check, replicas=replicas)


def location_of(rec: Record | None) -> Location | None:
    """The location a directory record holds; None for no record or a malformed one."""
    if rec is None:
        return None
    try:
        return decode_location(rec.value)
    except RecordError:
        return None


@dataclass
class _Claim:
    event_id: int
    waiting: int
    taken: list[str] = field(default_factory=list)
    held: dict[str, int] = field(default_factory=dict)  # record name -> our claim's seq
    names: dict[str, tuple[str, str]] = field(default_factory=dict)  # -> (namespace, vm)


#: A continuation: a named method of ``Directory`` with its first arguments bound
#: (``functools.partial``), called with (what the overlay answered, now, effects out).
_Then = Callable[[Any, float, list[Any]], None]


class Directory:
    """Carries out the partition core's directory effects on ``overlay``.

    ``answer(event_id, taken, now)`` returns the partition core's effects for a finished
    claim (``PartitionCore.on_names_claimed``)."""

    def __init__(
        self,
        overlay: OverlayCore,
        identity: Callable[[], Identity],
        answer: Callable[[int, tuple[str, ...], tuple[tuple[str, str, int], ...], float], list],
    ) -> None:
        self.overlay = overlay
        self._identity = identity
        self._answer = answer
        self._gets: dict[int, _Then] = {}  # lookup id -> continuation
        self._puts: dict[str, list[_Then]] = {}  # record name -> continuations
        self._claims: dict[int, _Claim] = {}
        self._seqs: dict[str, int] = {}  # record name -> highest seq we wrote
        self.stats = {"claims": 0, "taken": 0, "records": 0, "freed": 0}

    # -- routing -----------------------------------------------------------------------

    def wants(self, eff: Any) -> bool:
        t = type(eff)
        if t is Emit:
            ev = eff.event
            if type(ev) is LookupDone:
                return ev.result.lookup_id in self._gets
            return type(ev) is PutDone and ev.name in self._puts
        return t in (ClaimNames, RecordLocation, ReleaseNames, PeerUnreachable)

    def take(self, eff: Any, now: float) -> list[Any]:
        """Carry out one effect ``wants`` accepted; returns the effects it produces."""
        out: list[Any] = []
        t = type(eff)
        if t is Emit:
            ev = eff.event
            if type(ev) is LookupDone:
                self._gets.pop(ev.result.lookup_id)(ev.record, now, out)
            else:
                waiting = self._puts[ev.name]
                then = waiting.pop(0)
                if not waiting:
                    del self._puts[ev.name]
                then(ev.stored, now, out)
        elif t is ClaimNames:
            self._claim(eff, now, out)
        elif t is RecordLocation:
            self._record(eff, now, out)
        elif t is ReleaseNames:
            self._release(eff, now, out)
        else:  # PeerUnreachable
            self.overlay.table.failed(eff.node_id, now)
        return out

    # -- overlay operations ------------------------------------------------------------

    def _get(self, name: str, then: _Then, now: float, out: list[Any]) -> None:
        lid, effects = self.overlay.get(name, now=now)
        self._gets[lid] = then
        out += effects

    def _put(
        self, name: str, loc: Location, seq: int, then: _Then | None, now: float, out: list[Any]
    ) -> None:
        ttl = self.overlay.config.record_ttl_s
        rec = self._identity().sign_record(name, encode_location(loc), seq=seq, ttl_s=ttl)
        self._seqs[name] = max(seq, self._seqs.get(name, 0))
        if then is not None:
            self._puts.setdefault(name, []).append(then)
        out += self.overlay.put(rec, now=now)

    def _next_seq(self, name: str, rec: Record | None, step: int) -> int:
        return max(rec.seq if rec is not None else 0, self._seqs.get(name, 0)) + step

    # -- claims ------------------------------------------------------------------------

    def _claim(self, eff: ClaimNames, now: float, out: list[Any]) -> None:
        claim = self._claims[eff.event_id] = _Claim(eff.event_id, len(eff.names))
        self.stats["claims"] += 1
        if not eff.names:
            out += self._answer(eff.event_id, (), (), now)
        for namespace, vm in eff.names:
            name = record_name(namespace, vm)
            claim.names[name] = (namespace, vm)
            self._claim_put(claim, name, self._seqs.get(name, 0) + 1, now, out)

    def _claim_put(self, claim: _Claim, name: str, seq: int, now: float, out: list[Any]) -> None:
        """Put our claim at ``seq``, then read the name back: ours, taken, or freed by
        a newer record (then claim again over it)."""
        claim.held[name] = seq
        me = Location(CLAIMED, "", self.overlay.node_id, claim.event_id)
        self._put(name, me, seq, partial(self._claim_stored, claim, name), now, out)

    def _claim_stored(
        self, claim: _Claim, name: str, _count: int, now: float, out: list[Any]
    ) -> None:
        self._get(name, partial(self._claim_read_back, claim, name), now, out)

    def _claim_read_back(
        self, claim: _Claim, name: str, rec: Record | None, now: float, out: list[Any]
    ) -> None:
        won = location_of(rec)
        if rec is None or won is None or self._ours(won, claim):
            self._claim_step(claim, now, out)
        elif not won.live():
            self._claim_put(claim, name, rec.seq + 1, now, out)
        else:
            claim.held.pop(name, None)
            self.overlay.unpublish(name)
            self._taken(claim, name, won, now, out)

    @staticmethod
    def _ours(loc: Location, claim: _Claim) -> bool:
        return loc.state == CLAIMED and loc.event_id == claim.event_id

    def _taken(self, claim: _Claim, name: str, loc: Location, now: float, out: list[Any]) -> None:
        self.stats["taken"] += 1
        namespace, vm = claim.names[name]
        shown = f"{namespace}/{vm}" if namespace else vm
        where = f"runs on {loc.host}" if loc.state == HOSTED else "claimed by another launch"
        claim.taken.append(f"{shown} ({where})")
        self._claim_step(claim, now, out)

    def _claim_step(self, claim: _Claim, now: float, out: list[Any]) -> None:
        claim.waiting -= 1
        if claim.waiting == 0:
            seqs = tuple((*claim.names[n], seq) for n, seq in claim.held.items())
            out += self._answer(claim.event_id, tuple(claim.taken), seqs, now)

    def _release(self, eff: ReleaseNames, now: float, out: list[Any]) -> None:
        claim = self._claims.pop(eff.event_id, None)
        if claim is None:
            return
        for name in claim.held:
            self.overlay.unpublish(name)
            if eff.free:
                self._get(name, partial(self._free_claim, claim, name), now, out)

    def _free_claim(
        self, claim: _Claim, name: str, rec: Record | None, now: float, out: list[Any]
    ) -> None:
        loc = location_of(rec)
        if loc is not None and not self._ours(loc, claim):
            return  # the VM was created (hosted) or another claim won
        self.stats["freed"] += 1
        self._put(name, Location(FREE), self._next_seq(name, rec, 1), None, now, out)
        self.overlay.unpublish(name)  # a free record simply expires

    # -- locations ---------------------------------------------------------------------

    def forget(self, namespace: str, vm: str, now: float) -> list[Any]:
        """A VM is gone for good (``vm flush``, ``clear namespace``, ``vm kill`` outside
        namespaces): write its name free, unless another VM holds it by now."""
        name = record_name(namespace, vm)
        out: list[Any] = []
        self._get(name, partial(self._free_hosted, name), now, out)
        return out

    def _free_hosted(self, name: str, rec: Record | None, now: float, out: list[Any]) -> None:
        loc = location_of(rec)
        if loc is None or loc.state != HOSTED or loc.node_id != self.overlay.node_id:
            return  # never recorded, or it lives elsewhere now (migrated, re-created)
        self.stats["freed"] += 1
        self._put(name, Location(FREE), self._next_seq(name, rec, 1), None, now, out)
        self.overlay.unpublish(name)

    def _record(self, eff: RecordLocation, now: float, out: list[Any]) -> None:
        name = record_name(eff.namespace, eff.name)
        loc = Location(HOSTED, eff.host, eff.node_id)
        if eff.after:  # over a claim whose version we know: no need to read it first
            self.stats["records"] += 1
            seq = max(eff.after + 2, self._seqs.get(name, 0) + 1)
            self._put(name, loc, seq, None, now, out)
            return

        self._get(name, partial(self._record_over, name, loc), now, out)

    def _record_over(
        self, name: str, loc: Location, rec: Record | None, now: float, out: list[Any]
    ) -> None:
        self.stats["records"] += 1
        self._put(name, loc, self._next_seq(name, rec, 2), None, now, out)
