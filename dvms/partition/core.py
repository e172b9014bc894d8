"""The DVMS partition protocol (the Iterative Scheduling Procedure) as a sans-I/O core.

Follows DVMS's Iterative Scheduling Procedure (docs/references.md); deliberate differences are
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

This file is the ISP state machine. Every input is dispatched through one table,
``transitions.TRANSITIONS`` ((node state, message type or timer kind) -> handler). The
shared state and the request machinery are declared in ``base.CoreBase``; membership
(views, leases, dissolving, orphaned events) is in ``membership.py`` and plan execution
(leader and member sides) in ``acting.py``; effects and events are in ``events.py``.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from dvms.effects import Address, Emit, Send
from dvms.overlay.core import OverlayCore
from dvms.overlay.messages import Contact
from dvms.partition.acting import Acting
from dvms.partition.base import (
    ActionSent,
    FinishSent,
    ForeignIspChecked,
    ForeignIspSent,
    IspSent,
    JoinChecked,
    Lead,
    LeaderProbed,
    LeadPhase,
    MemberAsked,
    MergeAsked,
    Out,
    OwnEvent,
    Reply,
)
from dvms.partition.config import PartitionConfig
from dvms.partition.events import (
    BootVm,
    ClaimNames,
    EventDone,
    EventStarted,
    MigrateVmTo,
    PartitionChanged,
    PartitionEffect,
    PartitionReleased,
    PeerUnreachable,
    PlanApplied,
    RecordLocation,
    ReleaseNames,
    Solve,
)
from dvms.partition.messages import (
    BLOCKED,
    FINISHING,
    GROWING,
    CanMerge,
    Dissolve,
    Event,
    HostState,
    Isp,
    IspAck,
    LaunchVm,
    MemberState,
    MergeAnswer,
    Outcome,
    PartitionView,
    SetPartition,
    StatePage,
    StillValid,
    Valid,
    WireConstraint,
)
from dvms.partition.recruit import next_candidate
from dvms.partition.solve import SolveOutcome, SolveRequest
from dvms.partition.timers import PartitionTimer
from dvms.partition.transitions import IGNORED, TRANSITIONS, Input, NodeState
from dvms.placement import PlacementConfig

__all__ = [
    "BootVm",
    "ClaimNames",
    "EventDone",
    "EventStarted",
    "Lead",
    "LeadPhase",
    "MigrateVmTo",
    "NodeState",
    "OwnEvent",
    "PartitionChanged",
    "PartitionCore",
    "PartitionEffect",
    "PartitionReleased",
    "PeerUnreachable",
    "PlanApplied",
    "RecordLocation",
    "ReleaseNames",
    "Solve",
]

#: Answers to non-idempotent requests remembered for retransmissions (see _answered).
_REPLY_CACHE = 4096

#: An input handler: a message's (src, sender, rid, msg, now, out) or a timer's
#: (ref, now, out).
_Handler = Callable[..., None]


class PartitionCore(Acting):
    def __init__(
        self,
        me: Contact,
        overlay: OverlayCore,
        config: PartitionConfig,
        rng: random.Random,
        *,
        local_state: Callable[[], HostState | None],
        self_monitor: bool = True,
        placement: PlacementConfig | None = None,
        now: float = 0.0,
    ) -> None:
        """``local_state()`` returns this node's own host as its monitor last saw it (a
        read-only query: cached host statistics in the daemon, the world in a simulator).
        With ``self_monitor`` the core checks for overload every ``monitor_period_s``;
        otherwise the shell calls ``on_monitor`` (a simulator does, only while a host is
        overloaded, so healthy hosts cost nothing). ``placement``: the placement engine
        settings this node's solve requests carry when it leads (default: the engine's
        defaults)."""
        super().__init__(me, overlay, config, rng, local_state, self_monitor)
        self.placement = placement or PlacementConfig()
        #: (node state, input) -> bound handler; an IGNORED pair maps to None.
        self._dispatch: dict[tuple[NodeState, Input], _Handler | None] = {
            key: None if name is IGNORED else getattr(self, name)
            for key, name in TRANSITIONS.items()
        }
        self._inputs = frozenset(i for _, i in TRANSITIONS)
        self._continuations = {
            IspSent: self._isp_acked,
            ForeignIspSent: self._foreign_isp_acked,
            ForeignIspChecked: self._foreign_isp_checked,
            JoinChecked: self._join_checked,
            MergeAsked: self._merge_answered,
            MemberAsked: self._member_replied,
            FinishSent: self._finish_confirmed,
            ActionSent: self._action_accepted,
            LeaderProbed: self._probe_answered,
        }
        if self_monitor:
            self._at(now + config.monitor_period_s * (0.5 + rng.random()), PartitionTimer.MONITOR)

    def node_state(self) -> NodeState:
        """This node's state in the transition table (``transitions.py``)."""
        if self.lead is not None:
            return NodeState.LEADING
        if self.view is not None:
            return NodeState.MEMBER
        if self._holding is not None:
            return NodeState.PASSING
        return NodeState.FREE

    # -- timers ------------------------------------------------------------------------

    def on_timer(self, *, now: float) -> list[PartitionEffect]:
        out: Out = []
        timers = self.timers
        while (timer := timers.pop_due(now)) is not None:
            _, _, kind, ref = timer
            handler = self._dispatch[self.node_state(), kind]
            if handler is not None:
                handler(ref, now, out)
        return out

    def _retry_due(self, event_id: int, now: float, out: Out) -> None:
        if event_id in self.own and event_id not in self.queue:
            self.queue.append(event_id)
            self._start_if_free(now, out)

    def _underload_due_now(self, _ref: None, now: float, out: Out) -> None:
        self._underload_due = False
        self._start_if_free(now, out, underload_now=True)

    def _flush(self, _ref: None, now: float, out: Out) -> None:
        out += self.take_outbox()

    def _retry_launch(self, own: OwnEvent, now: float) -> None:
        """Queue a failed launch again after a randomised, doubling back-off, so that
        launches from many entry nodes at once do not spend their attempts meeting each
        other's partitions. Why: tests/partition/test_launch.py::
        test_twenty_entry_nodes_launch_at_once_on_a_lan"""
        backoff = self.config.launch_retry_s * 2 ** (own.attempts - 1)
        self._at(
            now + backoff * (0.5 + self.rng.random()), PartitionTimer.RETRY, own.event.event_id
        )

    # -- inputs ------------------------------------------------------------------------

    def on_message(
        self, src: Address, sender: int, rid: int, msg: Any, *, now: float
    ) -> list[PartitionEffect]:
        out: Out = []
        self._alive(sender)
        kind = type(msg)
        if kind not in self._inputs:
            self.stats["unknown_message"] += 1
            return out
        handler = self._dispatch[self.node_state(), kind]
        if handler is not None:
            handler(src, sender, rid, msg, now, out)
        return out

    def on_monitor(self, *, now: float) -> list[PartitionEffect]:
        out: Out = []
        self._overload_hold = False
        self._start_if_free(now, out)
        return self._deferred(out, now)

    def launch(
        self,
        vms: tuple[LaunchVm, ...],
        constraints: tuple[WireConstraint, ...],
        *,
        now: float,
        claim: bool = True,
        prefer: tuple[Contact, ...] = (),
    ) -> tuple[int, list[PartitionEffect]]:
        """Queue a vjob for placement; ends with ``Emit(EventDone)`` for its event id.

        With ``config.directory`` its VM names are claimed in the DHT directory first
        (``ClaimNames``; the glue answers ``on_names_claimed``): a name already in use in
        its namespace refuses the vjob before any partition is built. ``claim=False``
        skips the claim: a high-availability restart relaunches names its guardians
        hold (the VM's generation, not the directory, decides which copy is the VM).
        ``prefer``: nodes this node recruits into the event's partition first (the hosts
        its VMs are scheduled on, whose contacts the caller knows); the recruitment
        strategy chooses once they are members, busy or unreachable."""
        event = Event("launch", self.me, self.rng.getrandbits(63), vms, constraints)
        self.own[event.event_id] = OwnEvent(event, now, prefer=prefer)
        out: Out = [Emit(EventStarted(event.event_id, "launch"))]
        if self.config.directory and vms and claim:
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
    ) -> list[PartitionEffect]:
        """The directory's answer to ``ClaimNames``: ``taken`` lists the names already in
        use (empty: every name is now held by this event until its VMs' records are
        written, or it fails and frees them); ``seqs`` (namespace, name, version) are the
        claims' versions, which travel with the event (``Event.claims``)."""
        out: Out = []
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

    def _monitor(self, _ref: None, now: float, out: Out) -> None:
        self._at(now + self.config.monitor_period_s, PartitionTimer.MONITOR)
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

    def _raise(self, kind: str, now: float, out: Out) -> Event:
        event = Event(kind, self.me, self.rng.getrandbits(63))
        self.own[event.event_id] = OwnEvent(event, now)
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
            self._at(now + self.rng.random() * cfg.underload_delay_s, PartitionTimer.UNDERLOAD)
        return False

    def _start_if_free(self, now: float, out: Out, *, underload_now: bool = False) -> None:
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

    def _adopt(self, view: PartitionView, now: float, out: Out, role: str) -> None:
        if self.view is None or self.view.pid != view.pid:
            self.locked_for_fusion = False
            if self.view is not None:  # absorbed by a merge: the old partition ends here
                out.append(Emit(PartitionReleased(self.view.pid, f"merged into {view.pid:x}")))
        self.view = view
        self.lease_until = now + self.config.lease_s
        self._at(self.lease_until, PartitionTimer.LEASE, view.pid)
        self._heard_from_partition(view.pid, now)
        out.append(Emit(PartitionChanged(view, role)))

    def _become_leader(
        self, view: PartitionView, skip: Any, hops: int, now: float, out: Out
    ) -> None:
        """Lead ``view``: every other member is asked for its host (SetPartition);
        ``skip`` and ``hops`` are the ISP's so far."""
        self._skip = set(skip)
        self._hops = hops
        self._adopt(view, now, out, "leader")
        lead = self.lead = Lead(since=now)
        local = self.local_state()
        if local is not None:
            lead.states[self.me.node_id] = local
        for m in view.members:
            if m.node_id != self.me.node_id:
                lead.waiting.add(m.node_id)
                self._request(m, SetPartition(view), MemberAsked(view.pid, m), now, out)
        self._at(now + self.config.state_timeout_s, PartitionTimer.STATES, view.pid)
        self._keepalive(view.pid, now, out)
        self._maybe_solve(now, out)

    def _member_replied(
        self, then: MemberAsked, reply: MemberState | None, now: float, out: Out
    ) -> None:
        lead = self.lead
        if lead is None or self.view is None or self.view.pid != then.pid:
            return
        if lead.phase != LeadPhase.COLLECTING:
            return
        member = then.member
        lead.waiting.discard(member.node_id)
        earlier = lead.pages.pop(member.node_id, None)
        if reply is None or reply.host is None:
            self._drop_member(member, "did not answer" if reply is None else "refused", now, out)
        else:
            host = reply.host
            if earlier is not None:
                host = replace(host, vms=earlier.vms + host.vms)
            else:
                lead.renewed[member.node_id] = lead.since  # it adopted our SetPartition
            if reply.more:
                # a host of many VMs reports them in pages: ask for the next one
                lead.pages[member.node_id] = host
                lead.waiting.add(member.node_id)
                page = StatePage(then.pid, self.view.version, reply.more)
                self._request(member, page, MemberAsked(then.pid, member), now, out)
                return
            lead.states[member.node_id] = host
        self._maybe_solve(now, out)

    def _drop_member(self, member: Contact, why: str, now: float, out: Out) -> None:
        """A member is gone (crashed or moved on): we, the detector, lead without it."""
        view = self.view
        assert view is not None
        self.stats["member_lost"] += 1
        lead = self.lead
        if lead is not None:
            # Nothing of it is counted any more: no renewal answers its probe, no round
            # goes to it. Why: tests/partition/test_confirming.py::
            # test_a_dropped_member_is_told_no_and_gets_no_keepalive_round
            for table in (lead.renewed, lead.pages, lead.states):
                table.pop(member.node_id, None)
            lead.waiting.discard(member.node_id)
        if member.node_id == view.initiator.node_id:
            self._dissolve(f"initiator {why}", now, out, notify=True)
            return
        members = tuple(m for m in view.members if m.node_id != member.node_id)
        self.view = replace(view, members=members, version=view.version + 1)
        out.append(Emit(PartitionChanged(self.view, "leader")))

    def _states_timeout(self, pid: int, now: float, out: Out) -> None:
        lead, view = self.lead, self.view
        if lead is None or view is None or view.pid != pid:
            return
        if lead.phase == LeadPhase.COLLECTING and lead.waiting:
            for node_id in list(lead.waiting):
                view = self.view  # re-read: dropping a member replaces it
                if view is None or not self._leading(lead):
                    return  # dropping the initiator dissolved the partition
                member = next((m for m in view.members if m.node_id == node_id), None)
                lead.waiting.discard(node_id)
                if member is not None:
                    self._drop_member(member, "did not report", now, out)
            self._maybe_solve(now, out)

    def _maybe_solve(self, now: float, out: Out) -> None:
        lead, view = self.lead, self.view
        if lead is None or view is None or lead.phase != LeadPhase.COLLECTING or lead.waiting:
            return
        members = [m for m in view.members if m.node_id in lead.states]
        if len(members) < self._min_size(view):
            self.stats["below_min_size"] += 1
            self._pass_on(now, out)
            return
        lead.phase = LeadPhase.SOLVING
        self._solve(lead, view, members, out)

    def _solve(self, lead: Lead, view: PartitionView, members: list[Contact], out: Out) -> None:
        """Ask the solver for one plan for ``view``'s events on exactly ``members``' hosts."""
        lead.token = self._next_token
        self._next_token += 1
        states = tuple(lead.states[m.node_id] for m in members)
        empty = tuple(
            lead.states[e.origin.node_id].name
            for e in view.events
            if e.kind == "underload" and e.origin.node_id in lead.states
        )
        request = SolveRequest(
            states, view.events, self.config.relief_target, empty, self.placement
        )
        out.append(Solve(lead.token, request))

    def on_computed(
        self, token: int, outcome: SolveOutcome, *, now: float
    ) -> list[PartitionEffect]:
        out: Out = []
        lead, view = self.lead, self.view
        if lead is None or view is None or lead.token != token:
            return out
        if lead.phase == LeadPhase.CONFIRMING and lead.outcome is None:
            self._resolved(lead, outcome, now, out)
            return self._deferred(out, now)
        if lead.phase != LeadPhase.SOLVING:
            return out
        self.stats["solver_runs"] += 1
        if not outcome.ok:
            self.stats["no_solution"] += 1
            lead.phase = LeadPhase.COLLECTING
            self._pass_on(now, out, reason=outcome.reason)
            return out
        lead.outcome = outcome
        lead.phase = LeadPhase.CONFIRMING
        self.view = replace(view, state=FINISHING, version=view.version + 1)
        # Members learn the Finishing state (DVMS 2 broadcasts it): a Finishing member
        # takes part in no merge and follows no other leader until we dissolve it or its
        # lease ends. No action starts before every member has adopted it (or is let go):
        # under loss an ISP can fork into two copies of one partition, and a member both
        # reported its host to could otherwise be counted on by both plans at once.
        # Why: tests/partition/test_member_lease.py::
        # test_two_forked_leaders_never_both_act_with_one_member
        cfg = self.config
        for m in self.view.members:
            if m.node_id != self.me.node_id:
                lead.confirming.add(m.node_id)
                then = FinishSent(self.view.pid, m, now)
                msg = SetPartition(self.view)
                self._request(m, msg, then, now, out, attempts=cfg.isp_attempts, backoff=False)
        if not lead.confirming:
            self._begin_acting(now, out)
        return self._deferred(out, now)

    def _finish_confirmed(
        self, then: FinishSent, reply: MemberState | None, now: float, out: Out
    ) -> None:
        """A member answered our Finishing view: adopted (its host), refused (it follows
        another leader now) or silent; the last answer starts the plan.

        An adopting answer renews our lease on the member from when we first sent the
        view, as the answer to our first ``SetPartition`` does: the member renewed its
        own lease on receiving it, at or after that time. It cannot be a stale renewal
        (a probe answer can: the time counted there was when we answered, not when the
        member renewed): the answer matches our own request, whose sending time we
        count, however late the answer arrives. Why: tests/partition/
        test_confirming.py::test_an_answer_to_the_finishing_view_renews_the_leaders_lease"""
        lead, view = self.lead, self.view
        if lead is None or view is None or view.pid != then.pid:
            return
        if lead.phase != LeadPhase.CONFIRMING:
            return
        member = then.member
        lead.confirming.discard(member.node_id)
        refused = reply is None or reply.host is None
        if not refused and member.node_id in lead.renewed:
            lead.renewed[member.node_id] = max(lead.renewed[member.node_id], then.sent)
        if refused and any(m.node_id == member.node_id for m in view.members):
            self.stats["finish_refused"] += 1
            why = "did not answer" if reply is None else "refused"
            self._let_go_of(member, f"{why} the Finishing view", now, out)
        self._act_if_confirmed(lead, now, out)

    def _begin_acting(self, now: float, out: Out) -> None:
        """Every member adopted our Finishing view or was let go: the plan starts, unless
        it counts on the host of a member that is no longer in our view (let go while we
        confirmed the plan, or dropped while we solved): then the plan is solved again on
        the hosts of the members left, who all follow our Finishing view. The actions on
        a host that left would fail, and the others may depend on them (a migration off
        a host that made room for the next one), so keeping the rest is not safe either.
        A relief or a launch alike gets a plan that counts only on members still here.
        Why: tests/partition/test_confirming.py::
        test_a_plan_counting_on_a_member_let_go_is_solved_again_without_it"""
        lead, view = self.lead, self.view
        assert lead is not None and view is not None and lead.outcome is not None
        here = {lead.states[m.node_id].name for m in view.members if m.node_id in lead.states}
        needed = {h for a in lead.outcome.actions for h in (a.src, a.dst) if h is not None}
        if not needed <= here:
            # Still CONFIRMING, with no plan: a member let go meanwhile is handled as
            # while we confirmed (the initiator or an origin abandons the plan).
            self.stats["plan_resolved"] += 1
            lead.outcome = None
            members = [m for m in view.members if m.node_id in lead.states]
            self._solve(lead, view, members, out)
            return
        lead.phase = LeadPhase.ACTING
        lead.acting_since = now
        self._start_actions(lead.outcome, now, out)

    def _resolved(self, lead: Lead, outcome: SolveOutcome, now: float, out: Out) -> None:
        """The plan solved again without the members let go (``_begin_acting``): it
        starts, or, with no plan on the hosts left, the plan is abandoned (the partition
        dissolved, every member told: a launch is retried by its origin, an overload
        raised again by its monitor). The members left have all adopted our Finishing
        view already, so no second confirmation is needed; the plan is checked again
        against members let go meanwhile."""
        self.stats["solver_runs"] += 1
        if not outcome.ok:
            self.stats["plan_abandoned"] += 1
            reason = f"no plan without the members let go: {outcome.reason}"
            self._dissolve(reason, now, out, notify=True)
            return
        lead.outcome = outcome
        self._act_if_confirmed(lead, now, out)

    # -- passing the ISP on ------------------------------------------------------------

    def _min_size(self, view: PartitionView) -> int:
        """Members a partition needs before its leader solves: ``min_partition_size``,
        but 1 when it holds only high-availability restarts (ours). A restart needs no
        migration, only room, and its initiator is a guardian that may sit in a group
        cut off from most of the overlay, where each unreachable recruitment candidate
        costs seconds: it tries the hosts it already has first."""
        if view.events and all(
            e.kind == "launch" and e.vms and all(v.ha is not None for v in e.vms)
            for e in view.events
        ):
            return 1
        return self.config.min_partition_size

    def _pass_on(self, now: float, out: Out, reason: str = "") -> None:
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

    def _slide(self, view: PartitionView, now: float, out: Out) -> PartitionView:
        """In the second lap, the partition reached ``max_partition_size`` without a
        solution: release every member but the events' origins and us (the holder), keep
        them out of this lap (``skip``) and go on growing with fresh nodes. The first lap
        ends at the cap (Blocked, then merges as in DVMS); in the second the cap bounds
        the solver's problem and ``max_hops`` bounds the search, so an event whose
        solution lies beyond its nearest free nodes is still solved.
        Why: tests/partition/test_launch_cap.py::test_a_launch_beyond_the_cap_is_placed"""
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

    def _forward(
        self, view: PartitionView, skip: set[int], hops: int, lap_over: bool, now: float, out: Out
    ) -> None:
        """Send the ISP token on (to a candidate, or home to the initiator at lap end)."""
        candidate = None
        if not lap_over:
            candidate = self._next_candidate(view, skip, now)
        if candidate is None:
            if view.initiator.node_id == self.me.node_id:
                # The lap ends here: let go of the ISP even when re-forwarding after a
                # refusal, or this node is never free again.
                # Why: tests/partition/test_dead_candidates.py::
                # test_a_dead_candidate_costs_one_short_retry_and_is_reported
                self._holding = None
                self._lap_end(view, now, out)
                return
            target, msg = view.initiator, Isp(view, tuple(sorted(skip)), hops, True)
        else:
            target, msg = candidate, Isp(view, tuple(sorted(skip)), hops, False)
        self._holding = view
        then = IspSent(view, msg, target, skip, hops, lap_over)
        if msg.returning:
            self._request(target, msg, then, now, out)
        else:
            cfg = self.config
            self._request(target, msg, then, now, out, attempts=cfg.isp_attempts, backoff=False)
        self._keepalive(view.pid, now, out)

    def _isp_acked(self, then: IspSent, reply: IspAck | None, now: float, out: Out) -> None:
        view, msg = then.view, then.msg
        mine = self.view
        # Every answer lost but the partition moved on (the candidate joined: its
        # SetPartition came) or ended: the ISP is not sent again, a second copy would
        # fork the partition. Why: tests/partition/test_interleavings.py::
        # test_random_interleavings_keep_the_invariants
        moved_on = (
            reply is None
            and not msg.returning
            and (mine is None or mine.pid != view.pid or mine.version > view.version)
        )
        if moved_on:
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
        then.skip.add(then.target.node_id)
        self._forward(view, then.skip, then.hops, then.lap_over, now, out)

    def _next_candidate(self, view: PartitionView, skip: set[int], now: float) -> Contact | None:
        cfg = self.config
        dead = self.dead_peers(now)
        # the nodes this node's own events asked for (only their origin knows them)
        prefer = [c for e in view.events if (own := self.own.get(e.event_id)) for c in own.prefer]
        return next_candidate(
            cfg.recruitment,
            self.overlay,
            view,
            skip | dead if dead else skip,
            self.rng,
            resolution_s=cfg.locality_resolution_s,
            prefer=prefer,
        )

    def _after_hold(self, now: float, out: Out) -> None:
        if self.view is None:
            self._start_if_free(now, out)

    def _lap_end(self, view: PartitionView, now: float, out: Out) -> None:
        """The ISP came back to us, its initiator."""
        if self.view is None or self.view.pid != view.pid:
            return  # stale: this partition is already gone
        if self.lead is not None or self.view.state == FINISHING:
            # A forked copy's ISP: we lead this partition ourselves (a copy of it that
            # we took over, or whose plan we confirm or apply), or follow the leader
            # applying its plan; that lead ends the partition, not this lap.
            # Why: tests/partition/test_confirming.py::
            # test_an_initiator_leading_its_plan_ignores_a_forked_copys_returning_isp
            self.stats["forked_isp_home"] += 1
            return
        if view.state == BLOCKED or view.lap >= 2:
            self.stats["events_failed_two_laps"] += 1
            self._fail_events(view, self._why_refused(view), now, out)
            self._dissolve("two laps without a solution", now, out, notify=True)
            return
        self.stats["blocked"] += 1
        blocked = replace(view, state=BLOCKED, lap=2, version=view.version + 1, leader=self.me)
        for m in blocked.members:
            if m.node_id != self.me.node_id:
                self._request(m, SetPartition(blocked), None, now, out)
        self._adopt(blocked, now, out, "member")
        self._skip, self._hops = set(), 0
        self._forward(blocked, set(), 0, False, now, out)

    def _why_refused(self, view: PartitionView) -> str:
        """What an operator is told when no partition placed an event: the last
        leader's explanation (the placement engine's: VMs, hosts, rule), else why no
        partition could try."""
        if view.last_reason:
            return view.last_reason
        if len(view.members) < self.config.min_partition_size:
            return (
                f"no placement tried: only {len(view.members)} node(s) could be recruited, "
                f"[partition] min_partition_size is {self.config.min_partition_size}"
            )
        return f"no placement found on the {len(view.members)} hosts of the last partition"

    def _fail_events(self, view: PartitionView, reason: str, now: float, out: Out) -> None:
        for event in view.events:
            msg = Outcome(event.event_id, False, reason, (), len(view.members), 0)
            if event.origin.node_id == self.me.node_id:
                self._outcome(msg, now, out)
            else:
                self._request(event.origin, msg, None, now, out)

    # -- receiving an ISP --------------------------------------------------------------

    def _answered(self, key: tuple[Any, ...], src: Address, rid: int, out: Out) -> bool:
        """A retransmitted request we already handled gets the same answer again (each
        attempt carries a fresh request id): an Isp, a returning Isp or a CanMerge is
        handled once. Why: tests/partition/test_duplicate_requests.py::
        test_a_repeated_isp_gets_the_same_answer_and_no_second_token"""
        reply = self._replies.get(key)
        if reply is None:
            return False
        self.stats["duplicate_request"] += 1
        out.append(Send(src, rid, reply))
        return True

    def _answer(self, key: tuple[Any, ...], src: Address, rid: int, reply: Reply, out: Out) -> None:
        self._replies[key] = reply
        if len(self._replies) > _REPLY_CACHE:
            del self._replies[next(iter(self._replies))]
        out.append(Send(src, rid, reply))

    def _on_isp(self, src: Address, sender: int, rid: int, msg: Isp, now: float, out: Out) -> None:
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

    def _forward_foreign(
        self, view: PartitionView, skip: set[int], hops: int, now: float, out: Out
    ) -> None:
        """Pass on an ISP of a partition we are not in (the shortcut)."""
        lap_over = hops >= self.config.max_hops
        candidate = None
        if not lap_over:
            candidate = self._next_candidate(view, skip, now)
        returning = candidate is None
        target = view.initiator if candidate is None else candidate
        msg = Isp(view, tuple(sorted(skip)), hops, returning)
        then = ForeignIspSent(view, target, skip, hops, returning)
        if returning:
            self._request(target, msg, then, now, out)
        else:
            cfg = self.config
            self._request(target, msg, then, now, out, attempts=cfg.isp_attempts, backoff=False)

    def _foreign_isp_acked(
        self, then: ForeignIspSent, reply: IspAck | None, now: float, out: Out
    ) -> None:
        if reply is not None and reply.accepted:
            return
        if then.returning:
            return  # the initiator is gone: its members' leases will expire
        if reply is None:
            self._lost_foreign(then.view, then.skip, then.hops, then.target, now, out)
            return
        then.skip.add(then.target.node_id)  # already a member there: try another
        self._forward_foreign(then.view, then.skip, then.hops, now, out)

    def _lost_foreign(
        self,
        view: PartitionView,
        skip: set[int],
        hops: int,
        target: Contact,
        now: float,
        out: Out,
    ) -> None:
        """Every answer of ``target`` was lost: it may be dead, or it may have taken the
        ISP on anyway. The initiator adopts every new version, so the ISP is sent on
        again only if the initiator still holds ``view``'s version (a second copy would
        fork the partition). Why: tests/partition/test_interleavings.py::
        test_random_interleavings_keep_the_invariants"""
        then = ForeignIspChecked(view, target, skip, hops)
        self._request(view.initiator, StillValid(view.pid, view.version), then, now, out)

    def _foreign_isp_checked(
        self, then: ForeignIspChecked, reply: Valid | None, now: float, out: Out
    ) -> None:
        if reply is not None and reply.ok:
            then.skip.add(then.target.node_id)
            self._forward_foreign(then.view, then.skip, then.hops, now, out)
        else:
            self.stats["isp_not_resent"] += 1

    def _check_then_join(self, msg: Isp, now: float, out: Out) -> None:
        view = msg.view
        self._holding = view
        then = JoinChecked(msg)
        self._request(view.initiator, StillValid(view.pid, view.version), then, now, out)

    def _join_checked(self, then: JoinChecked, reply: Valid | None, now: float, out: Out) -> None:
        self._holding = None
        if reply is not None and reply.ok and self.view is None:
            self._join(then.msg, now, out)
        else:
            self.stats["stale_isp"] += 1
            self._start_if_free(now, out)

    def _join(self, msg: Isp, now: float, out: Out) -> None:
        view = msg.view
        self.stats["joined"] += 1
        new = replace(
            view, version=view.version + 1, leader=self.me, members=(self.me, *view.members)
        )
        self._become_leader(new, set(msg.skip), msg.hops, now, out)

    def _on_still_valid(
        self, src: Address, sender: int, rid: int, msg: StillValid, now: float, out: Out
    ) -> None:
        # VMPlaceS's rule: same partition, and a version not older than ours (a copy of
        # an ISP from before a later member joined is stale)
        view = self.view
        same = view is not None and view.pid == msg.pid
        if msg.leading:  # a member's probe: do we lead it or hold its ISP (any version)?
            holding = self._holding is not None and self._holding.pid == msg.pid
            lead = self.lead if same else None
            # A member we let go (its lease lapsed on our side) or dropped is told no:
            # it leaves.
            ok = holding or (
                lead is not None
                and view is not None
                and sender in lead.renewed
                and sender in view.member_ids()
            )
        else:
            ok = same and view is not None and msg.version >= view.version
        out.append(Send(src, rid, Valid(ok)))
        if msg.leading and ok and lead is not None:
            # The member renews its lease on our answer only if it still waits for it
            # (a probe can reach us long after it was sent: we were paused, it left
            # since), so the answer alone renews nothing on our side: a keep-alive round
            # to it does, once it acknowledges it. Why: tests/partition/test_member_lease.py
            # ::test_a_late_probe_answer_renews_no_lease_on_the_leaders_side
            self._keepalive_round(lead, (src,), now, out)

    # -- merging -----------------------------------------------------------------------

    def _try_merge(self, msg: Isp, src: Address, sender: int, now: float, out: Out) -> None:
        self.locked_for_fusion = True
        peer = Contact(sender, src[0], src[1])
        self._request(peer, CanMerge(msg.view.pid), MergeAsked(msg), now, out)

    def _merge_answered(
        self, then: MergeAsked, reply: MergeAnswer | None, now: float, out: Out
    ) -> None:
        msg = then.msg
        view = msg.view
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

    def _on_can_merge(
        self, src: Address, sender: int, rid: int, msg: CanMerge, now: float, out: Out
    ) -> None:
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
