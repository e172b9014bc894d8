"""Carrying out a partition's plan: the leader's side (one action per member, each
started once every earlier action on one of its hosts has ended) and the member's side
(a driver call per accepted action, its end reported with a retried ``ActionDone``).

Part of ``PartitionCore``, written against the state ``base.CoreBase`` declares (a
subclass of ``Membership`` only to keep the class chain single: see ``base.py``); split
out so that ``core.py`` reads as the ISP state machine alone.
"""

from __future__ import annotations

from dvms.effects import Address, Emit, Send
from dvms.overlay.messages import Contact
from dvms.partition.base import ActionSent, Out
from dvms.partition.events import BootVm, MigrateVmTo, PartitionEffect, PlanApplied, RecordLocation
from dvms.partition.membership import Membership
from dvms.partition.messages import (
    ActionAccepted,
    ActionAck,
    ActionDone,
    CreateVm,
    LaunchVm,
    MigrateVm,
    Outcome,
)
from dvms.partition.solve import PlanStep, SolveOutcome
from dvms.partition.timers import PartitionTimer

__all__ = ["Acting"]


class Acting(Membership):
    # -- acting (leader) ------------------------------------------------------------------------

    def _member_for_host(self, host: str) -> Contact | None:
        lead, view = self.lead, self.view
        assert lead is not None and view is not None
        for m in view.members:
            s = lead.states.get(m.node_id)
            if s is not None and s.name == host:
                return m
        return None

    def _start_actions(self, outcome: SolveOutcome, now: float, out: Out) -> None:
        lead = self.lead
        assert lead is not None
        actions = list(outcome.actions)
        for i, a in enumerate(actions):
            op = self.rng.getrandbits(63)
            lead.ops[op] = a
            lead.index[op] = i
            hosts = {a.src, a.dst} - {None}
            lead.blocked_by[op] = {
                j
                for j, b in enumerate(actions)
                if j != i and b.end <= a.start and hosts & {b.src, b.dst}
            }
        self._launch_ready(now, out)

    def _launch_ready(self, now: float, out: Out) -> None:
        lead = self.lead
        assert lead is not None
        # No action goes to (or into) a host whose member's lease may have run out,
        # even if the keep-alive timer that lets it go has not fired yet (a leader
        # resuming from a pause runs its overdue timers in any order).
        self._expire_members(now, out)
        if not self._leading(lead):
            return
        finished = {lead.index[op] for op in lead.done_ops}
        for op, a in list(lead.ops.items()):
            if op in lead.started or lead.blocked_by[op] - finished:
                continue
            lead.started.add(op)
            self._send_action(op, a, now, out)
            if not self._leading(lead):
                return  # the plan finished inside (an action failed synchronously)
        if len(lead.done_ops) == len(lead.ops):
            self._finish(now, out)

    def _send_action(self, op: int, a: PlanStep, now: float, out: Out) -> None:
        view = self.view
        assert view is not None
        msg: MigrateVm | CreateVm
        if a.kind == "migrate":
            src = self._member_for_host(a.src) if a.src is not None else None
            dst = self._member_for_host(a.dst) if a.dst is not None else None
            if src is None or dst is None or a.dst is None:
                self._action_result(op, False, f"{a.vm}: host left the partition", now, out)
                return
            ns, _, name = a.vm.rpartition("/")
            msg = MigrateVm(view.pid, op, name, ns, dst, a.dst)
            target = src
        else:  # boot (launch)
            found = self._member_for_host(a.dst) if a.dst is not None else None
            if found is None or a.launch is None:
                self._action_result(op, False, f"{a.vm}: host left the partition", now, out)
                return
            target = found
            msg = CreateVm(view.pid, op, a.launch, self._claim_seq(a.launch))
        self._request(target, msg, ActionSent(op), now, out)

    def _action_accepted(
        self, then: ActionSent, reply: ActionAccepted | None, now: float, out: Out
    ) -> None:
        op = then.op
        if reply is None:
            self._action_result(op, False, "member did not answer", now, out)
        elif not reply.ok:
            self._action_result(op, False, reply.reason, now, out)
        else:  # started: its end comes as ActionDone, or the deadline fails it
            self._at(now + self.config.action_timeout_s, PartitionTimer.ACTION, op)

    def _action_timeout(self, op: int, now: float, out: Out) -> None:
        self._action_result(op, False, "member did not report the action's end", now, out)

    def _claim_seq(self, vm: LaunchVm) -> int:
        """The version of ``vm``'s name claim, from the event that launches it."""
        assert self.view is not None
        for event in self.view.events:
            for v, seq in zip(event.vms, event.claims, strict=False):
                if (v.namespace, v.name) == (vm.namespace, vm.name):
                    return seq
        return 0

    def _on_action_done(
        self, src: Address, sender: int, rid: int, msg: ActionDone, now: float, out: Out
    ) -> None:
        out.append(Send(src, rid, ActionAck(msg.op)))
        if self.lead is not None and self.view is not None and self.view.pid == msg.pid:
            self._action_result(msg.op, msg.ok, msg.reason, now, out)

    def _action_result(self, op: int, ok: bool, reason: str, now: float, out: Out) -> None:
        lead = self.lead
        if lead is None or op in lead.done_ops or op not in lead.ops:
            return
        lead.done_ops.add(op)
        if not ok:
            lead.failed.append(reason or "action failed")
            self.stats["action_failed"] += 1
        else:
            self.stats["actions"] += 1
        self._launch_ready(now, out)

    def _finish(self, now: float, out: Out) -> None:
        lead, view = self.lead, self.view
        assert lead is not None and view is not None and lead.outcome is not None
        ok = not lead.failed
        reason = "; ".join(lead.failed)
        migrations = sum(a.kind == "migrate" for a in lead.ops.values())
        out.append(
            Emit(
                PlanApplied(
                    view.pid,
                    len(view.members),
                    len(lead.ops),
                    migrations,
                    len(lead.failed),
                    now - lead.acting_since,
                )
            )
        )
        plan = lead.outcome  # a local: the loop's calls must not meet a narrowed attribute
        for event in view.events:
            names = {(v.namespace, v.name) for v in event.vms}
            placed = tuple(p for p in plan.placed if (p.namespace, p.vm) in names)
            msg = Outcome(event.event_id, ok, reason, placed, len(view.members), migrations)
            if event.origin.node_id == self.me.node_id:
                self._outcome(msg, now, out)
            else:
                self._request(event.origin, msg, None, now, out)
        self.stats["partitions_solved" if ok else "partitions_failed_acting"] += 1
        self._dissolve("solved" if ok else "actions failed", now, out, notify=True)

    # -- actions on this node ----------------------------------------------------------

    def _member_of(self, pid: int) -> bool:
        return self.view is not None and self.view.pid == pid

    def _accept_action(
        self, src: Address, sender: int, rid: int, pid: int, op: int, now: float, out: Out
    ) -> bool:
        """Common checks of MigrateVm/CreateVm; True if a new driver call must start."""
        if op in self._driver:  # a retransmission: it is already running
            out.append(Send(src, rid, ActionAccepted(op, True)))
            return False
        if not self._member_of(pid):
            out.append(Send(src, rid, ActionAccepted(op, False, "not a member")))
            return False
        assert self.view is not None
        if sender != self.view.leader.node_id:
            # A leader of another copy of our partition (the ISP forked under loss):
            # only the leader we follow acts on this host.
            # Why: tests/partition/test_member_lease.py::
            # test_a_member_running_actions_follows_no_other_leader
            self.stats["refused_other_leader"] += 1
            out.append(Send(src, rid, ActionAccepted(op, False, "not my leader")))
            return False
        self._driver[op] = (Contact(sender, src[0], src[1]), pid)
        out.append(Send(src, rid, ActionAccepted(op, True)))
        return True

    def _on_migrate(
        self, src: Address, sender: int, rid: int, msg: MigrateVm, now: float, out: Out
    ) -> None:
        if self._accept_action(src, sender, rid, msg.pid, msg.op, now, out):
            self._located[msg.op] = RecordLocation(
                msg.namespace, msg.vm, msg.dst_host, msg.dst.node_id
            )
            out.append(MigrateVmTo(msg.op, msg.vm, msg.namespace, msg.dst_host, msg.dst.addr))

    def _on_create(
        self, src: Address, sender: int, rid: int, msg: CreateVm, now: float, out: Out
    ) -> None:
        if self._accept_action(src, sender, rid, msg.pid, msg.op, now, out):
            here = self.local_state()
            if here is not None:
                self._located[msg.op] = RecordLocation(
                    msg.vm.namespace, msg.vm.name, here.name, self.me.node_id, msg.claim_seq
                )
            out.append(BootVm(msg.op, msg.vm))

    def on_driver_result(
        self, op: int, ok: bool, reason: str, *, now: float
    ) -> list[PartitionEffect]:
        out: Out = []
        entry = self._driver.pop(op, None)
        located = self._located.pop(op, None)
        if ok and located is not None and self.config.directory:
            # The node that carried the action out writes the directory record, so it
            # is written even if the leader is gone by now.
            out.append(located)
        if entry is not None:
            leader, pid = entry
            done = ActionDone(pid, op, ok, reason[:512])
            self._request(leader, done, None, now, out)
            # A member kept past its lease only by this action (its leader crashed while
            # it ran) is free as soon as the action ends, not at the next lease check.
            # Why: tests/partition/test_interleavings.py::
            # test_random_interleavings_keep_the_invariants (held beyond lease + 1 s)
            if (
                self.view is not None
                and not self.held_by_migration()
                and self.lead is None
                and self._holding is None
                and now >= self.lease_until - 1e-9
            ):
                self.stats["lease_expired"] += 1
                self._dissolve(self._leaving or "lease expired", now, out, notify=False)
            if self.view is None:
                self._start_if_free(now, out)
        return self._deferred(out, now)
