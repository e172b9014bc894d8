"""The state every part of the partition core shares, declared once.

``PartitionCore`` is one class written in three files: ``core.py`` (the ISP state
machine), ``membership.py`` (views, leases, dissolving, the events a node originated)
and ``acting.py`` (carrying a plan out), one chain of subclasses (``CoreBase`` <-
``Membership`` <- ``Acting`` <- ``PartitionCore``: the compiled build, mypyc, supports
no multiple inheritance). ``CoreBase`` declares every attribute they share, with its
type, and the methods one file calls in another, so mypy checks each file on its own.
``CoreBase`` also holds the requests: each is sent again until answered or out of
attempts (a fresh request id per attempt, a timeout from the overlay's RTT estimate of
the peer, doubling), and has exactly one outcome, the reply or None, handed to the
named method its continuation record selects (``PartitionCore._continuations``). A peer
that let every attempt time out is reported (``PeerUnreachable``) and kept out of
recruitment for ``dead_peer_s``; any message from it clears that.
"""

from __future__ import annotations

import random
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from dvms.effects import Address
from dvms.overlay.core import OverlayCore
from dvms.overlay.messages import Contact
from dvms.partition.config import PartitionConfig
from dvms.partition.events import OVERLAY_EFFECTS, PartitionEffect, PeerUnreachable, RecordLocation
from dvms.partition.messages import (
    ActionAccepted,
    ActionAck,
    Event,
    HostState,
    Isp,
    IspAck,
    MemberState,
    MergeAnswer,
    OutcomeAck,
    PartitionView,
    Valid,
)
from dvms.partition.solve import PlanStep, SolveOutcome
from dvms.partition.timers import PartitionTimer
from dvms.requests import Request, RequestTable, TimerHeap

__all__ = [
    "ActionSent",
    "CoreBase",
    "FinishSent",
    "ForeignIspChecked",
    "ForeignIspSent",
    "IspSent",
    "JoinChecked",
    "Lead",
    "LeadPhase",
    "LeaderProbed",
    "MemberAsked",
    "MergeAsked",
    "OwnEvent",
    "Reply",
    "Then",
]

#: What answers a partition request.
Reply = IspAck | MemberState | Valid | MergeAnswer | ActionAccepted | OutcomeAck | ActionAck
#: The effects list every handler appends to.
Out = list[PartitionEffect]


class LeadPhase(Enum):
    """What a leader is doing with its partition."""

    COLLECTING = "collecting"  # waiting for the members' MemberState answers
    SOLVING = "solving"  # a Solve effect is out
    CONFIRMING = "confirming"  # a plan found: every member asked to adopt Finishing
    ACTING = "acting"  # applying the plan


@dataclass
class Lead:
    """What a leader tracks while it holds the partition."""

    phase: LeadPhase = LeadPhase.COLLECTING
    states: dict[int, HostState] = field(default_factory=dict)
    waiting: set[int] = field(default_factory=set)
    #: A member reporting its host in pages: its state so far (membership.py).
    pages: dict[int, HostState] = field(default_factory=dict)
    token: int = 0
    #: Members asked to adopt the Finishing view that have not answered yet (CONFIRMING).
    confirming: set[int] = field(default_factory=set)
    ops: dict[int, PlanStep] = field(default_factory=dict)  # op id -> action
    blocked_by: dict[int, set[int]] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)
    done_ops: set[int] = field(default_factory=set)
    started: set[int] = field(default_factory=set)
    index: dict[int, int] = field(default_factory=dict)  # op id -> position in the plan
    #: The plan (CONFIRMING, ACTING); None while CONFIRMING: it is being solved again
    #: without members let go (``core._begin_acting``).
    outcome: SolveOutcome | None = None
    acting_since: float = 0.0
    #: The leader's lease on each member: member -> the latest time (our clock) at
    #: which we sent something the member is known to have renewed its lease on (its
    #: ``SetPartition`` answered, the Finishing one included, a keep-alive round
    #: acknowledged). A member dropped or let go is removed.
    #: The member's own lease runs at least until then + ``lease_s``.
    renewed: dict[int, float] = field(default_factory=dict)
    #: When this lead began (the first ``SetPartition`` to every member went out).
    since: float = 0.0
    #: Keep-alive rounds still within a lease: seq -> when it was sent. Round numbers
    #: come from the node (``CoreBase._next_round``), never from the lead: a later lead
    #: of the same partition id must not count a late ack of an earlier lead's round.
    rounds: dict[int, float] = field(default_factory=dict)


@dataclass
class OwnEvent:
    """An event this node originated and still waits on."""

    event: Event
    started: float
    attempts: int = 0
    in_flight: bool = False
    #: Nodes its partition recruits first, before the recruitment strategy chooses (the
    #: hosts a launch's VMs are scheduled on: ``launch(prefer=...)``)
    prefer: tuple[Contact, ...] = ()


# -- continuation records: what a request's reply (or None) goes on with ---------------


@dataclass(frozen=True, slots=True)
class IspSent:
    """Our ISP went to ``target`` (``_isp_acked``). ``skip`` is shared along the lap."""

    view: PartitionView
    msg: Isp
    target: Contact
    skip: set[int]
    hops: int
    lap_over: bool


@dataclass(frozen=True, slots=True)
class ForeignIspSent:
    """We passed on the ISP of a partition we are not in (``_foreign_isp_acked``)."""

    view: PartitionView
    target: Contact
    skip: set[int]
    hops: int
    returning: bool


@dataclass(frozen=True, slots=True)
class ForeignIspChecked:
    """``target`` lost every answer: does the initiator still hold ``view``
    (``_foreign_isp_checked``)?"""

    view: PartitionView
    target: Contact
    skip: set[int]
    hops: int


@dataclass(frozen=True, slots=True)
class JoinChecked:
    """A Blocked ISP reached us free: is it still valid before we join (``_join_checked``)?"""

    msg: Isp


@dataclass(frozen=True, slots=True)
class MergeAsked:
    """We asked the leader of the ISP's partition to merge (``_merge_answered``)."""

    msg: Isp


@dataclass(frozen=True, slots=True)
class MemberAsked:
    """A new leader's SetPartition to ``member`` (``_member_replied``)."""

    pid: int
    member: Contact


@dataclass(frozen=True, slots=True)
class FinishSent:
    """Our plan's Finishing view went to ``member`` (``_finish_confirmed``) first at
    ``sent`` (our clock)."""

    pid: int
    member: Contact
    sent: float


@dataclass(frozen=True, slots=True)
class ActionSent:
    """Action ``op`` of our plan went to the member that carries it out
    (``_action_accepted``)."""

    op: int


@dataclass(frozen=True, slots=True)
class LeaderProbed:
    """We asked our leader whether it still leads ``view`` (``_probe_answered``)."""

    view: PartitionView
    leader: Contact
    finishing: bool
    asked: float


#: A request's continuation; None: nothing to do with the reply (retried until answered).
Then = (
    IspSent
    | ForeignIspSent
    | ForeignIspChecked
    | JoinChecked
    | MergeAsked
    | MemberAsked
    | FinishSent
    | ActionSent
    | LeaderProbed
    | None
)
#: A continuation: (its record, the reply or None when every attempt timed out, now, out).
Continuation = Callable[[Any, Any, float, Out], None]
#: A timer handler: (the timer's ref, now, out).
TimerHandler = Callable[[Any, float, Out], None]


class CoreBase:
    """The partition core's shared state and its request machinery."""

    def __init__(
        self,
        me: Contact,
        overlay: OverlayCore,
        config: PartitionConfig,
        rng: random.Random,
        local_state: Callable[[], HostState | None],
        self_monitor: bool,
    ) -> None:
        self.me = me
        self.overlay = overlay
        self.config = config
        self.rng = rng
        #: Returns this node's host as its monitor last saw it (read-only).
        self.local_state = local_state
        self.self_monitor = self_monitor
        self.stats: Counter[str] = Counter()
        #: The partition we are in (None: free).
        self.view: PartitionView | None = None
        #: Set while we lead ``view``.
        self.lead: Lead | None = None
        self.lease_until = 0.0
        self.locked_for_fusion = False
        #: Events we originated and still wait on, by id.
        self.own: dict[int, OwnEvent] = {}
        #: Own launch events waiting for us to be free.
        self.queue: deque[int] = deque()
        #: shutdown() was called: start nothing new.
        self.stopping = False
        self.requests: RequestTable[Then] = RequestTable(rng)
        self.timers: TimerHeap[PartitionTimer] = TimerHeap()
        self._continuations: dict[type, Continuation] = {}
        self._next_token = 1
        #: The next keep-alive round number, over every lead of this node (membership.py).
        #: Why: tests/partition/test_member_lease.py::
        #: test_a_late_ack_of_an_earlier_leads_round_renews_nothing
        self._next_round = 1
        #: Driver calls running on this node: op -> (leader, pid) (acting.py).
        self._driver: dict[int, tuple[Contact, int]] = {}
        #: Running op -> the directory record to write when it succeeds (acting.py).
        self._located: dict[int, RecordLocation] = {}
        #: When our partition last showed it is alive (membership.py).
        self._heard = 0.0
        #: The pid whose leader we are probing (membership.py).
        self._probing: int | None = None
        #: Our partition was dissolved (this reason) while a driver call of ours ran: we
        #: leave when it ends (membership.py).
        self._leaving: str | None = None
        #: An ISP we are passing on (or checking before we join).
        self._holding: PartitionView | None = None
        #: The host state we last reported to a leader, with its partition's pid: the
        #: pages its leader asks for (``StatePage``) are cut from it (membership.py).
        self._reported: tuple[int, HostState] | None = None
        #: The ISP's skip set and hop count while we lead.
        self._skip: set[int] = set()
        self._hops = 0
        #: An overload event of ours failed: the next one waits for the monitor's next
        #: round (DVMS: a failed event "will be re-detected later if the overload
        #: persists"), not the instant it failed. Why: tests/partition/
        #: test_ring_example.py::test_ring_example_with_node1_busy_goes_blocked_for_a_second_lap
        self._overload_hold = False
        #: Underload (off by default): a pending delayed check, and no new event before
        #: this time after a failed one.
        self._underload_due = False
        self._underload_hold_until = 0.0
        #: Request key -> our answer, for retransmitted requests (core.py, _answered).
        self._replies: dict[tuple[Any, ...], Any] = {}
        #: Peer -> until when recruitment skips it.
        self._dead: dict[int, float] = {}
        #: Overlay effects (events.OVERLAY_EFFECTS) produced by a direct call (launch,
        #: on_computed, on_driver_result, on_monitor, shutdown): NodeCore's wrappers take
        #: them at once with take_outbox(); a shell calling the core directly gets them
        #: from the next on_timer (a FLUSH timer is due now), through NodeCore.
        self._outbox: list[PartitionEffect] = []

    # -- timers and deferred overlay effects -------------------------------------------

    def _at(self, when: float, kind: PartitionTimer, ref: Any = None) -> None:
        self.timers.at(when, kind, ref)

    def next_deadline(self) -> float | None:
        return self.timers.next_deadline()

    def take_outbox(self) -> list[PartitionEffect]:
        """Overlay effects held back from a direct call (see ``_deferred``)."""
        out, self._outbox = self._outbox, []
        return out

    def _deferred(self, out: Out, now: float) -> Out:
        """The result of a direct call: overlay effects are held for ``take_outbox`` (the
        node glue's wrappers call it at once; otherwise a timer due now hands them out
        through ``on_timer``, which every shell routes through ``NodeCore``)."""
        if not any(type(e) in OVERLAY_EFFECTS for e in out):
            return out
        if not self._outbox:
            self._at(now, PartitionTimer.FLUSH)
        self._outbox += [e for e in out if type(e) in OVERLAY_EFFECTS]
        return [e for e in out if type(e) not in OVERLAY_EFFECTS]

    # -- requests ----------------------------------------------------------------------

    def _request(
        self,
        peer: Contact,
        msg: Any,
        then: Then,
        now: float,
        out: Out,
        *,
        attempts: int | None = None,
        backoff: bool = True,
    ) -> None:
        """Send ``msg`` to ``peer`` until answered or ``attempts`` (default
        ``rpc_attempts``) timed out, each timeout twice the last unless not ``backoff``;
        the reply (None: every attempt timed out) goes to ``then``'s continuation."""
        limit = attempts or self.config.rpc_attempts
        req: Request[Then] = Request(peer.addr, peer.node_id, msg, then, limit, backoff)
        self._transmit(req, now, out)

    def _transmit(self, req: Request[Then], now: float, out: Out) -> None:
        send = self.requests.send(req, now)
        base = self.overlay.table.rto(req.peer) if req.peer is not None else None
        timeout = max(base or 0.0, self.config.rpc_timeout_s)
        if req.backoff:
            timeout *= 2 ** (req.attempts - 1)
        self._at(now + timeout, PartitionTimer.RPC, req)
        out.append(send)

    def _rpc_timeout(self, req: Request[Then], now: float, out: Out) -> None:
        if req.done:
            return  # answered
        if req.attempts < req.limit:
            self._transmit(req, now, out)
            return
        self.requests.give_up(req)
        self.stats["rpc_failed"] += 1
        if req.peer is not None and req.peer != self.me.node_id:
            if req.peer not in self._dead:
                self.stats["peers_reported"] += 1
                out.append(PeerUnreachable(req.peer))
            self._dead[req.peer] = now + self.config.dead_peer_s
        self._continue(req.then, None, now, out)

    def _on_reply(
        self, src: Address, sender: int, rid: int, msg: Reply, now: float, out: Out
    ) -> None:
        req = self.requests.match(rid, src, sender)
        if req is None:
            self.stats["unexpected_response"] += 1
            return
        self._continue(req.then, msg, now, out)

    def _continue(self, then: Then, reply: Reply | None, now: float, out: Out) -> None:
        if then is not None:
            self._continuations[type(then)](then, reply, now, out)

    def _alive(self, sender: int) -> None:
        """Any message from ``sender`` proves it is up again."""
        if self._dead:
            self._dead.pop(sender, None)

    def _leading(self, lead: Lead) -> bool:
        """``lead`` is still our lead: a call in between may have ended it (a plan
        finished, the partition dissolved). A method, not ``self.lead is lead`` inline:
        mypy keeps an attribute narrowed by a check across later calls that may reset
        it, and compiled code (``dvms.accel``) checks the narrowed type when it reads the
        attribute again, so a read after such a call must not see a narrowed
        ``self.lead`` (or ``self.view``): re-read it here, or into a local."""
        return self.lead is lead

    def held_by_migration(self) -> bool:
        """A driver call of ours runs, or a live migration into or out of our host does:
        we stay in our partition past its lease and join no other until it ends, so that
        no other partition plans with a host whose VMs are in flight (for a destination:
        whose incoming VM is not in its reported CPU demand yet)."""
        if self._driver:
            return True
        here = self.local_state()
        return here is not None and here.migrating > 0

    def dead_peers(self, now: float) -> set[int]:
        """Peers that recently let a request time out (kept out of recruitment)."""
        if not self._dead:
            return set()
        for node_id in [n for n, until in self._dead.items() if until <= now]:
            del self._dead[node_id]
        return set(self._dead)

    # -- implemented in core.py, membership.py, acting.py ------------------------------

    def _start_if_free(self, now: float, out: Out, *, underload_now: bool = False) -> None:
        raise NotImplementedError

    def _adopt(self, view: PartitionView, now: float, out: Out, role: str) -> None:
        raise NotImplementedError

    def _become_leader(
        self, view: PartitionView, skip: Any, hops: int, now: float, out: Out
    ) -> None:
        raise NotImplementedError

    def _retry_launch(self, own: OwnEvent, now: float) -> None:
        raise NotImplementedError

    def _dissolve(self, reason: str, now: float, out: Out, *, notify: bool) -> None:
        raise NotImplementedError

    def _heard_from_partition(self, pid: int, now: float) -> None:
        raise NotImplementedError

    def _drop_member(self, member: Contact, why: str, now: float, out: Out) -> None:
        raise NotImplementedError

    def _expire_members(self, now: float, out: Out) -> None:
        raise NotImplementedError

    def _begin_acting(self, now: float, out: Out) -> None:
        raise NotImplementedError

    def _outcome(self, msg: Any, now: float, out: Out) -> None:
        raise NotImplementedError

    def _end_event(
        self, own: OwnEvent, ok: bool, reason: str, now: float, out: Out, **done: Any
    ) -> None:
        raise NotImplementedError
