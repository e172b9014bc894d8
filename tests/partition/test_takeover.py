"""Leader crash (DVMS 2, S4: the detecting member makes itself leader of the partition
minus the failed node; an initiator crash dissolves it). The member first in line (the
newest member but the leader) probes a leader it has not heard from for ``suspect_s``
and takes over when the probe goes unanswered, well within the members' lease; before,
the partition just expired and its event failed ("lease expired").

Ring clusters as in test_transitions: ids 1..n at positions 0..n-1, 4-CPU hosts."""

from __future__ import annotations

from dataclasses import replace

from dvms.partition.config import PartitionConfig
from dvms.partition.events import PartitionChanged
from dvms.partition.messages import Dissolve, LaunchVm, MemberState, SetPartition, StillValid
from dvms.partition.timers import PartitionTimer
from dvms.testing.cluster import FakeCluster

RING = replace(PartitionConfig(), recruitment="ring", min_partition_size=2)
LOAD = {"over": 5, "full": 4, "room": 1}


def ring(loads: str, slow: dict[int, float] | None = None, **kw) -> FakeCluster:
    words = loads.split()
    slow = slow or {}
    c = FakeCluster(
        len(words),
        seed=3,
        config=kw.pop("config", RING),
        ids=range(1, len(words) + 1),
        solve_delay=lambda p: slow.get(p + 1, 0.01),
        monitor=False,
        **kw,
    )
    for i, w in enumerate(words):
        c.add_vms(i, [1.0] * LOAD[w])
    return c


def members(c: FakeCluster, pos: int) -> list[int] | None:
    v = c.views()[pos]
    return None if v is None else [m.node_id for m in v.members]


def test_the_first_in_line_takes_over_from_a_crashed_leader_and_solves():
    # 1 overloaded -> 2 (full) joins, no plan -> 3 joins and solves slowly; 3 crashes.
    c = ring("over full room room", slow={3: 1.0})
    c.poke(0)
    c.run_until(0.3)
    assert members(c, 0) == [3, 2, 1]
    c.crash(2)
    c.run_until(2.9)
    assert c.core(1).stats["takeovers"] == 0  # probing: 1 s of silence + 4 x 0.5 s
    c.run_until(3.3)
    assert c.core(1).stats["takeovers"] == 1
    c.run(3.0)
    (done,) = c.done.values()
    assert done.ok, done.reason
    assert done.partition_size == 3  # {4, 2, 1}: 3 left out, 4 recruited after it
    assert done.finished < 3.5  # before any lease would have expired
    assert not c.hosts[0].overloaded()
    assert [p for p in range(4) if p != 2 and not c.free()[p]] == []
    probes = [m for _, s, d, m in c.messages if isinstance(m, StillValid) and m.leading]
    assert {(s, d) for _, s, d, m in c.messages if isinstance(m, StillValid) and m.leading} == {
        (1, 2)
    }  # only the first in line asked, and only the dead leader
    assert len(probes) == 4
    assert c.violations == [] and c.vm_problems() == []


def test_without_takeover_the_same_crash_costs_the_event():
    """The control: a probe that finds the leader alive and not leading (it handed the
    ISP on) starts no takeover, and a partition nobody leads expires with its lease."""
    c = ring("over full room")
    c.install([1, 0], initiator=0, leader=1)  # 2 is named leader but leads nothing
    c.run(3.4)
    assert members(c, 0) == [2, 1] and c.core(0).stats["takeovers"] == 0
    probes = [(s, d) for _, s, d, m in c.messages if isinstance(m, StillValid) and m.leading]
    assert probes == [(0, 1)]
    c.run(0.3)
    assert members(c, 0) is None and members(c, 1) is None
    assert [e.reason for e in c.done.values()] == ["lease expired"]


def test_a_crashed_leader_that_was_the_initiator_dissolves_at_once():
    c = ring("over full full")
    c.install([1, 0], initiator=0, leader=0)  # the initiator leads (as after a lap end)
    c.crash(0)
    c.run(3.2)  # 1 s of silence + 2 s of probing < the 3.5 s lease
    assert c.core(1).stats["takeovers"] == 1
    assert members(c, 1) is None
    assert c.violations == []


def test_a_takeover_outranks_a_late_view_of_the_old_leader():
    c = ring("over full room room", slow={3: 1.0})
    c.poke(0)
    c.run_until(0.3)
    old = c.views()[1]
    c.crash(2)
    c.run_until(3.1)
    led = [e for p, e, _ in c.events_of(PartitionChanged) if p == 1 and e.role == "leader"]
    new = led[-1].view  # the takeover (2 led once before, at version 2)
    assert new.pid == old.pid and new.version == old.version + 2
    assert new.leader.node_id == 2 and [m.node_id for m in new.members] == [2, 1]


def test_the_origin_stays_while_a_silent_leader_still_applies_its_plan():
    """A leader too busy to send keep-alives (a loaded daemon) while its VMs are being
    created: the launch's origin asks it, hears it still leads, and keeps its lease, so
    the vjob is not reported refused (nor launched again) while its VMs appear."""
    once = replace(RING, launch_attempts=1)  # a lease expiry would fail it at once
    c = FakeCluster(4, seed=4, config=once, driver_delay=6.0, monitor=False)
    for pos in range(4):
        # its keep-alive timer does nothing (the dispatch table, not the method: the
        # compiled build's classes cannot be monkeypatched)
        table = c.core(pos)._dispatch
        for key in [k for k in table if k[1] == PartitionTimer.KEEPALIVE]:
            table[key] = None
    eid = c.launch(0, [LaunchVm("w0", "", 1, 512), LaunchVm("w1", "", 1, 512)])
    c.run(10.0)
    done = c.done[(0, eid)]
    assert done.ok, done.reason
    assert c.created == {"w0": 1, "w1": 1}
    assert c.core(0).stats["lease_expired"] == 0
    assert c.violations == [] and c.vm_problems() == []


def test_members_refuse_an_older_view_of_another_leader_and_its_dissolve():
    """After a takeover (version + 2), a candidate the old leader handed the ISP to may
    still lead the same partition at version + 1: members neither adopt its view nor
    report their host to it, and ignore its Dissolve; the leader's Dissolve counts."""
    c = ring("over full room room")
    view = c.install([1, 0], initiator=0, leader=1)
    newer = replace(view, version=view.version + 2)  # as a takeover would publish it
    for p in (0, 1):
        c.core(p).view = newer
    stale = replace(
        view, version=view.version + 1, leader=c.contact(2), members=(c.contact(2), *view.members)
    )
    c.deliver(2, 0, SetPartition(stale))
    c.run(0.01)
    answers = [m for _, s, d, m in c.messages if s == 0 and d == 2 and isinstance(m, MemberState)]
    assert len(answers) == 1 and answers[0].host is None
    assert c.views()[0] == newer and c.core(0).stats["refused_older_view"] == 1
    c.deliver(2, 0, Dissolve(view.pid, "stale leader"))
    c.run(0.01)
    assert c.views()[0] == newer and c.core(0).stats["ignored_dissolve"] == 1
    c.deliver(1, 0, Dissolve(view.pid, "done"))
    c.run(0.01)
    assert c.views()[0] is None
