"""A stopping node releases its partition at once instead of leaving it to leases."""

from dataclasses import replace

from dvms.partition.config import PartitionConfig
from dvms.partition.core import PartitionReleased
from dvms.partition.messages import LaunchVm
from dvms.testing.cluster import FakeCluster


def test_leader_shutdown_frees_every_member_within_a_round_trip():
    cfg = replace(PartitionConfig(), min_partition_size=3, recruitment="ring")
    c = FakeCluster(5, seed=4, config=cfg, solve_delay=3.0, monitor=True)
    c.add_vms(0, [1.0] * 5)  # 5 busy vCPUs on a 4-CPU host: overloaded
    c.run(2.0)  # the partition has grown to 3 and its leader is solving (3 s)
    leader = next(p for p in range(5) if c.core(p).lead is not None)
    members = [p for p in range(5) if c.core(p).view is not None]
    assert len(members) >= 3
    t0 = c.engine.now
    c.engine.apply(c.nodes[leader], c.core(leader).shutdown(now=t0))
    c.run(0.05)  # far less than the 3.5 s lease
    assert all(c.free()), c.views()
    released = {p for p, e, t in c.events_of(PartitionReleased) if t >= t0}
    assert set(members) <= released
    c.run(5.0)
    assert c.core(leader).view is None  # a stopping node starts nothing new


def test_shutdown_fails_pending_launches_and_leaves_quietly_as_member():
    cfg = replace(PartitionConfig(), min_partition_size=3)
    c = FakeCluster(4, seed=2, config=cfg, solve_delay=2.0, monitor=False)
    eid = c.launch(1, [LaunchVm("a", "", 1, 512)])
    c.run(0.5)
    member = next(
        p for p in range(4) if p != 1 and c.core(p).view is not None and c.core(p).lead is None
    )
    c.engine.apply(c.nodes[member], c.core(member).shutdown(now=c.engine.now))
    assert c.core(member).view is None
    c.run(5.0)
    assert c.done[(1, eid)].ok  # the others placed the VM without the departed member
    # The entry node stops with a launch still queued: it ends as failed, not lost.
    eid2 = c.launch(1, [LaunchVm("b", "", 1, 512)])
    c.engine.apply(c.nodes[1], c.core(1).shutdown(now=c.engine.now))
    assert not c.done[(1, eid2)].ok and c.done[(1, eid2)].reason == "node shutting down"
