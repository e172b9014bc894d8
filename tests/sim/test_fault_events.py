"""Fault events of the simulated datacenter: daemon freezes, loss bursts, duplication and
reordering, network splits, clock offsets, and a crashed host whose daemon restarts.

Each kind is checked for what it does to the engine and the network, then a DVMS run
under it keeps every invariant (``check_run``, from the older fault tests)."""

from __future__ import annotations

import random
import re
from typing import Any

import pytest

from dvms.effects import Send
from dvms.sim.engine import Engine
from dvms.sim.run import run_scenario
from dvms.sim.scenario import ScenarioError, scenario_from_dict
from dvms.sim.world import World
from dvms.transport.netmodel import ConstantLatency, NetworkConditions, NetworkModel
from tests.sim.test_faults import SMALL_SMOKE, check_run


def small(faults: dict[str, Any], **over: Any) -> dict[str, Any]:
    return {**SMALL_SMOKE, **over, "faults": faults}


# -- scenario validation ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("faults", "message"),
    [
        ({"freeze": [{"host": 64, "at_s": 1}]}, "faults.freeze[0].host: 64 is not a host index"),
        (
            {"freeze": [{"host": 1, "at_s": 5, "resume_at_s": 5}]},
            "faults.freeze[0].resume_at_s: must be after at_s",
        ),
        (
            {"loss_burst": [{"at_s": 5, "until_s": 4}]},
            "faults.loss_burst[0].until_s: must be after at_s",
        ),
        (
            {"loss_burst": [{"at_s": 5, "until_s": 6, "loss": 1.5}]},
            "faults.loss_burst[0].loss: must be in [0, 1]",
        ),
        (
            {"dup_reorder": [{"at_s": 1, "until_s": 2, "duplicate": -0.1}]},
            "faults.dup_reorder[0].duplicate: must be in [0, 1]",
        ),
        (
            {"dup_reorder": [{"at_s": 1, "until_s": 2, "reorder_s": -1}]},
            "faults.dup_reorder[0].reorder_s: must be a finite number >= 0",
        ),
        ({"split": [{"hosts": [], "at_s": 1}]}, "faults.split[0].hosts: name at least one"),
        (
            {"split": [{"hosts": [1, 1], "at_s": 1}]},
            "faults.split[0].hosts: a host index is listed",
        ),
        (
            {"split": [{"hosts": list(range(64)), "at_s": 1}]},
            "faults.split[0].hosts: every host is on one side",
        ),
        (
            {"split": [{"hosts": [3], "at_s": 5, "heal_at_s": 2}]},
            "faults.split[0].heal_at_s: must be after at_s",
        ),
        (
            {"clock": [{"host": 2, "offset_s": 1}, {"host": 2, "offset_s": 3}]},
            "faults.clock[1].host: host 2 already has a clock offset",
        ),
        ({"clock": [{"host": -1, "offset_s": 1}]}, "faults.clock[0].host: -1 is not a host"),
        ({"freeze": [{"hots": 1}]}, "hots"),
    ],
)
def test_fault_entries_are_checked(faults: dict, message: str) -> None:
    with pytest.raises(ScenarioError, match=re.escape(message)):
        scenario_from_dict(small(faults))


# -- the network -----------------------------------------------------------------------


def test_reorder_delay_swaps_datagrams_sent_close_together() -> None:
    net = NetworkModel(ConstantLatency(1e-4), NetworkConditions(reorder_s=0.01), random.Random(1))
    arrivals = [i * 0.001 + net.route(0, 1, i * 0.001)[0] for i in range(100)]
    assert all(1e-4 / 2 <= a - i * 0.001 < 1e-4 / 2 + 0.01 for i, a in enumerate(arrivals))
    assert arrivals != sorted(arrivals)  # some overtook others
    still = NetworkModel(ConstantLatency(1e-4), NetworkConditions(), random.Random(1))
    assert [still.route(0, 1, 0.0) for _ in range(3)] == [(5e-5,)] * 3


def test_uncut_removes_one_cut_only() -> None:
    net = NetworkModel(ConstantLatency(0.001))
    net.cut([0], [1, 2])
    net.cut([2], [0, 1])
    net.uncut([0], [1, 2])
    assert not net.is_cut(0, 1) and net.is_cut(2, 0) and net.is_cut(1, 2)
    net.uncut([5], [6])  # not there: ignored
    net.heal()
    assert not net.is_cut(2, 0)


def test_loss_and_disorder_windows_set_the_worst_conditions() -> None:
    w = World(
        scenario_from_dict(
            small(
                {
                    "message_loss": 0.01,
                    "loss_burst": [
                        {"at_s": 10, "until_s": 30, "loss": 0.3},
                        {"at_s": 20, "until_s": 40, "loss": 0.6},
                    ],
                    "dup_reorder": [
                        {"at_s": 15, "until_s": 25, "duplicate": 0.2, "reorder_s": 0.5}
                    ],
                }
            )
        )
    )
    seen = {}
    for t in (5, 12, 17, 22, 27, 35, 45):
        w.engine.run_until(t)
        c = w.network.conditions
        seen[t] = (c.loss, c.duplicate, c.reorder_s)
    assert seen == {
        5: (0.01, 0.0, 0.0),
        12: (0.3, 0.0, 0.0),
        17: (0.3, 0.2, 0.5),
        22: (0.6, 0.2, 0.5),
        27: (0.6, 0.0, 0.0),
        35: (0.6, 0.0, 0.0),
        45: (0.01, 0.0, 0.0),
    }


def test_split_cuts_both_ways_until_it_heals() -> None:
    w = World(scenario_from_dict(small({"split": [{"hosts": [1, 2], "at_s": 5, "heal_at_s": 9}]})))
    w.engine.run_until(6)
    net = w.network
    assert net.is_cut(1, 0) and net.is_cut(0, 2) and not net.is_cut(1, 2)
    assert not net.is_cut(0, 3)
    w.engine.run_until(10)
    assert not net.is_cut(1, 0)


# -- the engine: freeze, clock ---------------------------------------------------------


class Echo:
    """A core that answers every message with one back and counts what it got."""

    def __init__(self) -> None:
        self.got: list[tuple[Any, float]] = []
        self.ticks: list[float] = []
        self.deadline: float | None = None

    def on_message(self, src: Any, sender: int, rid: int, msg: Any, *, now: float) -> list:
        self.got.append((msg, now))
        return [Send(src, rid + 1, "pong")] if msg == "ping" else []

    def on_timer(self, *, now: float) -> list:
        self.ticks.append(now)
        self.deadline = None
        return []

    def next_deadline(self) -> float | None:
        return self.deadline


def _pair() -> tuple[Engine, Any, Any]:
    eng = Engine(NetworkModel(ConstantLatency(0.002)))
    a = eng.add_node(0, ("a", 1), 1, Echo())
    b = eng.add_node(1, ("b", 1), 2, Echo())
    return eng, a, b


def test_frozen_node_holds_inputs_and_timers_until_it_thaws() -> None:
    eng, a, b = _pair()
    b.core.deadline = 2.0
    eng.apply(b, [])
    eng.at(1.0, eng.freeze, b)
    for t in (1.5, 2.5, 3.5):
        eng.at(t, eng.apply, a, [Send(b.addr, 1, "ping")])
    results: list[str] = []
    eng.at(3.0, eng.input, b, results.append, "solved")
    eng.at(5.0, eng.thaw, b)
    eng.run_until(4.9)
    assert b.core.got == [] and b.core.ticks == [] and results == []
    assert len(b.held) == 4
    eng.run_until(6.0)
    assert [m for m, _ in b.core.got] == ["ping"] * 3
    assert {t for _, t in b.core.got} == {5.0}  # processed when it woke, in order
    assert results == ["solved"] and b.core.ticks == [5.0]  # the overdue timer fired
    assert [m for m, _ in a.core.got] == ["pong"] * 3


def test_input_to_a_crashed_node_is_dropped() -> None:
    eng, _a, b = _pair()
    eng.freeze(b)
    eng.input(b, pytest.fail, "held")
    eng.crash(b)
    eng.thaw(b)
    eng.input(b, pytest.fail, "dropped")


def test_clock_offset_shifts_now_and_deadlines() -> None:
    eng, a, b = _pair()
    eng.set_clock(b, 40.0)
    b.core.deadline = 43.0  # on b's clock: engine time 3.0
    eng.apply(b, [])
    eng.at(1.0, eng.apply, a, [Send(b.addr, 1, "ping")])
    eng.run_until(5.0)
    assert b.core.ticks == [43.0]
    assert b.core.got == [("ping", pytest.approx(41.001))]
    assert a.core.got == [("pong", pytest.approx(1.002))]
    assert eng.stale == 0


def test_a_deadline_rounded_below_by_the_offset_still_fires_once() -> None:
    """(d - c) + c can be one ulp below d: the engine woke the node at its deadline but
    handed it a ``now`` just before it, so nothing was due and the same timer was
    scheduled again at the same instant, forever (a campaign run hung on it)."""
    offset, deadline = -35.951, 10.001
    assert (deadline - offset) + offset < deadline
    eng, _a, b = _pair()
    eng.set_clock(b, offset)
    b.core.deadline = deadline
    eng.apply(b, [])
    eng.run_until(60.0)  # engine time 45.952
    assert b.core.ticks == [deadline] and eng.events == 1


@pytest.mark.parametrize("offset", [59.0, 61.0, -61.0])
def test_clocks_further_apart_than_the_replay_window_drop_datagrams(offset: float) -> None:
    eng, a, b = _pair()
    eng.set_clock(b, offset)
    eng.at(1.0, eng.apply, a, [Send(b.addr, 1, "ping")])
    eng.run_until(2.0)
    dropped = abs(offset) > 60.0
    assert (b.core.got == []) is dropped
    assert eng.stale == (1 if dropped else 0)


def test_held_datagrams_older_than_the_window_are_stale_on_thaw() -> None:
    eng, a, b = _pair()
    eng.freeze(b)
    eng.at(1.0, eng.apply, a, [Send(b.addr, 1, "ping")])
    eng.at(50.0, eng.apply, a, [Send(b.addr, 2, "ping")])
    eng.at(70.0, eng.thaw, b)
    eng.run_until(71.0)
    assert len(b.core.got) == 1 and eng.stale == 1


# -- whole runs ------------------------------------------------------------------------


def test_crashed_host_restarts_its_daemon_and_rejoins() -> None:
    scn = scenario_from_dict(small({"crash": [{"host": 5, "at_s": 20, "recover_at_s": 50}]}))
    r, w = run_scenario(scn, "dvms")
    check_run(r)
    sched_nodes = [n for n in w.engine.nodes if n.pos == 5]
    assert len(sched_nodes) == 2  # the crashed incarnation and the restarted one
    old, new = sched_nodes
    assert not old.alive and new.alive and new.node_id == old.node_id
    assert w.host_up[5]
    knows = sum(new.node_id in n.core.overlay.table for n in w.engine.nodes if n.alive)
    assert knows > 0  # others have it in their routing tables again


FAULT_RUNS = {
    "freeze": {
        "freeze": [
            {"host": 7, "at_s": 30, "resume_at_s": 45},
            {"host": 9, "at_s": 60},  # to the end of the run
        ]
    },
    "loss_burst": {"loss_burst": [{"at_s": 40, "until_s": 50, "loss": 0.5}]},
    "dup_reorder": {
        "dup_reorder": [{"at_s": 30, "until_s": 80, "duplicate": 0.2, "reorder_s": 0.01}]
    },
    "clock": {
        "clock": [
            {"host": 3, "offset_s": 25.0},
            {"host": 4, "offset_s": -1000.0},
            {"host": 11, "offset_s": 90.0},
        ]
    },
}


@pytest.mark.parametrize("kind", list(FAULT_RUNS))
def test_runs_under_each_fault_keep_the_invariants(kind: str) -> None:
    r, w = run_scenario(scenario_from_dict(small(FAULT_RUNS[kind])), "dvms")
    check_run(r)
    stats = w.network.statistics()
    if kind == "freeze":
        assert [n.pos for n in w.engine.nodes if n.frozen] == [9]
        assert not w.engine.nodes[7].held
    if kind == "dup_reorder":
        assert stats.duplicated > 0
    if kind == "loss_burst":
        assert stats.lost > 0
    if kind == "clock":
        assert w.engine.stale > 0  # host 11 is 90 s off everyone else


def test_same_seed_same_result_under_every_fault() -> None:
    faults: dict[str, Any] = {}
    for f in FAULT_RUNS.values():
        faults.update(f)
    faults["crash"] = [{"host": 5, "at_s": 20, "recover_at_s": 50}]
    scn = scenario_from_dict(small(faults, duration_s=60.0))
    a, _ = run_scenario(scn, "dvms")
    b, _ = run_scenario(scn, "dvms")
    for key in ("wall_s", "virtual_per_wall"):
        a.pop(key), b.pop(key)
    assert a == b
