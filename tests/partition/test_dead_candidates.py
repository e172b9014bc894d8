"""A dead recruitment candidate costs one short retry cycle (``isp_attempts`` = 4
attempts 0.5 s apart, no back-off), is reported to the overlay (its routing-table
contact is marked failed) and is skipped by the node's next ISPs for ``dead_peer_s``
unless it is heard from again. Before, an ISP to a dead candidate waited 7.5 s (4
attempts with back-off) at every lap."""

from __future__ import annotations

from dataclasses import replace

from dvms.partition.config import PartitionConfig
from dvms.partition.messages import Isp
from dvms.testing.cluster import FakeCluster

RING = replace(PartitionConfig(), recruitment="ring", min_partition_size=2)


def ring(loads: list[int], **kw) -> FakeCluster:
    c = FakeCluster(
        len(loads),
        seed=5,
        config=kw.pop("config", RING),
        ids=range(1, len(loads) + 1),
        monitor=False,
        **kw,
    )
    for i, n in enumerate(loads):
        c.add_vms(i, [1.0] * n)
    return c


def isps_to(c: FakeCluster, pos: int, since: float = 0.0) -> int:
    return sum(1 for t, _, d, m in c.messages if d == pos and isinstance(m, Isp) and t >= since)


def test_a_dead_candidate_costs_one_short_retry_and_is_reported():
    c = ring([5, 4, 1, 1])  # 1 overloaded; 2 (its ring successor) is dead
    c.crash(1)
    c.poke(0)
    c.run(10.0)
    (done,) = c.done.values()
    assert done.ok, done.reason
    # 4 x 0.5 s for node 2, then node 3 joins and solves (with back-off: 7.5 s)
    assert 2.0 <= done.finished - done.started < 2.5
    assert isps_to(c, 1) == 4
    assert c.core(0).stats["rpc_failed"] == 1 and c.core(0).stats["peers_reported"] == 1


def test_the_next_isp_skips_a_dead_candidate_at_once():
    c = ring([5, 4, 1, 1])
    c.crash(1)
    c.poke(0)
    c.run(5.0)
    c.add_vms(0, [1.5])  # overloaded again
    again = c.now
    c.poke(0)
    c.run(5.0)
    second = [e for e in c.done.values() if e.started >= again]
    assert len(second) == 1 and second[0].ok
    assert second[0].finished - second[0].started < 0.2
    assert isps_to(c, 1, since=again) == 0


def test_a_dead_peer_is_tried_again_after_dead_peer_s():
    c = ring([5, 4, 1, 1], config=replace(RING, dead_peer_s=3.0))
    c.crash(1)
    c.poke(0)
    c.run(5.0)
    c.add_vms(0, [1.5])
    again = c.now
    c.poke(0)
    c.run(5.0)
    assert isps_to(c, 1, since=again) == 4  # 5 s later: forgotten, tried (and failed) again
    assert c.core(0).stats["peers_reported"] == 2


def test_the_overlay_glue_marks_the_contact_failed():
    c = ring([5, 4, 1, 1])
    table = c.nodes[0].core.overlay.table
    # observed through the table (not by patching it: the compiled build's classes
    # cannot be patched, and this checks the effect rather than the call)
    assert table.get(2).failures == 0
    c.crash(1)
    c.poke(0)
    c.run(2.1)  # the ISP's attempts are over, the overlay's own probes are not
    entry = table.get(2)
    assert entry is not None and entry.failures == 1  # one failure, still in the table
    assert all(e.failures == 0 for e in table.index.values() if e.contact.node_id != 2)
