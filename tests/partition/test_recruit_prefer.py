"""A launch of VMs scheduled on one host recruits that host first (``launch(prefer=...)``):
its partition is the origin and that host, instead of growing through random nodes until
the host joins (on one LAN the strategies cannot rank peers)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from dvms.overlay.messages import Contact
from dvms.partition.config import PartitionConfig
from dvms.partition.messages import GROWING, Isp, LaunchVm, PartitionView
from dvms.partition.recruit import next_candidate
from dvms.testing.cluster import FakeCluster

NODES = 12
HOST = 7  # the host the VMs are scheduled on
SEEDS = range(1, 7)


def launch(seed: int, prefer: tuple[int, ...]) -> tuple[FakeCluster, int]:
    c = FakeCluster(NODES, seed=seed, config=replace(PartitionConfig(), recruitment="random"))
    vms = [LaunchVm(f"vm{i}", "big", 1, 512, schedule=f"h{HOST}") for i in range(4)]
    eid = c.launch(0, vms, prefer=prefer)
    c.run(10.0)
    return c, eid


def first_isp_target(c: FakeCluster) -> int:
    return next(dst for _, src, dst, msg in c.messages if src == 0 and isinstance(msg, Isp))


@pytest.mark.parametrize("seed", SEEDS)
def test_the_host_a_launch_is_scheduled_on_is_recruited_first(seed):
    c, eid = launch(seed, prefer=(HOST,))
    done = c.done[(0, eid)]
    assert done.ok, done.reason
    assert {p.host for p in done.placed} == {f"h{HOST}"}
    assert first_isp_target(c) == HOST
    assert done.partition_size == 2
    assert c.violations == [] and c.vm_problems() == []


def test_without_it_the_partition_grows_through_other_nodes():
    # what the preference saves: the same launches, recruited at random
    sizes = []
    for seed in SEEDS:
        c, eid = launch(seed, prefer=())
        assert c.done[(0, eid)].ok
        sizes.append(c.done[(0, eid)].partition_size)
    assert max(sizes) > 2


def test_a_preferred_node_that_is_a_member_or_skipped_gives_way_to_the_strategy():
    c = FakeCluster(4, seed=3)
    core = c.core(0)
    me, two, three = c.contact(0), c.contact(2), c.contact(3)
    view = PartitionView(1, 1, me, me, (me, two), GROWING, ())
    rng = c.rng
    pick = next_candidate("ring", core.overlay, view, set(), rng, prefer=(two, three))
    assert pick == three  # two is a member already
    ring = next_candidate("ring", core.overlay, view, {three.node_id}, rng)
    assert next_candidate("ring", core.overlay, view, {three.node_id}, rng, prefer=(three,)) == ring
    # a node the routing table does not hold is recruited too (its origin named it)
    stranger = Contact(12345, "n99", 7000)
    assert next_candidate("ring", core.overlay, view, set(), rng, prefer=(stranger,)) == stranger
