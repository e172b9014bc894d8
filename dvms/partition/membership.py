"""Partition membership on a member: adopting views, leases and keep-alives, dissolving,
and what happens to the events a node originated when their partition ends.

Part of ``PartitionCore``, written against the state ``base.CoreBase`` declares; split
out so that ``core.py`` reads as the ISP state machine alone.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from dvms.effects import Address, Emit, Send
from dvms.overlay.messages import Contact
from dvms.partition.base import CoreBase, Lead, LeaderProbed, LeadPhase, Out, OwnEvent
from dvms.partition.events import (
    EventDone,
    PartitionChanged,
    PartitionEffect,
    PartitionReleased,
    ReleaseNames,
)
from dvms.partition.messages import (
    FINISHING,
    Dissolve,
    HostState,
    KeepAlive,
    KeepAliveAck,
    MemberState,
    Outcome,
    OutcomeAck,
    PartitionView,
    SetPartition,
    StatePage,
    StillValid,
    Valid,
)
from dvms.partition.timers import PartitionTimer
from dvms.wire.schema import encoded_size

__all__ = ["Membership"]


class Membership(CoreBase):
    # -- membership --------------------------------------------------------------------

    def _on_set_partition(
        self, src: Address, sender: int, rid: int, msg: SetPartition, now: float, out: Out
    ) -> None:
        view = msg.view
        mine = self.view
        same = mine is not None and mine.pid == view.pid
        if view.state == FINISHING and not same:
            # A leader's Finishing view of a partition we are not in (a retransmission
            # reaching us after we left it): its plan no longer counts on us, so joining
            # would only keep us from every other partition for a lease.
            # Why: tests/partition/test_confirming.py::
            # test_a_free_node_refuses_a_finishing_view_of_a_partition_it_is_not_in
            self.stats["refused_finishing"] += 1
            out.append(Send(src, rid, MemberState(view.pid, view.version, None)))
            return
        # A new pid is adopted when we are free, or when it contains every member and
        # every event of our current partition (a merge absorbed it); a stale lineage is
        # refused. Why (events too: a late SetPartition must not absorb a partition we
        # started since): tests/partition/test_interleavings.py::
        # test_random_interleavings_keep_the_invariants
        absorbs = (
            mine is not None
            and mine.member_ids() <= view.member_ids()
            and {e.event_id for e in mine.events} <= {e.event_id for e in view.events}
        )
        if (mine is None and self._holding is None) or same or absorbs:
            if (
                mine is not None
                and view.leader.node_id != mine.leader.node_id
                and (mine.state == FINISHING or self.held_by_migration())
            ):
                # Our leader applies its plan, or actions of a leader run on this host:
                # no other leader (a fork of our partition, a takeover, a merge) counts
                # on it until our leader dissolves us or our lease ends (for a migration:
                # until it ends), so that no two plans act with one host.
                # Why: tests/partition/test_member_lease.py::
                # test_a_member_running_actions_follows_no_other_leader
                self.stats["refused_while_acting"] += 1
                out.append(Send(src, rid, MemberState(view.pid, view.version, None)))
                return
            if same and mine is not None and view.version < mine.version:
                # An older view: a retransmission of our leader's is answered; one of
                # another leader (a candidate the old leader handed the ISP to just as a
                # member took over from it) is refused, so it cannot plan with us.
                # Why: tests/partition/test_takeover.py::
                # test_members_refuse_an_older_view_of_another_leader_and_its_dissolve
                ours = view.leader.node_id == mine.leader.node_id
                self.stats["refused_older_view"] += not ours
                reply = self._report(view) if ours else MemberState(view.pid, view.version, None)
                out.append(Send(src, rid, reply))
                return
            if self.lead is not None and not same:
                self.lead = None
            if same and self.lead is not None and view.leader.node_id != self.me.node_id:
                self.lead = None
            self._adopt(view, now, out, "member")
            out.append(Send(src, rid, self._report(view)))
            return
        self.stats["refused_membership"] += 1
        out.append(Send(src, rid, MemberState(view.pid, view.version, None)))

    def _report(self, view: PartitionView) -> MemberState:
        """Our answer to ``view``'s ``SetPartition``: our host, its VMs' first page."""
        host = self.local_state()
        self._reported = None if host is None else (view.pid, host)
        return self._page(view.pid, view.version, host, 0)

    def _page(self, pid: int, version: int, host: HostState | None, offset: int) -> MemberState:
        """``host`` with its VMs from ``offset`` on that fit ``state_bytes`` (at least
        one), and where the next page starts (0: none)."""
        if host is None:
            return MemberState(pid, version, None)
        limit = self.config.state_bytes
        if offset == 0 and encoded_size(host) <= limit:
            return MemberState(pid, version, host)  # the usual case: one page
        budget = limit - encoded_size(replace(host, vms=())) - 2  # array header: 3 bytes
        end = offset
        while end < len(host.vms):
            size = encoded_size(host.vms[end])
            if end > offset and size > budget:
                break
            budget -= size
            end += 1
        more = end if end < len(host.vms) else 0
        return MemberState(pid, version, replace(host, vms=host.vms[offset:end]), more)

    def _on_state_page(
        self, src: Address, sender: int, rid: int, msg: StatePage, now: float, out: Out
    ) -> None:
        """A page of the state we reported to partition ``msg.pid``'s leader; refused
        (``host`` None) once we are in no partition of that pid."""
        reported = self._reported
        if self.view is None or self.view.pid != msg.pid or reported is None:
            out.append(Send(src, rid, MemberState(msg.pid, msg.version, None)))
            return
        if reported[0] != msg.pid or msg.offset >= len(reported[1].vms):
            out.append(Send(src, rid, MemberState(msg.pid, msg.version, None)))
            return
        self.stats["state_pages_sent"] += 1
        out.append(Send(src, rid, self._page(msg.pid, msg.version, reported[1], msg.offset)))

    def _on_keepalive(
        self, src: Address, sender: int, rid: int, msg: KeepAlive, now: float, out: Out
    ) -> None:
        view = self.view
        if view is not None and view.pid == msg.pid:
            self.lease_until = now + self.config.lease_s
            self._at(self.lease_until, PartitionTimer.LEASE, msg.pid)
            self._heard_from_partition(msg.pid, now)
            # Only our leader's rounds are acknowledged; another leader of this partition
            # id (a copy of it whose ISP forked, a leader we saw taken over) is told we
            # follow someone else (seq 0), so that it stops counting on us at once.
            if msg.seq and self.lead is None:
                ours = sender == view.leader.node_id
                out.append(Send(src, 0, KeepAliveAck(msg.pid, msg.seq if ours else 0)))

    def _on_keepalive_ack(
        self, src: Address, sender: int, rid: int, msg: KeepAliveAck, now: float, out: Out
    ) -> None:
        """A member renewed its lease on our keep-alive round ``seq``: our lease on it
        runs from that round's sending time (``_expire_members``); seq 0: it follows
        another leader of this partition id, we let go of it now."""
        lead, view = self.lead, self.view
        if lead is None or view is None or view.pid != msg.pid:
            return
        if sender not in lead.renewed:
            return
        if msg.seq == 0:  # it follows another leader of this partition id
            member = next((m for m in view.members if m.node_id == sender), None)
            if member is not None:
                self.stats["member_follows_another"] += 1
                self._lease_lapsed(member, now, out)
                self._act_if_confirmed(lead, now, out)
            return
        sent = lead.rounds.get(msg.seq)
        if sent is not None:
            lead.renewed[sender] = max(lead.renewed[sender], sent)

    def _heard_from_partition(self, pid: int, now: float) -> None:
        self._heard = now
        self._at(now + self.config.suspect_s, PartitionTimer.SUSPECT, pid)

    # -- leader crash ------------------------------------------------------------------

    def _suspect(self, pid: int, now: float, out: Out) -> None:
        """Nothing heard from our partition for ``suspect_s``: if we are first in line
        (the newest member but the leader), ask the leader whether it still leads or
        holds the ISP; no answer -> we take over (DVMS 2, S4).

        A Finishing partition is not taken over (its lease ends it), but the origin of
        one of its events asks too, and stays while the leader answers, so a leader slow
        to apply its plan does not lose the event. Why: tests/partition/test_takeover.py::
        test_the_origin_stays_while_a_silent_leader_still_applies_its_plan"""
        view = self.view
        if view is None or view.pid != pid or self._probing == pid:
            return
        if now < self._heard + self.config.suspect_s - 1e-9:
            return  # heard since: a later timer is set
        if self.lead is not None or self._holding is not None:
            return
        leader = view.leader
        if leader.node_id == self.me.node_id:
            return
        finishing = view.state == FINISHING
        if finishing:
            if not any(e.origin.node_id == self.me.node_id for e in view.events):
                return
        else:
            line = [m for m in view.members if m.node_id != leader.node_id]
            if not line or line[0].node_id != self.me.node_id:
                return
        self._probing = pid
        probe = StillValid(pid, view.version, leading=True)
        then = LeaderProbed(view, leader, finishing, now)
        cfg = self.config
        self._request(leader, probe, then, now, out, attempts=cfg.isp_attempts, backoff=False)

    def _probe_answered(
        self, then: LeaderProbed, reply: Valid | None, now: float, out: Out
    ) -> None:
        self._probing = None
        mine = self.view
        if mine is None or mine != then.view or self._heard > then.asked:
            return  # the partition moved on meanwhile
        if reply is None:
            if not then.finishing:
                self._take_over(mine, then.leader, now, out)
        elif reply.ok:  # alive and leading, its keep-alives were lost
            pid = then.view.pid
            self.lease_until = now + self.config.lease_s
            self._at(self.lease_until, PartitionTimer.LEASE, pid)
            self._heard_from_partition(pid, now)
        # else: it handed the ISP on; the new leader's SetPartition, or the lease

    def _take_over(self, view: PartitionView, dead: Contact, now: float, out: Out) -> None:
        """The leader is gone: lead the partition without it (its version + 2, so that
        the view of a candidate the dead leader may just have handed the ISP to, at +1,
        loses everywhere); an initiator that is gone dissolves it (DVMS 2, S4)."""
        self.stats["takeovers"] += 1
        if dead.node_id == view.initiator.node_id:
            self._dissolve("initiator crashed", now, out, notify=True)
            return
        others = [m for m in view.members if m.node_id not in (dead.node_id, self.me.node_id)]
        new = replace(view, version=view.version + 2, leader=self.me, members=(self.me, *others))
        self._become_leader(new, {dead.node_id}, len(new.members), now, out)

    def _keepalive(self, pid: int, now: float, out: Out) -> None:
        """Leaders and ISP holders keep members' leases fresh; a leader numbers its
        rounds (members acknowledge them) and lets go of members whose lease may have
        run out (``_expire_members``)."""
        lead = self.lead
        view = self.view if lead is not None else self._holding
        if view is None or view.pid != pid:
            return
        if lead is not None:
            self._expire_members(now, out)
            if self.view is None or not self._leading(lead):
                return  # the initiator's lease lapsed: the partition is dissolved
            view = self.view
            others = tuple(m.addr for m in view.members if m.node_id != self.me.node_id)
            self._keepalive_round(lead, others, now, out)
        else:
            msg = KeepAlive(view.pid, view.version, 0)
            out += [Send(m.addr, 0, msg) for m in view.members if m.node_id != self.me.node_id]
        if self.view is not None and self.view.pid == pid:
            self.lease_until = now + self.config.lease_s
            self._at(self.lease_until, PartitionTimer.LEASE, pid)
        self._at(now + self.config.keepalive_s, PartitionTimer.KEEPALIVE, pid)

    def _keepalive_round(
        self, lead: Lead, addrs: tuple[Address, ...], now: float, out: Out
    ) -> None:
        """A numbered keep-alive round of the partition we lead to ``addrs``: a member
        that acknowledges it renewed its lease on it (``_on_keepalive_ack``)."""
        view = self.view
        assert view is not None
        seq = self._next_round
        self._next_round += 1
        lead.rounds[seq] = now
        horizon = now - self.config.lease_s
        for old in [s for s, sent in lead.rounds.items() if sent < horizon]:
            del lead.rounds[old]
        msg = KeepAlive(view.pid, view.version, seq)
        out += [Send(addr, 0, msg) for addr in addrs]

    def _expire_members(self, now: float, out: Out) -> None:
        """The leader's side of the lease: a member we have not known to renew its lease
        for ``lease_s - keepalive_s`` is let go before its own lease can end (this runs
        every ``keepalive_s``), so that we never count on a member that may have freed
        itself and joined another partition. Keep-alives alone are one way: a leader cut
        off from a member (a split, a loss burst, its own pause) would otherwise go on
        applying its plan to a host another partition already plans with. Members still
        answering ``SetPartition`` are the state timeout's (``_states_timeout``).
        Why: tests/partition/test_member_lease.py"""
        lead, view = self.lead, self.view
        assert lead is not None and view is not None
        limit = now - (self.config.lease_s - self.config.keepalive_s)
        for m in view.members:
            if m.node_id == self.me.node_id or m.node_id in lead.waiting:
                continue
            if lead.renewed.get(m.node_id, lead.since) <= limit + 1e-9:
                self._lease_lapsed(m, now, out)
                if not self._leading(lead):
                    return
        self._act_if_confirmed(lead, now, out)

    def _lease_lapsed(self, member: Contact, now: float, out: Out) -> None:
        lead, view = self.lead, self.view
        assert lead is not None and view is not None
        self.stats["member_lease_lapsed"] += 1
        lead.renewed.pop(member.node_id, None)
        if lead.phase not in (LeadPhase.CONFIRMING, LeadPhase.ACTING):
            self._drop_member(member, "lease lapsed", now, out)
            return
        self._let_go_of(member, "lease lapsed", now, out)

    def _let_go_of(self, member: Contact, why: str, now: float, out: Out) -> None:
        """Stop counting on ``member`` once our plan is found. While we confirm it
        (nothing started yet), losing the initiator or an event's origin abandons the
        plan: the partition is dissolved, every member told. That member may follow a
        forked copy of this partition, which holds the same events and may apply a plan
        for them too (a launch would create its VMs twice). Once actions run the plan
        goes on without the member (``_release_from_plan``): a running action cannot be
        called back, and the events' origins get the ``Outcome`` as usual.
        Why: tests/partition/test_confirming.py::
        test_forked_copies_never_both_apply_a_plan_for_one_launch"""
        lead, view = self.lead, self.view
        assert lead is not None and view is not None
        lead.renewed.pop(member.node_id, None)
        if lead.phase == LeadPhase.CONFIRMING:
            # Its answer no longer holds the plan up (the caller starts it once nobody
            # is left). Why: tests/partition/test_confirming.py::
            # test_a_member_let_go_while_confirming_no_longer_holds_the_plan_up
            lead.confirming.discard(member.node_id)
            if member.node_id == view.initiator.node_id:
                role = "initiator"
            elif any(e.origin.node_id == member.node_id for e in view.events):
                role = "event origin"
            else:
                role = ""
            if role:
                self.stats["plan_abandoned"] += 1
                self._dissolve(f"{role} {why} before the plan started", now, out, notify=True)
                return
        self._release_from_plan(member, out)

    def _act_if_confirmed(self, lead: Lead, now: float, out: Out) -> None:
        """Start our plan if ``lead`` still confirms it and nobody's answer is awaited."""
        if (
            self._leading(lead)
            and lead.phase == LeadPhase.CONFIRMING
            and not lead.confirming
            and lead.outcome is not None  # None: solved again (core._begin_acting)
        ):
            self._begin_acting(now, out)

    def _release_from_plan(self, member: Contact, out: Out) -> None:
        """Stop counting on ``member`` while our plan is (about to be) applied: the other
        actions go on (a Dissolve now would free members whose migrations run); actions
        on its host that have not started fail (``_member_for_host``), one that runs
        reports its end as usual."""
        view = self.view
        assert view is not None
        members = tuple(m for m in view.members if m.node_id != member.node_id)
        self.view = replace(view, members=members, version=view.version + 1)
        out.append(Emit(PartitionChanged(self.view, "leader")))

    def _check_lease(self, pid: int, now: float, out: Out) -> None:
        view = self.view
        if view is None or view.pid != pid or now < self.lease_until - 1e-9:
            return
        if self.lead is not None or (self._holding is not None and self._holding.pid == pid):
            return  # we hold it: our own keep-alives run
        if self.held_by_migration():
            # A migration on this host is still running (ours, or one into this host for
            # our partition's plan): stay busy until it ends, or another partition could
            # plan with a host in flux.
            self._at(now + self.config.lease_check_s, PartitionTimer.LEASE, pid)
            return
        self.stats["lease_expired"] += 1
        self._dissolve(self._leaving or "lease expired", now, out, notify=False)

    def _on_dissolve(
        self, src: Address, sender: int, rid: int, msg: Dissolve, now: float, out: Out
    ) -> None:
        view = self.view
        if view is None or view.pid != msg.pid or self.lead is not None:
            return
        finishing = view.state == FINISHING
        if sender != view.leader.node_id and (finishing or sender != view.initiator.node_id):
            # Not from the partition as we know it (a leader we already replaced, or a
            # candidate leading a stale copy of it): the lease covers a real end. Only
            # the leader applying its plan ends a Finishing partition (it counts on us
            # until it does, or until its lease on us lapses).
            self.stats["ignored_dissolve"] += 1
            return
        if self.held_by_migration():
            # Our leader is done with us, but a migration it (or a leader before it) asked
            # for still runs here: we leave when it ends (``on_driver_result``), not
            # before, or another partition could plan with a host in flux.
            self._leaving = msg.reason
            self.lease_until = min(self.lease_until, now)
            return
        self._dissolve(msg.reason, now, out, notify=False)

    def _dissolve_view(self, view: PartitionView, reason: str, now: float, out: Out) -> None:
        mine = self.view
        if mine is None or mine.pid != view.pid:
            return
        if mine.state == FINISHING and self.lead is None:
            return  # a leader applies its plan with us: it ends the partition
        self._dissolve(reason, now, out, notify=True)

    def _dissolve(self, reason: str, now: float, out: Out, *, notify: bool) -> None:
        view = self.view
        if view is None:
            return
        if notify:
            for m in view.members:
                if m.node_id != self.me.node_id:
                    out.append(Send(m.addr, 0, Dissolve(view.pid, reason[:256])))
        self.view = None
        self.lead = None
        self._leaving = None
        self.locked_for_fusion = False
        out.append(Emit(PartitionReleased(view.pid, reason)))
        # Events we originated in it are now orphaned unless an Outcome arrives (over a
        # copy: _orphaned deletes the events that fail).
        for own in list(self.own.values()):
            if own.in_flight and any(e.event_id == own.event.event_id for e in view.events):
                self._orphaned(own, reason, now, out)
        if self._holding is None:
            self._start_if_free(now, out)

    def _orphaned(self, own: OwnEvent, reason: str, now: float, out: Out) -> None:
        """Our event's partition is gone without an outcome: retry or give up."""
        own.in_flight = False
        event = own.event
        if reason == "solved":
            # The Outcome is on its way; if every copy is lost, the event still ends.
            # Why: tests/partition/test_interleavings.py::test_an_outcome_lost_for_good
            self._at(now + self.config.outcome_wait_s, PartitionTimer.OUTCOME, event.event_id)
            return
        if event.kind == "launch" and own.attempts < self.config.launch_attempts:
            self._retry_launch(own, now)
            return
        if event.kind == "overload":
            self._overload_hold = True  # the monitor re-raises it if still true
        self._end_event(own, False, reason, now, out)

    def _outcome_overdue(self, event_id: int, now: float, out: Out) -> None:
        """The leader's Outcome for our solved event never came: the plan was applied
        (the partition dissolved as solved), so the event ends as solved, without the
        leader's report of what it placed."""
        own = self.own.get(event_id)
        if own is None or own.in_flight or event_id in self.queue:
            return
        self.stats["outcome_lost"] += 1
        self._end_event(own, True, "solved; the leader's report was lost", now, out)

    def _end_event(
        self, own: OwnEvent, ok: bool, reason: str, now: float, out: Out, **done: Any
    ) -> None:
        """Our event ended for good: report it, and free a launch's name claims."""
        event = own.event
        self.own.pop(event.event_id, None)
        if event.event_id in self.queue:  # ended while waiting (a late Outcome): forget it
            self.queue.remove(event.event_id)
        if event.kind == "underload" and not ok:
            self._underload_hold_until = now + self.config.underload_backoff_s
        if event.kind == "launch" and self.config.directory and event.vms:
            out.append(ReleaseNames(event.event_id, free=not ok))
        out.append(
            Emit(EventDone(event.event_id, event.kind, ok, reason, own.started, now, **done))
        )

    # -- outcomes ----------------------------------------------------------------------

    def _on_outcome(
        self, src: Address, sender: int, rid: int, msg: Outcome, now: float, out: Out
    ) -> None:
        out.append(Send(src, rid, OutcomeAck(msg.event_id)))
        self._outcome(msg, now, out)

    def _outcome(self, msg: Outcome, now: float, out: Out) -> None:
        own = self.own.get(msg.event_id)
        if own is None:
            return  # a duplicate
        if not msg.ok and own.event.kind == "launch" and own.attempts < self.config.launch_attempts:
            own.in_flight = False
            self._retry_launch(own, now)
            return
        if not msg.ok and own.event.kind == "overload":
            self._overload_hold = True  # re-detected at the monitor's next round
        self._end_event(
            own,
            msg.ok,
            msg.reason,
            now,
            out,
            placed=msg.placed,
            partition_size=msg.partition_size,
            migrations=msg.migrations,
        )

    # -- stopping ----------------------------------------------------------------------

    def acting(self) -> bool:
        """A plan of ours is being confirmed or applied, or a driver call runs on this
        node: a stopping daemon should let it finish (within a grace period) before
        ``shutdown``. Why (confirming): tests/partition/test_confirming.py::
        test_a_leader_confirming_its_plan_is_acting_for_a_stopping_daemon"""
        lead = self.lead
        if self._driver:
            return True
        return lead is not None and lead.phase in (LeadPhase.CONFIRMING, LeadPhase.ACTING)

    def shutdown(self, *, now: float) -> list[PartitionEffect]:
        """The node stops. A partition it leads or whose ISP it holds is dissolved with
        every member told (freed now, not after a lease); as a plain member it just
        leaves (its leader drops it when it stops answering). Events it originated end
        as failed, and nothing new starts."""
        out: Out = []
        self.stopping = True
        if self.view is not None:
            holds = self.lead is not None or self._holding is not None
            self._dissolve("node shutting down", now, out, notify=holds)
        self.queue.clear()
        for own in list(self.own.values()):
            self._end_event(own, False, "node shutting down", now, out)
        return self._deferred(out, now)
