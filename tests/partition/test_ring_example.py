"""The ring worked example of dvms-isp.md §2.3 (DVMS 2-ring), on the real cores.

Ring 1 -> 2 -> 3 -> 4 -> 5 -> 1 (node ids 1..5). Node 4 overloads first and its partition
Q = {5, 4} (started by 4, led by 5) is busy solving. Then node 2 overloads: P = {2}, ISP
to 3; 3 joins and leads P = {3, 2}, finds nothing (3 is full) and sends the ISP to 4;
4 belongs to Q, so it forwards straight past Q to 1 (the shortcut: 5 never sees P's
ISP); 1 is free, joins, leads P = {1, 3, 2}, solves and acts; 1, 2, 3 are free again.
"""

from dataclasses import replace

from dvms.partition.config import PartitionConfig
from dvms.partition.core import PartitionChanged
from dvms.partition.messages import BLOCKED, Isp, SetPartition
from dvms.testing.cluster import FakeCluster

RING = replace(PartitionConfig(), recruitment="ring", min_partition_size=2)


def pos(node: int) -> int:
    return node - 1  # node id i sits at position i - 1


def build(*, node1_busy: bool = False) -> FakeCluster:
    # Q's leader (node 5) takes 2 s to solve: Q is busy while P travels.
    c = FakeCluster(
        5,
        seed=7,
        config=RING,
        ids=range(1, 6),
        solve_delay=lambda p: 2.0 if p == pos(5) else 0.01,
        driver_delay=0.2,
    )
    c.add_vms(pos(1), [1.0] * (4 if node1_busy else 1))  # room for one more VM unless busy
    c.add_vms(pos(2), [1.0] * 5)  # overloaded (4 CPUs)
    c.add_vms(pos(3), [1.0] * 4)  # full: no room
    c.add_vms(pos(4), [1.0] * 5)  # overloaded
    c.add_vms(pos(5), [1.0] * 1)  # room for Q's VM
    c.poke(pos(4))
    c.run(0.1)
    c.poke(pos(2))
    return c


def isp_path(c: FakeCluster, initiator: int) -> list[tuple[int, int, Isp]]:
    """(src node, dst node, msg) of every ISP hop of the partitions ``initiator`` started
    (retransmissions included), in send order."""
    return [
        (s + 1, d + 1, m)
        for _, s, d, m in c.messages
        if isinstance(m, Isp) and m.view.initiator.node_id == initiator
    ]


def test_ring_example_shortcut_over_a_busy_partition():
    c = build()
    c.run(0.5)
    views = c.views()
    # Q = {5, 4}: started by 4, led by 5, still solving.
    q = views[pos(4)]
    assert q is not None and q.initiator.node_id == 4 and q.leader.node_id == 5
    assert [m.node_id for m in q.members] == [5, 4]
    assert views[pos(5)] is not None and views[pos(5)].pid == q.pid

    # P's ISP went 2 -> 3 -> 4 -> 1: one hop from 4 to 1 skips all of Q.
    path = isp_path(c, 2)
    assert [(s, d) for s, d, _ in path] == [(2, 3), (3, 4), (4, 1)]
    assert all(d != 5 for _, d, _ in path)
    _, _, shortcut = path[-1]
    assert {4, 5} <= set(shortcut.skip) and not shortcut.returning
    assert c.core(pos(4)).stats["shortcut"] == 1

    # The leader moved to the newest node at every growth step: 2, then 3, then 1.
    leaders = [
        n + 1
        for n, e, _ in c.events_of(PartitionChanged)
        if e.role == "leader" and e.view.initiator.node_id == 2
    ]
    assert leaders == [2, 3, 1]

    c.run(3.0)
    done = [e for (p, _), e in c.done.items() if p == pos(2)]
    assert len(done) == 1 and done[0].ok, done
    assert done[0].partition_size == 3 and done[0].migrations >= 1
    # The plan could only use node 1's room: node 2 is relieved onto node 1.
    assert not c.hosts[pos(2)].overloaded()
    assert len(c.hosts[pos(1)].vms) == 2 and len(c.hosts[pos(3)].vms) == 4
    # Q solved too (onto 5), and everybody is free; nothing lost, no invariant broken.
    assert any(e.ok for (p, _), e in c.done.items() if p == pos(4))
    assert all(c.free())
    assert c.vm_problems() == [] and c.violations == []


def test_ring_example_with_node1_busy_goes_blocked_for_a_second_lap():
    """ "Had node 1 also been busy, the ISP would have reached 2 (its initiator) -> P
    becomes Blocked and goes round again." Here node 1 is full instead of busy: P grows
    to {1, 3, 2}, finds nothing, and the lap ends at 2."""
    c = build(node1_busy=True)
    c.run(0.5)
    blocked = [
        e.view
        for n, e, _ in c.events_of(PartitionChanged)
        if n == pos(2) and e.view.state == BLOCKED
    ]
    assert blocked, "P never became Blocked"
    v = blocked[0]
    assert v.lap == 2 and {m.node_id for m in v.members} == {1, 2, 3}
    # Every member was told (DVMS: ChangeTheStateOfThePartition(Blocked)).
    told = {d + 1 for _, s, d, m in c.messages if isinstance(m, SetPartition) and m.view == v}
    assert told == {1, 3}
    # Node 1 had no candidate left (4 and 5 were skipped): it sent the ISP home to 2.
    # (the second lap has nobody left to visit either: 4 shortcuts it home at once).
    first_lap = [(s, d) for s, d, m in isp_path(c, 2) if m.returning and m.view.lap == 1]
    assert first_lap[0] == (1, 2)
    c.run(10.0)
    ends = sorted((e for (p, _), e in c.done.items() if p == pos(2)), key=lambda e: e.started)
    assert ends and not ends[0].ok
    assert ends[0].reason.startswith("no host fits ")  # the solver's why: VMs, hosts, rules
    # The failed event is re-detected by the monitor at its next round (every 1 s), not
    # re-raised the instant it failed: one event per node 2 monitor round at most.
    starts = sorted(t for (p, _), (_, t) in c.started.items() if p == pos(2))
    assert len(starts) <= 1 + int(c.now / RING.monitor_period_s), starts[:20]
    assert c.violations == [] and c.vm_problems() == []
