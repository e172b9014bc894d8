"""The partition core's transition table (``dvms/partition/transitions.py``): every node
state meets every partition message and every timer kind in exactly one entry, each
handler named exists, and each pair runs on a fresh core without raising."""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

import pytest

from dvms.overlay.config import KademliaConfig
from dvms.overlay.core import OverlayCore
from dvms.overlay.messages import Contact
from dvms.partition.config import PartitionConfig
from dvms.partition.core import PartitionCore
from dvms.partition.messages import (
    GROWING,
    PARTITION_MESSAGES,
    ActionAccepted,
    ActionAck,
    ActionDone,
    CanMerge,
    CreateVm,
    Dissolve,
    Event,
    HostState,
    Isp,
    IspAck,
    KeepAlive,
    KeepAliveAck,
    LaunchVm,
    MemberState,
    MergeAnswer,
    MigrateVm,
    Outcome,
    OutcomeAck,
    PartitionView,
    SetPartition,
    StatePage,
    StillValid,
    Valid,
)
from dvms.partition.timers import PartitionTimer
from dvms.partition.transitions import IGNORED, TRANSITIONS, NodeState
from dvms.requests import Request

ME = Contact(10 << 140, "10.0.0.10", 7000)
PEER = Contact(20 << 140, "10.0.0.20", 7000)
OTHER = Contact(30 << 140, "10.0.0.30", 7000)
HOST = HostState("h10", 4, 16384, ())
INPUTS: list[Any] = [*PARTITION_MESSAGES.values(), *PartitionTimer]


def test_every_state_meets_every_input_once():
    for state in NodeState:
        for i in INPUTS:
            assert (state, i) in TRANSITIONS, f"{state.name} x {getattr(i, '__name__', i)}"
    assert len(TRANSITIONS) == len(NodeState) * len(INPUTS)


def test_every_handler_exists():
    for key, name in TRANSITIONS.items():
        assert name is IGNORED or callable(getattr(PartitionCore, name, None)), (key, name)


def view(leader: Contact, members: tuple[Contact, ...], pid: int = 7) -> PartitionView:
    event = Event("overload", members[-1], 99)
    return PartitionView(pid, 1, members[-1], leader, members, GROWING, (event,))


def core_in(state: NodeState) -> PartitionCore:
    overlay = OverlayCore(ME, KademliaConfig(), random.Random(1))
    config = replace(PartitionConfig(), min_partition_size=3)
    core = PartitionCore(
        ME, overlay, config, random.Random(2), local_state=lambda: HOST, self_monitor=False
    )
    out: list[Any] = []
    if state is NodeState.PASSING:
        core._holding = view(PEER, (PEER, OTHER))
    elif state is NodeState.MEMBER:
        core._adopt(view(PEER, (PEER, ME, OTHER)), 0.0, out, "member")
    elif state is NodeState.LEADING:
        core._become_leader(view(ME, (ME, PEER, OTHER)), set(), 0, 0.0, out)
    assert core.node_state() is state
    return core


def sample(kind: type) -> Any:
    v = view(PEER, (PEER, ME, OTHER))
    return {
        Isp: Isp(v, (), 1, False),
        IspAck: IspAck(True),
        SetPartition: SetPartition(v),
        StatePage: StatePage(7, 1, 1),
        MemberState: MemberState(7, 1, HOST),
        KeepAlive: KeepAlive(7, 1),
        KeepAliveAck: KeepAliveAck(7, 1),
        Dissolve: Dissolve(7, "test"),
        StillValid: StillValid(7, 1),
        Valid: Valid(True),
        CanMerge: CanMerge(7),
        MergeAnswer: MergeAnswer(True),
        MigrateVm: MigrateVm(7, 5, "vm", "ns", OTHER, "h30"),
        CreateVm: CreateVm(7, 6, LaunchVm("vm", "ns", 1, 256)),
        ActionDone: ActionDone(7, 5, True),
        Outcome: Outcome(99, True),
        OutcomeAck: OutcomeAck(99),
        ActionAccepted: ActionAccepted(5, True),
        ActionAck: ActionAck(5),
    }[kind]


def timer_ref(kind: PartitionTimer, core: PartitionCore) -> Any:
    if kind is PartitionTimer.RPC:
        return Request(PEER.addr, PEER.node_id, KeepAlive(7, 1), None, 1)
    if kind in (PartitionTimer.MONITOR, PartitionTimer.FLUSH, PartitionTimer.UNDERLOAD):
        return None
    if kind is PartitionTimer.ACTION:
        return 5
    if kind is PartitionTimer.RETRY:
        return 99
    return 7  # a pid


@pytest.mark.parametrize("state", list(NodeState), ids=lambda s: s.name)
@pytest.mark.parametrize("kind", INPUTS, ids=lambda i: getattr(i, "__name__", str(i)))
def test_each_pair_runs_on_a_fresh_core(state: NodeState, kind: Any):
    core = core_in(state)
    if isinstance(kind, PartitionTimer):
        core.timers.at(0.5, kind, timer_ref(kind, core))
        core.on_timer(now=0.5)
    else:
        core.on_message(PEER.addr, PEER.node_id, 1234, sample(kind), now=0.5)
    assert core.stats["unknown_message"] == 0


def test_an_ignored_pair_does_nothing():
    core = core_in(NodeState.FREE)
    before = dict(core.stats)
    assert core.on_message(PEER.addr, PEER.node_id, 1, KeepAlive(7, 1), now=0.5) == []
    assert core.on_message(PEER.addr, PEER.node_id, 2, Dissolve(7, "x"), now=0.5) == []
    assert dict(core.stats) == before and core.view is None


def test_a_message_outside_the_table_is_counted_unknown():
    core = core_in(NodeState.FREE)
    assert core.on_message(PEER.addr, PEER.node_id, 1, object(), now=0.5) == []
    assert core.stats["unknown_message"] == 1
