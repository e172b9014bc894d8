"""Underload consolidation (DVMS 1, off by default): a host whose VMs demand at most
``underload_cpu`` of its capacity waits a random delay below ``underload_delay_s``,
checks again, then asks a partition to move every VM away without overloading anyone;
a failed attempt holds the next one back for ``underload_backoff_s``."""

from __future__ import annotations

from dataclasses import replace

from dvms.partition.config import PartitionConfig
from dvms.testing.cluster import FakeCluster

ON = replace(PartitionConfig(), underload=True, recruitment="ring", min_partition_size=2)


def cluster(config: PartitionConfig = ON) -> FakeCluster:
    c = FakeCluster(4, seed=7, config=config, ids=range(1, 5), driver_delay=0.1)
    c.add_vms(0, [0.3, 0.2])  # 0.5 of 4 CPUs: 12.5 % <= 20 %
    c.add_vms(1, [1.0, 1.0])
    c.add_vms(2, [1.5, 1.0])
    c.add_vms(3, [3.0])
    return c


def test_an_underloaded_host_is_emptied():
    c = cluster()
    c.poke(0)
    assert c.core(0).view is None  # the random delay first
    c.run(5.0)
    (done,) = [e for (p, _), e in c.done.items() if p == 0]
    assert done.kind == "underload" and done.ok, done.reason
    assert c.hosts[0].vms == {}
    assert not any(h.overloaded() for h in c.hosts)
    assert len(c.hosts[0].vms) + sum(len(h.vms) for h in c.hosts[1:]) == 7
    assert c.vm_problems() == [] and c.violations == []


def test_off_by_default():
    c = cluster(replace(ON, underload=False))
    c.poke(0)
    c.run(5.0)
    assert c.done == {} and len(c.hosts[0].vms) == 2


def test_a_host_above_the_threshold_is_left_alone():
    c = cluster(replace(ON, underload_cpu=0.1))  # 12.5 % > 10 %
    c.poke(0)
    c.run(5.0)
    assert c.done == {}


def test_no_room_fails_and_backs_off():
    c = cluster()
    for pos in (1, 2, 3):
        c.set_demand(pos, 3.9)  # nobody can take 0.3 CPU more
    c.poke(0)
    c.run(5.0)
    (done,) = c.done.values()
    assert done.kind == "underload" and not done.ok
    assert len(c.hosts[0].vms) == 2
    c.poke(0)
    c.run(10.0)
    assert len(c.done) == 1  # within the 20 s back-off: no new attempt
    c.run(15.0)
    c.poke(0)
    c.run(5.0)
    assert len(c.done) == 2
