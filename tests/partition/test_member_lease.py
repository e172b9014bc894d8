"""The leader's side of the lease, and a destination that holds itself.

Keep-alives alone are one way: a leader cut off from a member (a split, a loss burst, its
own pause) cannot tell that the member's lease ran out, so it kept counting on the member
(and could start actions on its host) while the member had freed itself and could join
another partition. Members now acknowledge keep-alive rounds, and a leader lets go of a
member it has not known to renew its lease for ``lease_s - keepalive_s``. A member whose
host is the destination of a live migration stays in its partition until the migration
lands, even past its lease and without its leader.

A plan on a hand-made partition: leader n3 (full host), members n2 (room: the migration's
destination), n1 (overloaded: the source and the event's origin) and n4 (full: takes no
part in the plan). Ids 1..4 at positions 0..3, 4-CPU hosts, 10 s migrations.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from dvms.partition.config import PartitionConfig
from dvms.partition.messages import (
    Dissolve,
    KeepAlive,
    KeepAliveAck,
    MigrateVm,
    SetPartition,
    StillValid,
)
from dvms.testing.cluster import FakeCluster

CONFIG = replace(PartitionConfig(), recruitment="ring", min_partition_size=2)
LOADS = (5, 1, 4, 4)  # over, room, full, full
LEADER, DEST, SOURCE, BYSTANDER = 2, 1, 0, 3


def acting_partition() -> FakeCluster:
    c = FakeCluster(
        4,
        seed=5,
        config=CONFIG,
        ids=range(1, 5),
        driver_delay=10.0,
        monitor=False,
    )
    for pos, n in enumerate(LOADS):
        c.add_vms(pos, [1.0] * n)
    view = c.install([LEADER, DEST, SOURCE, BYSTANDER], initiator=SOURCE, leader=LEADER)
    out: list[Any] = []
    c.core(LEADER)._become_leader(view, (), 0, c.engine.now, out)
    c.engine.apply(c.nodes[LEADER], out)
    c.run(0.5)
    lead = c.core(LEADER).lead
    assert lead is not None and lead.phase.value == "acting"
    assert c.hosts[SOURCE].migrating == 1 and c.hosts[DEST].migrating == 1  # h0 -> h1
    return c


def test_members_acknowledge_keepalive_rounds() -> None:
    c = acting_partition()
    acks = {s for _, s, d, m in c.messages if isinstance(m, KeepAliveAck) and d == LEADER}
    assert acks == {DEST, SOURCE, BYSTANDER}
    c.run(5.0)
    assert c.members_of(LEADER) == {LEADER, DEST, SOURCE, BYSTANDER}  # nobody let go
    assert c.core(LEADER).stats["member_lease_lapsed"] == 0


def test_a_leader_cut_off_from_a_member_lets_go_of_it_before_its_lease_ends() -> None:
    """Before: n4 freed itself at its lease's end while n3, still applying its plan,
    counted it as a member for the 10 s of the migration."""
    c = acting_partition()
    cut_at = c.engine.now
    c.network.cut([LEADER], [BYSTANDER])
    lease = CONFIG.lease_s
    while c.core(BYSTANDER).view is not None:
        assert c.engine.now < cut_at + lease + 1.0, "n4's lease never ended"
        c.run(0.05)
    assert BYSTANDER not in c.members_of(LEADER)  # let go before n4 was free
    assert c.core(LEADER).stats["member_lease_lapsed"] == 1
    assert c.core(LEADER).lead is not None  # the plan goes on without it
    c.run(12.0)
    (done,) = c.done.values()
    assert done.ok, done.reason
    assert c.violations == [] and c.vm_problems() == []


def test_a_destination_cut_off_from_its_leader_holds_itself_until_the_vm_lands() -> None:
    """Before: n2 freed itself at its lease's end, ~6 s before the VM migrating into its
    host landed, and could be planned with by another partition meanwhile."""
    c = acting_partition()
    c.network.cut([LEADER], [DEST])
    c.run(CONFIG.lease_s + 1.0)
    assert DEST not in c.members_of(LEADER)  # the leader no longer counts on it
    assert c.core(DEST).view is not None  # but it holds itself: the VM is in flight
    assert c.hosts[DEST].migrating == 1
    c.run(12.0 - c.engine.now)
    assert c.hosts[DEST].migrating == 0
    c.run(CONFIG.lease_check_s + 0.1)
    assert c.core(DEST).view is None  # free once it landed
    assert c.violations == [] and c.vm_problems() == []


def test_a_member_running_actions_follows_no_other_leader() -> None:
    """Under heavy loss an ISP can fork: two copies of one partition (same id) each grow,
    and both reached a plan. Before: the source n1 adopted the second copy's view and
    carried out both leaders' migrations at once, and the first copy's Dissolve freed it
    while the second's migration ran (it then joined a third partition)."""
    c = acting_partition()
    source = c.core(SOURCE)
    assert source._driver and source.view is not None
    mine = source.view
    other = c.contact(BYSTANDER)
    fork = replace(mine, leader=other, version=mine.version + 3)
    c.deliver(BYSTANDER, SOURCE, SetPartition(fork))
    c.deliver(BYSTANDER, SOURCE, MigrateVm(mine.pid, 99, "v", "", c.contact(DEST), "h1"))
    c.run(0.05)
    assert source.view is not None and source.view.leader == mine.leader  # refused the fork
    assert source.stats["refused_while_acting"] == 1
    assert source.stats["refused_other_leader"] == 1
    assert 99 not in source._driver
    c.deliver(LEADER, SOURCE, Dissolve(mine.pid, "solved"))
    c.run(0.05)
    assert source.view is not None  # its migration still runs: it stays
    c.run(10.0)
    assert source.view is None and not source._driver  # and leaves once it ended
    assert c.violations == [] and c.vm_problems() == []


def test_a_member_tells_another_leader_of_its_partition_it_follows_someone_else() -> None:
    """A fork's older leader learns at its next keep-alive round that a member follows
    the newer one, instead of counting on it for the rest of its lease on it."""
    c = acting_partition()
    pid = c.core(LEADER).view.pid  # type: ignore[union-attr]
    c.deliver(BYSTANDER, SOURCE, KeepAlive(pid, 40, 5))  # a leader n1 does not follow
    c.run(0.01)
    naks = [m for _, s, d, m in c.messages if isinstance(m, KeepAliveAck) and s == SOURCE]
    assert KeepAliveAck(pid, 0) in naks and naks[-1].seq == 0
    assert c.core(SOURCE).view is not None  # n1 stays with its own leader
    c.deliver(DEST, LEADER, KeepAliveAck(pid, 0))  # n2 says it follows someone else
    c.run(0.01)
    assert DEST not in c.members_of(LEADER)
    assert c.core(LEADER).stats["member_follows_another"] == 1


def test_a_late_probe_answer_renews_no_lease_on_the_leaders_side() -> None:
    """A paused leader answers, when it resumes, the probes a member sent while it was
    paused. Before: each answer counted as a renewal of its lease on the member (as if
    the member renewed its own lease on it), so the leader kept n4 in its plan's view
    although n4 had freed itself long before (and could have joined another partition
    and its plan). The member renews on the answer only if it still waits for it; the
    leader now counts a renewal only when the member acknowledges a keep-alive round."""
    c = acting_partition()
    leader = c.nodes[LEADER]
    pid, version = c.core(LEADER).view.pid, c.core(LEADER).view.version  # type: ignore[union-attr]
    c.engine.freeze(leader)
    c.run(1.0)
    # n4 asks while the leader is paused (its datagrams wait in the leader's buffer)
    for _ in range(4):
        c.deliver(BYSTANDER, LEADER, StillValid(pid, version, leading=True))
        c.run(0.5)
    c.run(CONFIG.lease_s)
    assert c.core(BYSTANDER).view is None  # n4's lease ended: it is free
    c.engine.thaw(leader)
    c.run(0.01)
    assert BYSTANDER not in c.members_of(LEADER)
    assert c.core(LEADER).lead is not None  # the plan goes on without it


def test_two_forked_leaders_never_both_act_with_one_member() -> None:
    """Under heavy loss a partition's ISP can fork (faults-200 seed 207: two takeovers
    of leaders that were alive, every probe answer lost): two leaders of one partition
    id each grow a copy, and a member that both reach reports its host to both. Before:
    each leader went Finishing and started its plan at once, and the member (following
    the first) was counted on by both plans while the second applied its own. Now a
    leader starts no action before every member has adopted its Finishing view, and a
    member in a Finishing view adopts no other leader's view: the second leader lets go
    of the member first."""
    m, a, b = 0, 1, 2
    c = FakeCluster(
        3,
        seed=7,
        config=CONFIG,
        ids=range(1, 4),
        rtt_s=0.02,
        driver_delay=10.0,
        monitor=False,
        check_period_s=0.002,
    )
    c.add_vms(m, [1.0] * 5)  # over: the event's origin and the initiator
    c.add_vms(a, [1.0])
    c.add_vms(b, [1.0])
    view = c.install([m], initiator=m, leader=m)
    c.fork(view, m, {a: 0.0, b: 0.004})
    c.run(0.5)
    assert c.violations == []
    assert c.core(a).lead is not None and c.core(a).lead.phase.value == "acting"
    assert m in c.members_of(a) and m not in c.members_of(b)
    assert c.core(b).stats["finish_refused"] == 1
    c.run(12.0)
    assert c.violations == [] and c.vm_problems() == []


def test_a_late_ack_of_an_earlier_leads_round_renews_nothing() -> None:
    """n3 leads the partition twice (a new lead of the same id, as after a takeover), and
    an acknowledgement n4 sent for a round of the first lead arrives late, once n4 is
    cut off from n3. Before: round numbers restarted with each lead, so the late ack
    matched a round of the second lead sent long after n4 last heard from n3, and n3
    counted on n4 past the end of n4's own lease. Round numbers are now unique on a
    node across its leads."""
    c = FakeCluster(4, seed=5, config=CONFIG, ids=range(1, 5), solve_delay=60.0, monitor=False)
    for pos, n in enumerate(LOADS):
        c.add_vms(pos, [1.0] * n)
    view = c.install([LEADER, DEST, SOURCE, BYSTANDER], initiator=SOURCE, leader=LEADER)
    core = c.core(LEADER)
    out: list[Any] = []
    core._become_leader(view, (), 0, c.engine.now, out)
    c.engine.apply(c.nodes[LEADER], out)
    c.run(2.0)
    first = [
        m.seq for _, s, d, m in c.messages if (s, d) == (LEADER, BYSTANDER) and type(m) is KeepAlive
    ]
    assert len(first) >= 4
    # a second lead of the same partition id, at a later version
    out = []
    core._become_leader(replace(view, version=view.version + 2), (), 0, c.engine.now, out)
    c.engine.apply(c.nodes[LEADER], out)
    c.run(0.1)
    lead = core.lead
    assert lead is not None and BYSTANDER in c.positions(core.view.members)  # type: ignore[union-attr]
    renewed = lead.renewed[c.nodes[BYSTANDER].node_id]
    c.network.cut([LEADER], [BYSTANDER])
    c.run(2.0)
    assert max(lead.rounds) >= max(first)  # the second lead sent as many rounds
    bystander = c.nodes[BYSTANDER]
    for seq in first:  # n4's acks of the first lead's rounds, late
        late = KeepAliveAck(view.pid, seq)
        c.engine.apply(
            c.nodes[LEADER], core.on_message(bystander.addr, bystander.node_id, 0, late, now=c.now)
        )
    assert lead.renewed.get(bystander.node_id, renewed) == renewed
    c.run(CONFIG.lease_s)
    assert BYSTANDER not in c.members_of(LEADER)  # let go before n4's lease could end
