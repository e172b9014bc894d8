"""The DVMS partition protocol (the Iterative Scheduling Procedure) as a sans-I/O core.

Follows DVMS 2 (``../shared/reference/dvms-isp.md`` §2.3); deliberate differences are
listed in ``docs/partitions.md``. One ``PartitionCore`` per node; it reads (never writes)
the node's ``OverlayCore`` to pick peers and predict RTTs.

Inputs (all take ``now``):
    on_message(src, sender, rid, msg)   a partition message from a peer
    on_timer()                          when next_deadline() has passed
    on_monitor()                        the host monitor ticked (if the shell runs it)
    on_computed(token, outcome)         a ``Solve`` effect finished (the solver)
    on_driver_result(op, ok, reason)    a driver call (``BootVm``/``MigrateVmTo``) finished
    launch(vms, constraints)            command: a vjob submitted to this node
Outputs: ``Send``, ``Emit`` (``EventDone``, ``PartitionChanged``, ``PartitionReleased``),
``Solve`` (run the solver: the shell may take its time), ``BootVm``/``MigrateVmTo``
(create or live-migrate a VM on this node's hypervisor).

How an event is handled::

    free node, problem --> partition {me}, Growing, I lead
    leader: SetPartition -> every member answers MemberState (its host)  [silent: dropped]
            >= min size?  Solve(on exactly the members' hosts)
            plan found    -> Finishing: driver calls via members, Outcome to origin, Dissolve
            no plan       -> Isp to next candidate (recruit.py); I become a plain member
    Isp at a free node    --> it joins and leads (Blocked ISP: initiator asked first)
    Isp at a busy node    --> shortcut: forwarded past its own partition; or, both
                              Blocked and the ISP's initiator outranks ours: merge
    no candidate left     --> Isp back to the initiator: Growing -> Blocked, 2nd lap;
                              Blocked -> dissolve, event fails
    no update for lease_s --> member frees itself

Peer errors are counted in ``stats`` and dropped; a message for a partition we are not in
is answered negatively, never trusted.

This file is the ISP state machine; ``PartitionCore`` also takes the request/retry
machinery from ``rpc.py``, membership (views, leases, dissolving, orphaned events) from
``membership.py`` and plan execution (leader and member sides) from ``acting.py``; its
effects and events are defined in ``events.py``.
"""

from __future__ import annotations

import heapq
import random
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from dvms.effects import Address, Emit, Send
from dvms.overlay.core import OverlayCore
from dvms.overlay.messages import Contact
from dvms.partition.acting import Acting
from dvms.partition.config import PartitionConfig
from dvms.partition.events import (
    OVERLAY_EFFECTS,
    BootVm,
    ClaimNames,
    EventDone,
    EventStarted,
    MigrateVmTo,
    PartitionChanged,
    PartitionReleased,
    PeerUnreachable,
    PlanApplied,
    RecordLocation,
    ReleaseNames,
    Solve,
)
from dvms.partition.membership import Membership
from dvms.partition.messages import (
    BLOCKED,
    FINISHING,
    GROWING,
    RESPONSES,
    ActionDone,
    CanMerge,
    CreateVm,
    Dissolve,
    Event,
    HostState,
    Isp,
    IspAck,
    KeepAlive,
    LaunchVm,
    MergeAnswer,
    MigrateVm,
    Outcome,
    PartitionView,
    SetPartition,
    StillValid,
    Valid,
    WireConstraint,
)
from dvms.partition.recruit import next_candidate
from dvms.partition.rpc import PendingRequest, Rpc
from dvms.partition.solve import SolveOutcome, SolveRequest
from dvms.partition.timers import (
    T_ACTION,
    T_FLUSH,
    T_KEEPALIVE,
    T_LEASE,
    T_MONITOR,
    T_RETRY,
    T_RPC,
    T_STATES,
    T_SUSPECT,
    T_UNDERLOAD,
)

__all__ = [
    "BootVm",
    "ClaimNames",
    "EventDone",
    "EventStarted",
    "MigrateVmTo",
    "PartitionChanged",
    "PartitionCore",
    "PartitionReleased",
    "PeerUnreachable",
    "PlanApplied",
    "RecordLocation",
    "ReleaseNames",
    "Solve",
]

#: Answers to non-idempotent requests remembered for retransmissions (see _answered).
_REPLY_CACHE = 4096


# -- internal bookkeeping --------------------------------------------------------------


@dataclass
class _Lead:
    """What a leader tracks while it holds the partition."""

    phase: str = "collecting"  # collecting -> solving -> acting
    states: dict[int, HostState] = field(default_factory=dict)
    waiting: set[int] = field(default_factory=set)
    token: int = 0
    ops: dict[int, Any] = field(default_factory=dict)  # op id -> action
    blocked_by: dict[int, set[int]] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)
    done_ops: set[int] = field(default_factory=set)
    started: set[int] = field(default_factory=set)
    index: dict[int, int] = field(default_factory=dict)  # op id -> position in the plan
    outcome: SolveOutcome | None = None
    acting_since: float = 0.0


@dataclass
class _Own:
    """An event this node originated and still waits on."""

    event: Event
    started: float
    attempts: int = 0
    in_flight: bool = False


class PartitionCore(Rpc, Membership, Acting):
    def __init__(
        self,
        me: Contact,
        overlay: OverlayCore,
        config: PartitionConfig,
        rng: random.Random,
        *,
        local_state: Callable[[], HostState | None],
        self_monitor: bool = True,
        now: float = 0.0,
    ) -> None:
        """``local_state()`` returns this node's own host as its monitor last saw it (a
        read-only query: cached host statistics in the daemon, the world in a simulator).
        With ``self_monitor`` the core checks for overload every ``monitor_period_s``;
        otherwise the shell calls ``on_monitor`` (a simulator does, only while a host is
        overloaded, so healthy hosts cost nothing)."""
        self.me = me
        self.overlay = overlay
        self.config = config
        self.rng = rng
        self.view: PartitionView | None = None
        self.lead: _Lead | None = None
        self.lease_until = 0.0
        self.locked_for_fusion = False
        self.local_state = local_state
        self.self_monitor = self_monitor
        self.own: dict[int, _Own] = {}
        self.queue: deque[int] = deque()  # own launch events waiting for us to be free
        self.stats: Counter[str] = Counter()
        self._rpcs: dict[int, PendingRequest] = {}
        self._timers: list[tuple[float, int, int, Any]] = []
        self._seq = 0
        self._next_token = 1
        self._driver: dict[int, tuple[Contact, int]] = {}  # running op -> (leader, pid)
        self._located: dict[int, RecordLocation] = {}  # running op -> its directory record
        self._heard = 0.0  # when our partition last showed it is alive (membership.py)
        self._probing: int | None = None  # pid whose leader we are probing
        self._holding: PartitionView | None = None  # an Isp we are passing on
        self._skip: set[int] = set()  # the ISP's skip set while we lead
        self.stopping = False  # shutdown() was called: start nothing new
        self._hops = 0
        # Set when an overload event of ours failed: the next one waits for the monitor's
        # next round. Without it, _dissolve -> _start_if_free re-raised the overload the
        # instant it failed, so an unsolvable node ran an ISP every few RTTs (40 per
        # virtual second on a 1 ms LAN), re-recruiting the nodes it had just released.
        # DVMS: a failed event "will be re-detected later if the overload persists".
        self._overload_hold = False
        # Underload (off by default): a pending delayed check, and no new event before
        # this time after a failed one.
        self._underload_due = False
        self._underload_hold_until = 0.0
        self._replies: dict[tuple, Any] = {}  # request key -> our answer (_answered)
        self._dead: dict[int, float] = {}  # peer -> until when recruitment skips it (rpc.py)
        # Overlay effects (events.OVERLAY_EFFECTS) produced by a direct call (launch,
        # on_computed, on_driver_result, on_monitor, shutdown): NodeCore's wrappers take
        # them at once with take_outbox(); a shell calling the core directly gets them
        # from the next on_timer (a T_FLUSH timer is due now), through NodeCore.
        self._outbox: list[Any] = []
        self._handlers = {
            Isp: self._on_isp,
            SetPartition: self._on_set_partition,
            KeepAlive: self._on_keepalive,
            Dissolve: self._on_dissolve,
            StillValid: self._on_still_valid,
            CanMerge: self._on_can_merge,
            MigrateVm: self._on_migrate,
            CreateVm: self._on_create,
            Outcome: self._on_outcome,
            ActionDone: self._on_action_done,
        }
        if self_monitor:
            self._at(now + config.monitor_period_s * (0.5 + rng.random()), T_MONITOR)

    # -- timers ------------------------------------------------------------------------

    def _at(self, when: float, kind: int, ref: Any = None) -> None:
        self._seq += 1
        heapq.heappush(self._timers, (when, self._seq, kind, ref))

    def next_deadline(self) -> float | None:
        return self._timers[0][0] if self._timers else None

    def on_timer(self, *, now: float) -> list[Any]:
        out: list[Any] = []
        while self._timers and self._timers[0][0] <= now:
            _, _, kind, ref = heapq.heappop(self._timers)
            if kind == T_RPC:
                self._rpc_timeout(ref, now, out)
            elif kind == T_LEASE:
                self._check_lease(ref, now, out)
            elif kind == T_KEEPALIVE:
                self._keepalive(ref, now, out)
            elif kind == T_MONITOR:
                self._monitor(now, out)
            elif kind == T_STATES:
                self._states_timeout(ref, now, out)
            elif kind == T_ACTION:
                self._action_result(ref, False, "member did not report the action's end", now, out)
            elif kind == T_RETRY and ref in self.own and ref not in self.queue:
                self.queue.append(ref)
                self._start_if_free(now, out)
            elif kind == T_SUSPECT:
                self._suspect(ref, now, out)
            elif kind == T_UNDERLOAD:
                self._underload_due = False
                self._start_if_free(now, out, underload_now=True)
            elif kind == T_FLUSH:
                out += self.take_outbox()
        return out

    def take_outbox(self) -> list[Any]:
        """Overlay effects held back from a direct call (see ``_deferred``)."""
        out, self._outbox = self._outbox, []
        return out

    def _deferred(self, out: list[Any], now: float) -> list[Any]:
        """The result of a direct call: overlay effects are held for ``take_outbox`` (the
        node glue's wrappers call it at once; otherwise a timer due now hands them out
        through ``on_timer``, which every shell routes through ``NodeCore``)."""
        if not any(type(e) in OVERLAY_EFFECTS for e in out):
            return out
        if not self._outbox:
            self._at(now, T_FLUSH)
        self._outbox += [e for e in out if type(e) in OVERLAY_EFFECTS]
        return [e for e in out if type(e) not in OVERLAY_EFFECTS]

    def _retry_launch(self, own: _Own, now: float) -> None:
        """Queue a failed launch again after a randomised, doubling back-off. Retrying at
        once spent every attempt within a few RTTs when many entry nodes launch at the
        same time: each ISP met only busy nodes, both laps ended at once, and the vjob
        was reported failed although the cluster had room (20 entry nodes on a LAN)."""
        backoff = self.config.launch_retry_s * 2 ** (own.attempts - 1)
        self._at(now + backoff * (0.5 + self.rng.random()), T_RETRY, own.event.event_id)

    # -- inputs ------------------------------------------------------------------------

    def on_message(self, src: Address, sender: int, rid: int, msg: Any, *, now: float):
        out: list[Any] = []
        self._alive(sender)
        handler = self._handlers.get(type(msg))
        if handler is not None:
            handler(src, sender, rid, msg, now, out)
        elif type(msg) in RESPONSES:
            self._on_reply(src, sender, rid, msg, now, out)
        else:
            self.stats["unknown_message"] += 1
        return out

    def on_monitor(self, *, now: float) -> list[Any]:
        out: list[Any] = []
        self._overload_hold = False
        self._start_if_free(now, out)
        return self._deferred(out, now)

    def launch(
        self, vms: tuple[LaunchVm, ...], constraints: tuple[WireConstraint, ...], *, now: float
    ) -> tuple[int, list[Any]]:
        """Queue a vjob for placement; ends with ``Emit(EventDone)`` for its event id.

        With ``config.directory`` its VM names are claimed in the DHT directory first
        (``ClaimNames``; the glue answers ``on_names_claimed``): a name already in use in
        its namespace refuses the vjob before any partition is built."""
        event = Event("launch", self.me, self.rng.getrandbits(63), vms, constraints)
        self.own[event.event_id] = _Own(event, now)
        out: list[Any] = [Emit(EventStarted(event.event_id, "launch"))]
        if self.config.directory and vms:
            names = tuple(dict.fromkeys((v.namespace, v.name) for v in vms))
            out.append(ClaimNames(event.event_id, names))
            return event.event_id, self._deferred(out, now)
        self.queue.append(event.event_id)
        self._start_if_free(now, out)
        return event.event_id, self._deferred(out, now)

    def on_names_claimed(
        self,
        event_id: int,
        taken: tuple[str, ...],
        *,
        now: float,
        seqs: tuple[tuple[str, str, int], ...] = (),
    ) -> list[Any]:
        """The directory's answer to ``ClaimNames``: ``taken`` lists the names already in
        use (empty: every name is now held by this event until its VMs' records are
        written, or it fails and frees them); ``seqs`` (namespace, name, version) are the
        claims' versions, which travel with the event (``Event.claims``)."""
        out: list[Any] = []
        own = self.own.get(event_id)
        if own is None or own.in_flight or event_id in self.queue:
            return out
        if seqs:
            version = {(ns, name): seq for ns, name, seq in seqs}
            claims = tuple(version.get((v.namespace, v.name), 0) for v in own.event.vms)
            own.event = replace(own.event, claims=claims)
        if self.stopping:
            return out  # shutdown() reported the event; its claims are released
        if taken:
            shown = ", ".join(taken[:8]) + (" ..." if len(taken) > 8 else "")
            self.stats["launch_name_taken"] += 1
            self._end_event(own, False, f"VM name already in use: {shown}", now, out)
            return self._deferred(out, now)
        self.queue.append(event_id)
        self._start_if_free(now, out)
        return self._deferred(out, now)

    def busy(self) -> bool:
        return self.view is not None

    # -- monitor -----------------------------------------------------------------------

    def _monitor(self, now: float, out: list[Any]) -> None:
        self._at(now + self.config.monitor_period_s, T_MONITOR)
        self._overload_hold = False
        self._start_if_free(now, out)

    def overloaded(self) -> bool:
        s = self.local_state()
        if s is None:
            return False
        capacity = s.cpu_milli or s.cpus * 1000
        return capacity > 0 and sum(round(v.cpu_demand * 1000) for v in s.vms) > capacity

    def underloaded(self) -> bool:
        """The host runs VMs whose demand is at most ``underload_cpu`` of its capacity
        (DVMS 1's CPU rule)."""
        s = self.local_state()
        if s is None or not s.vms:
            return False
        capacity = s.cpu_milli or s.cpus * 1000
        demand = sum(round(v.cpu_demand * 1000) for v in s.vms)
        return capacity > 0 and demand <= capacity * self.config.underload_cpu

    def _raise(self, kind: str, now: float, out: list[Any]) -> Event:
        event = Event(kind, self.me, self.rng.getrandbits(63))
        self.own[event.event_id] = _Own(event, now)
        self.stats[f"{kind}_detected"] += 1
        out.append(Emit(EventStarted(event.event_id, kind)))
        return event

    def _underload_check(self, now: float, underload_now: bool) -> bool:
        """True if an underload event is to be raised now; else maybe arm the random
        delay of DVMS 1 (low priority: an overload found meanwhile goes first)."""
        cfg = self.config
        if not cfg.underload or now < self._underload_hold_until:
            return False
        if any(o.event.kind == "underload" for o in self.own.values()):
            return False
        if not self.underloaded():
            return False
        if underload_now:
            return True
        if not self._underload_due:
            self._underload_due = True
            self._at(now + self.rng.random() * cfg.underload_delay_s, T_UNDERLOAD)
        return False

    def _start_if_free(self, now: float, out: list[Any], *, underload_now: bool = False) -> None:
        if self.view is not None or self._holding is not None or self.stopping:
            return
        if self.queue:
            event = self.own[self.queue.popleft()].event
        elif (
            not self._overload_hold
            and self.overloaded()
            and not any(o.event.kind == "overload" and o.in_flight for o in self.own.values())
        ):
            event = self._raise("overload", now, out)
        elif self._underload_check(now, underload_now):
            event = self._raise("underload", now, out)
        else:
            return
        own = self.own[event.event_id]
        own.attempts += 1
        own.in_flight = True
        coord = self.overlay.coordinate()
        view = PartitionView(
            pid=self.rng.getrandbits(64),
            version=1,
            initiator=self.me,
            leader=self.me,
            members=(self.me,),
            state=GROWING,
            events=(event,),
            origin_coord=tuple(coord.to_wire()) if coord is not None else (),
        )
        self.stats["partitions_started"] += 1
        self._become_leader(view, (), 0, now, out)

    # -- leading -----------------------------------------------------------------------

    def _adopt(self, view: PartitionView, now: float, out: list[Any], role: str) -> None:
        if self.view is None or self.view.pid != view.pid:
            self.locked_for_fusion = False
            if self.view is not None:  # absorbed by a merge: the old partition ends here
                out.append(Emit(PartitionReleased(self.view.pid, f"merged into {view.pid:x}")))
        self.view = view
        self.lease_until = now + self.config.lease_s
        self._at(self.lease_until, T_LEASE, view.pid)
        self._heard_from_partition(view.pid, now)
        out.append(Emit(PartitionChanged(view, role)))

    def _become_leader(self, view, skip, hops, now, out) -> None:
        self._skip = set(skip)
        self._hops = hops
        self._adopt(view, now, out, "leader")
        lead = self.lead = _Lead()
        local = self.local_state()
        if local is not None:
            lead.states[self.me.node_id] = local
        for m in view.members:
            if m.node_id != self.me.node_id:
                lead.waiting.add(m.node_id)
                self._request(m, SetPartition(view), self._member_reply(view.pid, m), now, out)
        self._at(now + self.config.state_timeout_s, T_STATES, view.pid)
        self._keepalive(view.pid, now, out)
        self._maybe_solve(now, out)

    def _member_reply(self, pid: int, member: Contact):
        def on_reply(msg, now, out) -> None:
            lead = self.lead
            if lead is None or self.view is None or self.view.pid != pid:
                return
            if lead.phase != "collecting":
                return
            lead.waiting.discard(member.node_id)
            if msg is None or msg.host is None:
                self._drop_member(member, "did not answer" if msg is None else "refused", now, out)
            else:
                lead.states[member.node_id] = msg.host
            self._maybe_solve(now, out)

        return on_reply

    def _drop_member(self, member: Contact, why: str, now: float, out: list[Any]) -> None:
        """A member is gone (crashed or moved on): we, the detector, lead without it."""
        view = self.view
        assert view is not None
        self.stats["member_lost"] += 1
        if member.node_id == view.initiator.node_id:
            self._dissolve(f"initiator {why}", now, out, notify=True)
            return
        members = tuple(m for m in view.members if m.node_id != member.node_id)
        self.view = replace(view, members=members, version=view.version + 1)
        out.append(Emit(PartitionChanged(self.view, "leader")))

    def _states_timeout(self, pid: int, now: float, out: list[Any]) -> None:
        lead = self.lead
        if lead is None or self.view is None or self.view.pid != pid:
            return
        if lead.phase == "collecting" and lead.waiting:
            for node_id in list(lead.waiting):
                if self.view is None or self.lead is not lead:
                    return  # dropping the initiator dissolved the partition (was a crash)
                member = next((m for m in self.view.members if m.node_id == node_id), None)
                lead.waiting.discard(node_id)
                if member is not None and self.view is not None:
                    self._drop_member(member, "did not report", now, out)
            self._maybe_solve(now, out)

    def _maybe_solve(self, now: float, out: list[Any]) -> None:
        lead, view = self.lead, self.view
        if lead is None or view is None or lead.phase != "collecting" or lead.waiting:
            return
        members = [m for m in view.members if m.node_id in lead.states]
        if len(members) < self.config.min_partition_size:
            self.stats["below_min_size"] += 1
            self._pass_on(now, out)
            return
        lead.phase = "solving"
        lead.token = self._next_token
        self._next_token += 1
        states = tuple(lead.states[m.node_id] for m in members)
        empty = tuple(
            lead.states[e.origin.node_id].name
            for e in view.events
            if e.kind == "underload" and e.origin.node_id in lead.states
        )
        request = SolveRequest(states, view.events, self.config.relief_target, empty)
        out.append(Solve(lead.token, request))

    def on_computed(self, token: int, outcome: SolveOutcome, *, now: float) -> list[Any]:
        out: list[Any] = []
        lead, view = self.lead, self.view
        if lead is None or view is None or lead.token != token or lead.phase != "solving":
            return out
        self.stats["solver_runs"] += 1
        if not outcome.ok:
            self.stats["no_solution"] += 1
            lead.phase = "collecting"
            self._pass_on(now, out, reason=outcome.reason)
            return out
        lead.outcome = outcome
        lead.phase = "acting"
        lead.acting_since = now
        self.view = replace(view, state=FINISHING, version=view.version + 1)
        # Tell the members (DVMS 2 broadcasts Finishing). Without it they kept the old
        # state: a member still showing Blocked accepted a merge with another Blocked
        # ISP, whose leader then took this partition over in the middle of its plan.
        for m in self.view.members:
            if m.node_id != self.me.node_id:
                self._request(m, SetPartition(self.view), lambda r, n, o: None, now, out)
        self._start_actions(outcome, now, out)
        return self._deferred(out, now)

    # -- passing the ISP on ------------------------------------------------------------

    def _pass_on(self, now: float, out: list[Any], reason: str = "") -> None:
        """No solution here: hand the ISP to the next candidate; we stay a member."""
        view = self.view
        assert view is not None
        if reason:  # travels with the ISP so that a final failure can say why
            view = self.view = replace(view, last_reason=reason[:512])
        self.lead = None
        cfg = self.config
        self._hops += 1
        at_cap = len(view.members) >= cfg.max_partition_size
        lap_over = self._hops >= cfg.max_hops or (at_cap and view.state != BLOCKED)
        if at_cap and not lap_over:
            view = self._slide(view, now, out)
        self._forward(view, self._skip, self._hops, lap_over, now, out)

    def _slide(self, view: PartitionView, now: float, out: list[Any]) -> PartitionView:
        """In the second lap, the partition reached ``max_partition_size`` without a
        solution: release every member but the events' origins and us (the holder), keep
        them out of this lap (``skip``) and go on growing with fresh nodes.

        The cap used to end the second lap too, at once: the Blocked partition still had
        its 64 first-lap members, so it failed at its first hop, and a retry recruited
        the same nearest nodes again. An event whose solution lay beyond its 64 nearest
        free nodes could never be solved although the cluster had room. Seen with 200
        vjobs (a spread group + one coschedule-0 VM) launched from 20 entry nodes into
        1,000 empty hosts with a recruitment order shared by every initiator: the 64
        nearest free hosts all held a VM already, 5 vjobs failed "no solution after two
        laps" at 65 members while 687 hosts were still empty. The first lap still ends
        at the cap (Blocked, then merges as in DVMS); in the second the cap bounds the
        solver's problem and ``max_hops`` bounds the search."""
        keep = {e.origin.node_id for e in view.events} | {view.initiator.node_id}
        keep.add(self.me.node_id)
        members = tuple(m for m in view.members if m.node_id in keep)
        for m in view.members:
            if m.node_id not in keep:
                self._skip.add(m.node_id)
                out.append(Send(m.addr, 0, Dissolve(view.pid, "partition moved on")))
        self.stats["slides"] += 1
        view = replace(view, members=members, version=view.version + 1)
        self._adopt(view, now, out, "member")
        return view

    def _forward(self, view, skip: set[int], hops: int, lap_over: bool, now, out) -> None:
        """Send the ISP token on (to a candidate, or home to the initiator at lap end)."""
        candidate = None
        if not lap_over:
            candidate = self._next_candidate(view, skip, now)
        if candidate is None:
            if view.initiator.node_id == self.me.node_id:
                # We may be re-forwarding after a refusal, still marked as holding: let
                # go, or a node whose last candidate was dead stayed "holding" forever
                # (never free again, its own overloads never raised).
                self._holding = None
                self._lap_end(view, now, out)
                return
            target, msg = view.initiator, Isp(view, tuple(sorted(skip)), hops, True)
        else:
            target, msg = candidate, Isp(view, tuple(sorted(skip)), hops, False)
        self._holding = view

        def on_ack(reply, now, out) -> None:
            mine = self.view
            moved_on = (
                reply is None
                and not msg.returning
                and (mine is None or mine.pid != view.pid or mine.version > view.version)
            )
            if moved_on:
                # Every answer was lost, but the partition moved on (the candidate joined:
                # its SetPartition came) or has ended meanwhile. Forwarding the ISP again
                # forked it: under 10 % loss a second copy recruited its own members while
                # the first applied a plan (one node claimed by both).
                self.stats["isp_ack_lost"] += 1
            if (reply is not None and reply.accepted) or moved_on:
                self._holding = None
                self._after_hold(now, out)
                return
            if msg.returning:
                # The initiator is gone or refuses: the partition cannot go on.
                self._holding = None
                self._dissolve_view(view, "initiator unreachable", now, out)
                self._after_hold(now, out)
                return
            skip.add(target.node_id)
            self._forward(view, skip, hops, lap_over, now, out)

        if msg.returning:
            self._request(target, msg, on_ack, now, out)
        else:
            cfg = self.config
            self._request(target, msg, on_ack, now, out, attempts=cfg.isp_attempts, backoff=False)
        self._keepalive(view.pid, now, out)

    def _next_candidate(self, view: PartitionView, skip: set[int], now: float) -> Contact | None:
        cfg = self.config
        dead = self.dead_peers(now)
        return next_candidate(
            cfg.recruitment,
            self.overlay,
            view,
            skip | dead if dead else skip,
            self.rng,
            resolution_s=cfg.locality_resolution_s,
        )

    def _after_hold(self, now: float, out: list[Any]) -> None:
        if self.view is None:
            self._start_if_free(now, out)

    def _lap_end(self, view: PartitionView, now: float, out: list[Any]) -> None:
        """The ISP came back to us, its initiator."""
        if self.view is None or self.view.pid != view.pid:
            return  # stale: this partition is already gone
        if view.state == BLOCKED or view.lap >= 2:
            self.stats["events_failed_two_laps"] += 1
            why = f": {view.last_reason}" if view.last_reason else ""
            self._fail_events(view, f"no solution after two laps{why}", now, out)
            self._dissolve("two laps without a solution", now, out, notify=True)
            return
        self.stats["blocked"] += 1
        blocked = replace(view, state=BLOCKED, lap=2, version=view.version + 1, leader=self.me)
        for m in blocked.members:
            if m.node_id != self.me.node_id:
                self._request(m, SetPartition(blocked), lambda r, n, o: None, now, out)
        self._adopt(blocked, now, out, "member")
        self._skip, self._hops = set(), 0
        self._forward(blocked, set(), 0, False, now, out)

    def _fail_events(self, view: PartitionView, reason: str, now: float, out) -> None:
        for event in view.events:
            msg = Outcome(event.event_id, False, reason, (), len(view.members), 0)
            if event.origin.node_id == self.me.node_id:
                self._outcome(msg, now, out)
            else:
                self._request(event.origin, msg, lambda r, n, o: None, now, out)

    # -- receiving an ISP --------------------------------------------------------------

    def _answered(self, key: tuple, src, rid, out: list[Any]) -> bool:
        """A retransmitted request we already handled gets the same answer again.

        Each RPC attempt carries a fresh request id, so a request whose answer was lost
        arrives twice. An Isp handled twice forked the partition's token: the second copy
        found us a member ("try another") and the sender sent the ISP on to a second
        node, each copy then recruiting and leading on its own (with 10 % loss: two
        partitions claiming one node, and 2.7 M Isp messages in 120 s on 64 nodes).
        A returning Isp handled twice started a second lap twice; a CanMerge handled
        twice answered "locked" to its own retransmission."""
        reply = self._replies.get(key)
        if reply is None:
            return False
        self.stats["duplicate_request"] += 1
        out.append(Send(src, rid, reply))
        return True

    def _answer(self, key: tuple, src, rid, reply: Any, out: list[Any]) -> None:
        self._replies[key] = reply
        if len(self._replies) > _REPLY_CACHE:
            del self._replies[next(iter(self._replies))]
        out.append(Send(src, rid, reply))

    def _on_isp(self, src, sender, rid, msg: Isp, now, out) -> None:
        view = msg.view
        key = ("isp", sender, view.pid, view.version, view.state, msg.hops, msg.returning)
        if self._answered(key, src, rid, out):
            return
        if msg.returning:
            self._answer(key, src, rid, IspAck(True), out)
            if view.initiator.node_id == self.me.node_id:
                self._lap_end(view, now, out)
            return
        mine = self.view
        if mine is None and self._holding is None:
            self._answer(key, src, rid, IspAck(True), out)
            if view.state == BLOCKED and self.config.staleness_check:
                self._check_then_join(msg, now, out)
            else:
                self._join(msg, now, out)
            return
        if mine is not None and mine.pid == view.pid:
            self._answer(key, src, rid, IspAck(False), out)  # already a member: try another
            return
        self._answer(key, src, rid, IspAck(True), out)
        if (
            mine is not None
            and view.state == BLOCKED
            and mine.state == BLOCKED
            and view.initiator.node_id < mine.initiator.node_id
            and not self.locked_for_fusion
            and self.lead is None
        ):
            self._try_merge(msg, src, sender, now, out)
            return
        self.stats["shortcut"] += 1
        skip = set(msg.skip) | {self.me.node_id}
        if mine is not None:
            skip |= mine.member_ids()
        self._forward_foreign(view, skip, msg.hops + 1, now, out)

    def _forward_foreign(self, view, skip, hops, now, out) -> None:
        """Pass on an ISP of a partition we are not in (the shortcut)."""
        lap_over = hops >= self.config.max_hops
        candidate = None
        if not lap_over:
            candidate = self._next_candidate(view, skip, now)
        returning = candidate is None
        target = view.initiator if returning else candidate
        msg = Isp(view, tuple(sorted(skip)), hops, returning)

        def on_ack(reply, now, out) -> None:
            if reply is not None and reply.accepted:
                return
            if returning:
                return  # the initiator is gone: its members' leases will expire
            if reply is None:
                self._lost_foreign(view, skip, hops, target, now, out)
                return
            skip.add(target.node_id)  # already a member there: try another
            self._forward_foreign(view, skip, hops, now, out)

        if returning:
            self._request(target, msg, on_ack, now, out)
        else:
            cfg = self.config
            self._request(target, msg, on_ack, now, out, attempts=cfg.isp_attempts, backoff=False)

    def _lost_foreign(self, view, skip, hops, target: Contact, now, out) -> None:
        """Every answer of ``target`` was lost: it may be dead, or it may have taken the
        ISP on anyway, and a second copy would fork the partition (seen under 10 % loss:
        one node claimed by two plans). The initiator adopts every new version, so the
        ISP is sent on again only if the initiator still holds ``view``'s version."""

        def on_valid(reply, now, out) -> None:
            if reply is not None and reply.ok:
                skip.add(target.node_id)
                self._forward_foreign(view, skip, hops, now, out)
            else:
                self.stats["isp_not_resent"] += 1

        self._request(view.initiator, StillValid(view.pid, view.version), on_valid, now, out)

    def _check_then_join(self, msg: Isp, now: float, out: list[Any]) -> None:
        view = msg.view
        self._holding = view

        def on_valid(reply, now, out) -> None:
            self._holding = None
            if reply is not None and reply.ok and self.view is None:
                self._join(msg, now, out)
            else:
                self.stats["stale_isp"] += 1
                self._start_if_free(now, out)

        self._request(view.initiator, StillValid(view.pid, view.version), on_valid, now, out)

    def _join(self, msg: Isp, now: float, out: list[Any]) -> None:
        view = msg.view
        self.stats["joined"] += 1
        new = replace(
            view, version=view.version + 1, leader=self.me, members=(self.me, *view.members)
        )
        self._become_leader(new, set(msg.skip), msg.hops, now, out)

    def _on_still_valid(self, src, sender, rid, msg: StillValid, now, out) -> None:
        # VMPlaceS's rule: same partition, and a version not older than ours (a copy of
        # an ISP from before a later member joined is stale)
        view = self.view
        same = view is not None and view.pid == msg.pid
        if msg.leading:  # a member's probe: do we lead it or hold its ISP (any version)?
            holding = self._holding is not None and self._holding.pid == msg.pid
            ok = holding or (same and self.lead is not None)
        else:
            ok = same and view is not None and msg.version >= view.version
        out.append(Send(src, rid, Valid(ok)))

    # -- merging -----------------------------------------------------------------------

    def _try_merge(self, msg: Isp, src: Address, sender: int, now, out) -> None:
        self.locked_for_fusion = True
        view = msg.view
        peer = Contact(sender, src[0], src[1])

        def on_answer(reply, now, out) -> None:
            mine = self.view
            if reply is None or not reply.ok or mine is None or mine.state != BLOCKED:
                self.locked_for_fusion = False
                skip = set(msg.skip) | {self.me.node_id}
                if mine is not None:
                    skip |= mine.member_ids()
                self._forward_foreign(view, skip, msg.hops + 1, now, out)
                return
            self.stats["merges"] += 1
            others = [m for m in (*mine.members, *view.members) if m.node_id != self.me.node_id]
            members = tuple(dict.fromkeys([self.me, *others]))
            merged = replace(
                mine,
                pid=self.rng.getrandbits(64),
                version=1,
                leader=self.me,
                members=members,
                state=GROWING,
                events=mine.events + view.events,
                lap=1,
            )
            self._become_leader(merged, set(), 0, now, out)

        self._request(peer, CanMerge(view.pid), on_answer, now, out)

    def _on_can_merge(self, src, sender, rid, msg: CanMerge, now, out) -> None:
        key = ("merge", sender, msg.pid)
        if self._answered(key, src, rid, out):
            return
        ok = (
            self.view is not None
            and self.view.pid == msg.pid
            and not self.locked_for_fusion
            and self.lead is None
        )
        if ok:
            self.locked_for_fusion = True
        self._answer(key, src, rid, MergeAnswer(ok), out)
