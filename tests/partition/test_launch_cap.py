"""The partition cap bounds the solver's problem, not the search: a launch whose only
solution lies beyond the ``max_partition_size`` nearest free nodes is still placed.

Reproduces the launch-1000 failure in small: every initiator shares one recruitment
order (``ring``: node-id order; ``vivaldi`` used to rank peers without coordinates by id
too, but now draws among equally near peers at random), the nearest hosts all
hold a VM, and the vjob has a coschedule-0 VM that needs an empty host. Before the
second lap slid past its first-lap members, it ended at once at the cap and the launch
failed "no solution after two laps" on every attempt while 20 hosts were empty.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from dvms.partition.config import PartitionConfig
from dvms.partition.core import PartitionChanged
from dvms.partition.messages import LaunchVm, WireConstraint
from dvms.testing.cluster import FakeCluster

LAN_RTT_S = 50e-6
CAP = 8


def crowded_cluster(seed: int) -> FakeCluster:
    """60 nodes, ids in position order; hosts 0..39 hold one VM, 40..59 are empty."""
    c = FakeCluster(
        60,
        seed=seed,
        ids=range(1, 61),
        rtt_s=LAN_RTT_S,
        solve_delay="model",
        driver_delay=0.0,
        config=replace(
            PartitionConfig(), max_partition_size=CAP, min_partition_size=2, recruitment="ring"
        ),
        monitor=False,
    )
    for pos in range(40):
        c.add_vms(pos, [0.2])
    return c


@pytest.mark.parametrize("seed", [1, 2])
def test_a_launch_beyond_the_cap_is_placed(seed: int) -> None:
    c = crowded_cluster(seed)
    vms = [
        LaunchVm("web0", "", 1, 512),
        LaunchVm("web1", "", 1, 512),
        LaunchVm("db", "", 1, 512, coschedule=0),
    ]
    eid = c.launch(0, vms, [WireConstraint("spread", ("web0", "web1"))])
    c.run(10.0)
    done = c.done.get((0, eid))
    assert done is not None and done.ok, done
    where = {p.vm: int(p.host.removeprefix("h")) for p in done.placed}
    assert where["db"] >= 40 and list(c.hosts[where["db"]].vms) == ["db"]
    assert where["web0"] != where["web1"]
    assert all(c.created.get(v.name) == 1 for v in vms)
    # no partition ever exceeded the cap (plus the node joining it), and all are freed
    sizes = [len(e.view.members) for _, e, _ in c.events_of(PartitionChanged)]
    assert max(sizes) <= CAP + 1
    assert sum(c.core(p).stats["slides"] for p in range(60)) >= 1
    assert all(c.free()) and c.violations == [] and c.vm_problems() == []


def test_slid_members_are_released_at_once_not_by_lease() -> None:
    c = crowded_cluster(3)
    vms = [LaunchVm("db", "", 1, 512, coschedule=0)]
    c.launch(0, vms)
    released: dict[int, float] = {}
    joined: dict[int, float] = {}
    c.run(10.0)
    for pos, event, when in c.log:
        if isinstance(event, PartitionChanged):
            joined.setdefault(pos, when)
        elif type(event).__name__ == "PartitionReleased":
            released.setdefault(pos, when)
    slid = [p for p in joined if 1 <= p < 40]
    assert slid, "the partition never grew over the crowded hosts"
    # released by Dissolve within milliseconds, far below the lease (4.5 s)
    assert max(released[p] for p in slid) < 1.0
    assert c.done and all(d.ok for d in c.done.values())
