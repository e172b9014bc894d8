"""A retransmitted request (its answer was lost) must not be handled twice: each RPC
attempt carries a fresh request id, so the core answers a repeated Isp or CanMerge with
its first answer. Handling an Isp twice forked the partition's ISP token."""

from __future__ import annotations

from dvms.partition.messages import Isp, IspAck
from dvms.testing.cluster import FakeCluster


def test_a_repeated_isp_gets_the_same_answer_and_no_second_token():
    c = FakeCluster(5, seed=4, ids=range(1, 6), monitor=False, solve_delay=0.5)
    view = c.install([0], initiator=0, leader=0)
    isp = Isp(view, (), 1, False)
    c.deliver(0, 1, isp)
    c.run(0.01)
    joined = c.core(1).view
    assert joined is not None and joined.pid == view.pid  # node 1 joined and leads
    c.deliver(0, 1, isp)  # the retransmission (its IspAck "was lost")
    c.run(0.01)
    acks = [m.accepted for _, s, d, m in c.messages if isinstance(m, IspAck) and s == 1]
    assert acks == [True, True]
    assert c.core(1).view == joined  # nothing re-handled
    assert c.core(1).stats["duplicate_request"] == 1
    # only one token: nobody but node 1 (the leader) is in the partition with 0 and 1
    members = {p for p, v in enumerate(c.views()) if v is not None and v.pid == view.pid}
    assert members == {0, 1}
