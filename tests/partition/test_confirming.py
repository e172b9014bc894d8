"""A leader with a plan confirms its Finishing view before any action starts (phase
``confirming``): who it may let go then, when the plan starts, and what a node does with
a Finishing view or a forked copy's ISP meanwhile.

Most tests use a hand-made partition: leader n3 (full host), members n2 (room), n1
(overloaded: the initiator and the overload event's origin) and n4 (full: takes no part
in the plan). Ids 1..4 at positions 0..3, 4-CPU hosts, 10 s migrations.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from dvms.partition.base import OwnEvent
from dvms.partition.config import PartitionConfig
from dvms.partition.messages import (
    BLOCKED,
    FINISHING,
    GROWING,
    Event,
    Isp,
    KeepAlive,
    KeepAliveAck,
    LaunchVm,
    MemberState,
    SetPartition,
    StillValid,
    Valid,
)
from dvms.testing.cluster import FakeCluster

CONFIG = replace(PartitionConfig(), recruitment="ring", min_partition_size=2)
LEADER, DEST, SOURCE, BYSTANDER = 2, 1, 0, 3


def partition(
    solve_delay: float = 0.01, *, initiator: int = SOURCE, bystander: int = 4
) -> FakeCluster:
    """The partition of the module docstring, its leader collecting from now on;
    ``bystander``: the VMs on n4's host (4: full)."""
    c = FakeCluster(
        4,
        seed=5,
        config=CONFIG,
        ids=range(1, 5),
        driver_delay=10.0,
        solve_delay=solve_delay,
        monitor=False,
    )
    # over, room, full, full; the initiator's host is the overloaded one
    loads = (5, 1, 4, bystander) if initiator == SOURCE else (4, 1, 5, bystander)
    for pos, n in enumerate(loads):
        c.add_vms(pos, [1.0] * n)
    view = c.install([LEADER, DEST, SOURCE, BYSTANDER], initiator=initiator, leader=LEADER)
    out: list[Any] = []
    c.core(LEADER)._become_leader(view, (), 0, c.engine.now, out)
    c.engine.apply(c.nodes[LEADER], out)
    return c


def confirming() -> FakeCluster:
    """The partition, its leader waiting for n4's answer to its Finishing view (n4 is
    cut off from it once it reported its host)."""
    c = partition(solve_delay=0.5)
    while phase(c, LEADER) == "collecting":
        c.run(0.01)
    c.network.cut([LEADER], [BYSTANDER])
    c.run(0.6)
    assert phase(c, LEADER) == "confirming"
    return c


def phase(c: FakeCluster, pos: int) -> str | None:
    lead = c.core(pos).lead
    return None if lead is None else lead.phase.value


def sent(c: FakeCluster, src: int, dst: int, kind: type, since: float) -> list[Any]:
    return [
        m
        for t, s, d, m in c.messages
        if s == src and d == dst and t >= since and isinstance(m, kind)
    ]


def test_forked_copies_never_both_apply_a_plan_for_one_launch() -> None:
    """Two leaders of forked copies of one partition (same id, same launch event) both
    reach a plan; the initiator and origin m adopts the first one's Finishing view and
    refuses the second's. Before: the second let m go and applied its own plan, booting
    the launch's VM a second time on its own host. Now, before any action has started,
    losing the initiator or an event's origin abandons the plan: the partition is
    dissolved and the copy m follows places the VM, once."""
    m, a, b = 0, 1, 2
    c = FakeCluster(
        3,
        seed=7,
        config=CONFIG,
        ids=range(1, 4),
        rtt_s=0.02,
        driver_delay=0.5,
        monitor=False,
        check_period_s=0.002,
    )
    c.add_vms(m, [1.0] * 4)  # full: the VM goes to a's or b's host
    vm = LaunchVm("web", "shop", 1, 512)
    c.expected_vms.add("shop/web")
    ini = c.core(m)
    event = Event("launch", ini.me, ini.rng.getrandbits(63), (vm,), ())
    ini.own[event.event_id] = OwnEvent(event, 0.0, attempts=1, in_flight=True)
    view = c.install([m], initiator=m, leader=m, overload=False)
    view = replace(view, events=(event,))
    out: list[Any] = []
    ini._adopt(view, c.engine.now, out, "leader")
    c.engine.apply(c.nodes[m], out)
    c.fork(view, m, {a: 0.0, b: 0.004})
    c.run(0.5)
    assert c.core(b).stats["finish_refused"] == 1
    assert c.core(b).stats["plan_abandoned"] == 1
    assert c.core(b).view is None  # dissolved before any action started
    c.run(5.0)
    assert c.created == {"shop/web": 1}
    (done,) = c.done.values()
    assert done.ok, done.reason
    assert c.violations == [] and c.vm_problems() == []


@pytest.mark.parametrize("state", [GROWING, BLOCKED])
def test_an_initiator_leading_its_plan_ignores_a_forked_copys_returning_isp(
    state: str,
) -> None:
    """The initiator leads the copy of its partition that found a plan, and a forked
    copy's ISP comes home to it. Before: it ended the lap as if it held no lead, adopting
    a Blocked view (with its Lead still set) or, for a Blocked ISP, failing its event
    and dissolving its own plan while the migration ran."""
    c = partition(initiator=LEADER)
    c.run(0.5)
    core = c.core(LEADER)
    assert phase(c, LEADER) == "acting"
    mine = core.view
    assert mine is not None and mine.state == FINISHING
    copy = replace(mine, state=state, version=mine.version + 4, leader=c.contact(BYSTANDER))
    c.deliver(BYSTANDER, LEADER, Isp(copy, (), 3, True))
    c.run(0.05)
    assert phase(c, LEADER) == "acting" and core._holding is None
    assert core.view is not None and core.view.state == FINISHING
    c.run(12.0)
    (done,) = c.done.values()
    assert done.ok, done.reason
    assert c.violations == [] and c.vm_problems() == []


def test_a_dropped_member_is_told_no_and_gets_no_keepalive_round() -> None:
    """A member the leader dropped before its plan (here while solving) probes it.
    Before: its earlier renewal was still on record, so the leader answered yes and sent
    it keep-alive rounds, holding it in the partition without counting on it."""
    c = partition(solve_delay=5.0)
    c.run(0.1)
    core = c.core(LEADER)
    assert phase(c, LEADER) == "solving"
    out: list[Any] = []
    core._drop_member(c.contact(BYSTANDER), "test", c.engine.now, out)
    c.engine.apply(c.nodes[LEADER], out)
    assert core.lead is not None and c.by_id[4] not in core.lead.renewed
    view = core.view
    assert view is not None
    since = c.engine.now
    c.deliver(BYSTANDER, LEADER, StillValid(view.pid, view.version, leading=True))
    c.run(1.0)
    assert [v.ok for v in sent(c, LEADER, BYSTANDER, Valid, since)] == [False]
    assert sent(c, LEADER, BYSTANDER, KeepAlive, since) == []


def test_a_leader_confirming_its_plan_is_acting_for_a_stopping_daemon() -> None:
    """A daemon stopping waits while ``acting()``: before, a plan being confirmed did not
    count, so a leader could stop between its solution and its first action."""
    c = confirming()
    assert c.core(LEADER).acting()


def test_a_member_let_go_while_confirming_no_longer_holds_the_plan_up() -> None:
    """n4 is cut off while its leader solves. Before: its lease lapsed on the leader's
    side (~3 s) but the plan waited for its Finishing request to run out (4 x 0.5 s
    after the solution: ~4 s). Now the plan starts as soon as it is let go."""
    c = partition(solve_delay=2.0)
    while phase(c, LEADER) == "collecting":
        c.run(0.01)
    c.network.cut([LEADER], [BYSTANDER])
    while phase(c, LEADER) in ("collecting", "solving"):
        c.run(0.01)
    assert phase(c, LEADER) == "confirming"
    while phase(c, LEADER) == "confirming":
        c.run(0.01)
    assert phase(c, LEADER) == "acting"
    assert c.engine.now < 3.5
    assert BYSTANDER not in c.members_of(LEADER)
    assert c.core(LEADER).stats["member_lease_lapsed"] == 1


def test_a_member_following_another_leader_lets_the_plan_start_at_once() -> None:
    """While the leader confirms, a silent member tells it (a keep-alive acknowledged
    with seq 0) that it follows another leader: the plan starts without waiting."""
    c = confirming()
    core = c.core(LEADER)
    view = core.view
    assert view is not None
    bystander = c.nodes[BYSTANDER]
    out = core.on_message(
        bystander.addr, bystander.node_id, 0, KeepAliveAck(view.pid, 0), now=c.now
    )
    c.engine.apply(c.nodes[LEADER], out)
    assert phase(c, LEADER) == "acting"
    assert BYSTANDER not in c.members_of(LEADER)


def test_a_free_node_refuses_a_finishing_view_of_a_partition_it_is_not_in() -> None:
    """A retransmitted Finishing SetPartition reaches a node that already left that
    partition. Before: it adopted the view and then refused every other partition for a
    lease, counted on by no plan."""
    c = partition()
    c.run(0.5)
    view = c.core(LEADER).view
    assert view is not None and view.state == FINISHING
    out: list[Any] = []
    c.core(BYSTANDER)._dissolve("left", c.engine.now, out, notify=False)
    c.engine.apply(c.nodes[BYSTANDER], out)
    since = c.engine.now
    c.deliver(LEADER, BYSTANDER, SetPartition(view))
    c.run(0.05)
    assert c.core(BYSTANDER).view is None
    answers = sent(c, BYSTANDER, LEADER, MemberState, since)
    assert answers and all(a.host is None for a in answers)
    assert c.core(BYSTANDER).stats["refused_finishing"] == 1


def _plan_hosts(c: FakeCluster) -> set[str]:
    lead = c.core(LEADER).lead
    assert lead is not None and lead.outcome is not None
    return {h for a in lead.outcome.actions for h in (a.src, a.dst) if h is not None}


def _cut_dest_while_confirming(c: FakeCluster) -> None:
    """Cut n2 (the plan's destination) off from the leader once it reported its host:
    it never answers the Finishing view and is let go while the plan is confirmed."""
    while phase(c, LEADER) == "collecting":
        c.run(0.01)
    c.network.cut([LEADER], [DEST])
    while phase(c, LEADER) == "solving":
        c.run(0.01)
    assert phase(c, LEADER) == "confirming"
    assert c.hosts[DEST].name in _plan_hosts(c)  # the first plan counts on n2


def test_a_plan_counting_on_a_member_let_go_is_solved_again_without_it() -> None:
    """A relief: n2, the destination of the plan's migration, is let go while the leader
    confirms the plan (cut off). Before: the plan ran with its migration failing ("host
    left the partition"), and the overload event failed although n4 had room. Now the
    plan is solved again on the hosts left and the VM goes to n4."""
    c = partition(solve_delay=0.5, bystander=2)
    _cut_dest_while_confirming(c)
    c.run(20.0)
    (done,) = c.done.values()
    assert done.ok, done.reason
    assert c.host_of("h0-vm0") == [BYSTANDER]
    core = c.core(LEADER)
    assert core.stats["plan_resolved"] == 1 and core.stats["action_failed"] == 0
    assert c.violations == [] and c.vm_problems() == []


def test_a_plan_with_no_solution_without_a_member_let_go_is_abandoned() -> None:
    """As above with n4 full: without n2 there is no plan; it is abandoned before any
    action starts (every member told), instead of running a migration bound to fail."""
    c = partition(solve_delay=0.5)
    _cut_dest_while_confirming(c)
    c.run(20.0)
    (done,) = c.done.values()
    assert not done.ok and "no plan without the members let go" in done.reason
    core = c.core(LEADER)
    assert core.stats["plan_resolved"] == 1 and core.stats["plan_abandoned"] == 1
    assert core.stats["actions"] == core.stats["action_failed"] == 0
    assert c.violations == [] and c.vm_problems() == []


def test_a_launch_counting_on_a_member_let_go_is_placed_on_the_hosts_left() -> None:
    """A launch: the first plan boots the VM on n2, let go while the plan is confirmed.
    Before: the boot failed ("host left the partition") and the origin had to retry the
    whole launch; now the plan is solved again and the VM boots on n4, once."""
    c = FakeCluster(
        4,
        seed=5,
        config=CONFIG,
        ids=range(1, 5),
        driver_delay=1.0,
        solve_delay=0.5,
        monitor=False,
    )
    for pos, n in enumerate((4, 1, 4, 2)):
        c.add_vms(pos, [1.0] * n)
    vm = LaunchVm("web", "shop", 1, 512)
    c.expected_vms.add("shop/web")
    ini = c.core(SOURCE)
    event = Event("launch", ini.me, ini.rng.getrandbits(63), (vm,), ())
    ini.own[event.event_id] = OwnEvent(event, 0.0, attempts=1, in_flight=True)
    view = c.install(
        [LEADER, DEST, SOURCE, BYSTANDER], initiator=SOURCE, leader=LEADER, overload=False
    )
    view = replace(view, events=(event,))
    out: list[Any] = []
    c.core(LEADER)._become_leader(view, (), 0, c.engine.now, out)
    c.engine.apply(c.nodes[LEADER], out)
    _cut_dest_while_confirming(c)
    c.run(20.0)
    (done,) = c.done.values()
    assert done.ok, done.reason
    assert c.created == {"shop/web": 1} and c.host_of("shop/web") == [BYSTANDER]
    assert c.core(LEADER).stats["plan_resolved"] == 1
    assert ini.stats["partitions_started"] == 0  # not retried in a new partition
    assert c.violations == [] and c.vm_problems() == []


def test_an_answer_to_the_finishing_view_renews_the_leaders_lease() -> None:
    """n1 (the source, initiator and origin) answers the Finishing view, then every
    link of n3 is cut. Before: the answer renewed nothing, so n3 let go of n1 at its
    3.5 s keep-alive tick (its last acknowledged round was sent at 0.5 s). The member
    renewed its own lease on the Finishing view, sent later (~0.7 s): the leader now
    counts on it until its 4.0 s tick, still before n1's own lease ends."""
    c = partition(solve_delay=0.7)
    while phase(c, LEADER) != "acting":
        c.run(0.001)
    lead = c.core(LEADER).lead
    assert lead is not None
    source = c.nodes[SOURCE].node_id
    sent = c.engine.now - c.rtt_s  # the Finishing view went out one round trip ago
    assert lead.renewed[source] >= sent - 1e-9
    c.network.cut([LEADER], [DEST, SOURCE, BYSTANDER])
    c.run_until(3.6)
    assert SOURCE in c.members_of(LEADER)
    c.run_until(4.1)
    assert SOURCE not in c.members_of(LEADER)  # let go...
    assert c.core(SOURCE).lease_until > 4.1  # ...before n1's own lease ended
