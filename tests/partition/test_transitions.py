"""Every transition of the partition state machine (dvms-isp.md §2.3, the DVMS 2 table),
one table row each: a setup on a small ring cluster, then the expected partition state
of every node at given virtual times.

Nodes have ids 1..n (ring order) at positions 0..n-1. Hosts have 4 CPUs; "over" is five
1-CPU VMs, "full" four, "room" one. A state is ``None`` (free), ``"down"`` (crashed) or
``(state, leader, members newest first)`` as the node itself sees it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from dvms.partition.config import PartitionConfig
from dvms.partition.messages import BLOCKED, STATE_NAMES, CanMerge, Dissolve, Isp
from dvms.testing.cluster import FakeCluster

RING = replace(PartitionConfig(), recruitment="ring", min_partition_size=2)
LOAD = {"over": 5, "full": 4, "room": 1, "empty": 0}


def cluster(loads: str, *, config=RING, slow: dict[int, float] | None = None, **kw) -> FakeCluster:
    """``loads``: one word per node ("over full room"); ``slow``: node -> solver delay."""
    words = loads.split()
    slow = slow or {}
    c = FakeCluster(
        len(words),
        seed=3,
        config=config,
        ids=range(1, len(words) + 1),
        solve_delay=lambda p: slow.get(p + 1, 0.01),
        monitor=False,  # only the rows' own pokes raise events
        **kw,
    )
    for i, w in enumerate(words):
        c.add_vms(i, [1.0] * LOAD[w])
    return c


def snapshot(c: FakeCluster) -> dict[int, Any]:
    out: dict[int, Any] = {}
    for i, v in enumerate(c.views()):
        if not c.nodes[i].alive:
            out[i + 1] = "down"
        elif v is None:
            out[i + 1] = None
        else:
            out[i + 1] = (STATE_NAMES[v.state], v.leader.node_id, [m.node_id for m in v.members])
    return out


def done_at(c: FakeCluster, node: int) -> list[tuple[bool, str]]:
    """Outcomes at ``node``; a failure reason is cut before the solver's detail
    ("no host fits VM: <which hosts refused it, by which rule>")."""
    out = []
    for (p, _), e in c.done.items():
        if p == node - 1:
            head, sep, detail = e.reason.partition(": ")
            assert e.ok or not sep or detail, e.reason  # a detail, when given, is not empty
            out.append((e.ok, head))
    return out


@dataclass
class Row:
    name: str
    setup: Callable[[], FakeCluster]
    #: (virtual time, expected snapshot) pairs, in time order.
    expect: list[tuple[float, dict[int, Any]]]
    #: Further checks at the end: (cluster) -> None.
    then: Callable[[FakeCluster], None] = field(default=lambda c: None)


# -- setups ----------------------------------------------------------------------------


def poke1(loads: str, **kw) -> Callable[[], FakeCluster]:
    def setup() -> FakeCluster:
        c = cluster(loads, **kw)
        c.poke(0)
        return c

    return setup


def two_blocked() -> FakeCluster:
    """A = {2, 1} (initiator 1) and B = {4, 3} (initiator 3), both Blocked, all full."""
    c = cluster("full full full full", slow={3: 1.0})
    c.install([1, 0], initiator=0, leader=1, state=BLOCKED, lap=2)
    c.install([3, 2], initiator=2, leader=3, state=BLOCKED, lap=2)
    return c


def merge_with_rank() -> FakeCluster:
    c = two_blocked()
    c.begin_transmission(1)  # A's ISP reaches 3 (in B); A's initiator 1 outranks 3
    return c


def merge_without_rank() -> FakeCluster:
    c = two_blocked()
    c.begin_transmission(3)  # B's ISP reaches 1 (in A); 3 does not outrank 1
    return c


def lease_only() -> FakeCluster:
    c = cluster("over room room")
    c.install([1, 0], initiator=0, leader=1)  # nobody leads it: no keep-alives
    return c


def crash_at(node: int, when: float) -> Callable[[], FakeCluster]:
    """1 overloaded; 2 (full, slow) joins and fails; the ISP goes to 3 at ~0.5015 s and 3's
    SetPartition would reach ``node`` at 0.5025 s: ``node`` crashes just before."""

    def setup() -> FakeCluster:
        c = cluster("over full room", slow={2: 0.5})
        c.poke(0)
        c.at(when, c.crash, node - 1)
        return c

    return setup


def blocked_meets_finishing() -> FakeCluster:
    """A = {2, 1} Blocked (initiator 1); B = {4, 3} Blocked (initiator 3) whose second
    lap recruits free node 5, which finds a plan and applies it (1 s migrations). Then
    A's Blocked ISP reaches 3, a member of B: B is Finishing, so no merge."""
    c = cluster("full full over full room", driver_delay=1.0)
    c.install([1, 0], initiator=0, leader=1, state=BLOCKED, lap=2)
    c.install([3, 2], initiator=2, leader=3, state=BLOCKED, lap=2)
    c.begin_transmission(3)
    c.at(0.2, c.begin_transmission, 1)
    return c


def finishing_then(c: FakeCluster) -> None:
    assert not [m for _, _, _, m in c.messages if isinstance(m, CanMerge)]
    c.run(2.0)
    assert_ok(c, 3)


def stale_isp() -> FakeCluster:
    c = cluster("over full room")
    view = c.install([1, 0], initiator=0, leader=1, state=BLOCKED, lap=2)
    c.deliver(1, 0, Dissolve(view.pid, "gone"))  # the initiator has let go of it
    c.run(0.01)
    c.deliver(1, 2, Isp(view, (), 3))  # an old copy of its ISP reaches free node 3
    return c


# -- expectations ------------------------------------------------------------------------


def merged_then(c: FakeCluster) -> None:
    merges = [m for _, s, d, m in c.messages if isinstance(m, CanMerge)]
    assert len(merges) == 1 and c.core(2).stats["merges"] == 1


def unranked_then(c: FakeCluster) -> None:
    assert not [m for _, _, _, m in c.messages if isinstance(m, CanMerge)]
    assert c.core(0).stats["shortcut"] == 1
    assert done_at(c, 3) == [(False, "no placement found on the 2 hosts of the last partition")]
    assert done_at(c, 1) == []


ROWS = [
    Row(
        "free -> Growing, 1 member, it leads",
        poke1("over full", config=replace(RING, min_partition_size=1), slow={1: 1.0}),
        [(0.0, {1: ("growing", 1, [1]), 2: None})],
    ),
    Row(
        "Growing + free node -> it joins and leads",
        poke1("over room full", slow={2: 1.0}),
        [(0.1, {1: ("growing", 2, [2, 1]), 2: ("growing", 2, [2, 1]), 3: None})],
        lambda c: c.run(2.0) or assert_ok(c, 1),
    ),
    Row(
        "Growing lap end -> Blocked, second lap recruits on",
        poke1("over full full", config=replace(RING, max_partition_size=2), slow={3: 1.0}),
        [(0.2, {n: ("blocked", 3, [3, 2, 1]) for n in (1, 2, 3)})],
    ),
    Row(
        "Blocked lap end -> dissolved, event failed",
        poke1("over full full", config=replace(RING, max_partition_size=2), slow={3: 1.0}),
        [(1.2, {1: None, 2: None, 3: None})],
        lambda c: _eq(done_at(c, 1), [(False, "no host fits h0-vm4")]),
    ),
    Row(
        "Blocked meets Blocked, ISP's initiator outranks -> merge (Growing, union)",
        merge_with_rank,
        [(0.1, {n: ("growing", 3, [3, 4, 2, 1]) for n in (1, 2, 3, 4)})],
        merged_then,
    ),
    Row(
        "Blocked meets Blocked, no rank -> shortcut, no merge",
        merge_without_rank,
        [(0.1, {1: ("blocked", 2, [2, 1]), 2: ("blocked", 2, [2, 1]), 3: None, 4: None})],
        unranked_then,
    ),
    Row(
        "lease expiry -> free",
        lease_only,
        [(3.4, {1: ("growing", 2, [2, 1]), 2: ("growing", 2, [2, 1]), 3: None}), (3.6, {})],
        lambda c: (_eq(snapshot(c), {1: None, 2: None, 3: None}), _lease_failed(c)),
    ),
    Row(
        "member crash -> the detecting leader goes on without it",
        crash_at(2, 0.502),
        [(2.55, {1: ("finishing", 3, [3, 1]), 2: "down", 3: ("finishing", 3, [3, 1])})],
        lambda c: c.run(1.0) or assert_ok(c, 1, size=2),
    ),
    Row(
        "initiator crash -> dissolved",
        crash_at(1, 0.502),
        [
            (1.0, {1: "down", 2: ("growing", 3, [3, 2, 1]), 3: ("growing", 3, [3, 2, 1])}),
            (2.6, {1: "down", 2: None, 3: None}),
        ],
    ),
    Row(
        "Finishing -> dissolved after the plan",
        poke1("over room", driver_delay=1.0),
        [
            (0.5, {1: ("finishing", 2, [2, 1]), 2: ("finishing", 2, [2, 1])}),
            (1.2, {1: None, 2: None}),
        ],
        lambda c: assert_ok(c, 1),
    ),
    Row(
        "Blocked ISP meets a Finishing partition -> shortcut, the plan is not disturbed",
        blocked_meets_finishing,
        [(0.5, {1: None, 2: None} | {n: ("finishing", 5, [5, 4, 3]) for n in (3, 4, 5)})],
        finishing_then,
    ),
    Row(
        "stale Blocked ISP -> the initiator refuses, the free node stays free",
        stale_isp,
        [(0.1, {1: None, 2: ("blocked", 2, [2, 1]), 3: None})],
        lambda c: _eq(c.core(2).stats["stale_isp"], 1),
    ),
]


def _eq(a: Any, b: Any) -> None:
    assert a == b


def _lease_failed(c: FakeCluster) -> None:
    assert done_at(c, 1) == [(False, "lease expired")]


def assert_ok(c: FakeCluster, node: int, *, size: int | None = None) -> None:
    ends = [e for (p, _), e in c.done.items() if p == node - 1]
    assert len(ends) == 1 and ends[0].ok, ends
    assert size is None or ends[0].partition_size == size
    assert not c.hosts[node - 1].overloaded()


@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
def test_transition(row: Row):
    c = row.setup()
    for when, expected in row.expect:
        c.run_until(when)
        if expected:
            assert snapshot(c) == expected, f"at t={when}"
    row.then(c)
    assert c.violations == [] and c.vm_problems() == []
