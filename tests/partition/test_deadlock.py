"""The DVMS authors' deadlock case (``DvmsDeadlockTest.scala``, "resolve a linear
deadlock"): 8 nodes in four 2-node Growing partitions, all overloaded (load 110 %).

Built by hand as the authors do: each pair {odd, even} gets one Growing partition
(initiator = the even node, leader = the odd node, as their ``partition_1_2`` ...), nobody
is solving, and the four initiators pass their ISP on at the same instant
(``BeginTransmission``). Every ISP meets the next partition: a Growing partition is
skipped, the laps end, partitions go Blocked and merge by rank, and finally fail (no
solution exists: every host is over capacity). Pass: every node is free again within
10 virtual seconds and every event that was raised has ended at its origin.

A second test reaches a deadlock naturally: all eight monitors fire at the same instant,
so every node starts a 1-node partition and every ISP finds only busy nodes.
"""

from dataclasses import replace

import pytest

from dvms.partition.config import PartitionConfig
from dvms.partition.core import PartitionChanged, PartitionReleased
from dvms.partition.messages import BLOCKED
from dvms.testing.cluster import FakeCluster

CONFIGS = {
    "ring": replace(PartitionConfig(), recruitment="ring"),
    "vivaldi": PartitionConfig(),
    "random": replace(PartitionConfig(), recruitment="random"),
}


def overloaded_cluster(config: PartitionConfig, seed: int) -> FakeCluster:
    c = FakeCluster(8, seed=seed, config=config, ids=range(1, 9), monitor=False)
    for i in range(8):
        c.add_vms(i, [1.1] * 4)  # 4.4 CPUs on 4: 110 %
    return c


def assert_quiet(c: FakeCluster, deadline: float) -> None:
    assert all(c.free()), [v and v.pid for v in c.views()]
    assert c.started, "no event was raised"
    assert c.pending_events() == []  # every event resolved or reported at its origin
    assert all(e.finished <= deadline for e in c.done.values())
    assert c.violations == [] and c.vm_problems() == []


@pytest.mark.parametrize("strategy", sorted(CONFIGS))
def test_authors_linear_deadlock_resolves_within_10_s(strategy):
    c = overloaded_cluster(CONFIGS[strategy], seed=1)
    pairs = [(0, 1), (2, 3), (4, 5), (6, 7)]  # (leader, initiator): nodes (1, 2), (3, 4) ...
    views = [c.install([lead, ini], initiator=ini, leader=lead) for lead, ini in pairs]
    for _, ini in pairs:
        c.begin_transmission(ini)
    c.run(10.0)
    assert_quiet(c, 10.0)
    # Each installed partition was released by every one of its members.
    released = {(p, e.pid) for p, e, _ in c.events_of(PartitionReleased)}
    for (lead, ini), v in zip(pairs, views, strict=True):
        assert (lead, v.pid) in released and (ini, v.pid) in released
    # The four original events ended (failed: there is no room anywhere).
    originals = {(ini, eid) for (ini, eid) in c.done if ini in {1, 3, 5, 7}}
    assert len([k for k in c.started if k[0] in {1, 3, 5, 7}]) >= 4
    assert len(originals) >= 4 and not any(c.done[k].ok for k in originals)
    # The deadlock machinery ran: partitions went Blocked (ring order forces merges).
    assert any(e.view.state == BLOCKED for _, e, _ in c.events_of(PartitionChanged))
    if strategy == "ring":
        assert sum(c.core(i).stats["merges"] for i in range(8)) >= 1


@pytest.mark.parametrize("seed", range(3))
def test_simultaneous_overloads_deadlock_resolves(seed):
    c = overloaded_cluster(CONFIGS["ring"], seed)
    for i in range(8):
        c.poke(i)
    c.run(10.0)
    assert_quiet(c, 10.0)
    assert len({k for k in c.started}) >= 8
