"""Hypothesis runs of random event interleavings on a 6-12 node cluster: random
overloads and calm-downs, message loss, crashes, solver and driver timing, recruitment
strategy. After every run:

- the invariant checker saw nothing (a node in at most one acting partition; every
  partition released within lease + 1 s of its last update);
- no VM lost or duplicated in the fake hosts;
- every event either ended (EventDone at its origin) or is still legitimately in
  flight: after the chaos, loss stops, loads calm down, and within a quiet period every
  event of a live origin has ended and every live node is free.

Each example states its seed (the cluster's) on failure. DVMS_PARTITION_EXAMPLES=N runs
more examples (default 60).
"""

from __future__ import annotations

import os
from dataclasses import replace

from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from dvms.partition.config import RECRUITMENT, PartitionConfig
from dvms.testing.cluster import FakeCluster

CHAOS_S = 20.0
#: Long enough for a lease (3.5 s), an action timeout (5 s here) and RPC give-ups.
QUIET_S = 15.0

actions = st.tuples(
    st.floats(0.0, CHAOS_S, allow_nan=False),
    st.sampled_from(["overload", "overload", "calm", "crash", "loss"]),
    st.integers(0, 11),
    st.floats(0.0, 0.3, allow_nan=False),
)


@st.composite
def scenarios(draw):
    n = draw(st.integers(6, 12))
    return {
        "n": n,
        "seed": draw(st.integers(0, 2**32 - 1)),
        "strategy": draw(st.sampled_from(RECRUITMENT)),
        "min_size": draw(st.integers(1, 4)),
        "loads": draw(st.lists(st.integers(0, 5), min_size=n, max_size=n)),
        "solve": draw(st.sampled_from([0.001, 0.05, 0.5, 2.0])),
        "driver": draw(st.sampled_from([0.01, 0.3, 1.5])),
        "actions": sorted(draw(st.lists(actions, max_size=20))),
    }


def build(s) -> FakeCluster:
    config = replace(
        PartitionConfig(),
        recruitment=s["strategy"],
        min_partition_size=s["min_size"],
        action_timeout_s=5.0,
    )
    solve, driver = s["solve"], s["driver"]
    c = FakeCluster(
        s["n"],
        seed=s["seed"],
        config=config,
        loss=0.0,
        jitter=0.2,
        solve_delay=lambda p: solve * (1 + p % 3),
        driver_delay=lambda p: driver * (1 + p % 2),
    )
    for i, k in enumerate(s["loads"]):
        c.add_vms(i, [0.8] * k)
    crashes = 0
    for when, kind, node, x in s["actions"]:
        node %= s["n"]
        if kind == "overload":
            c.at(when, _set_total, c, node, 4.0 + 10 * x)  # 4 CPUs: demand above 4
        elif kind == "calm":
            c.at(when, _set_total, c, node, 1.0)
        elif kind == "crash" and crashes < 2:
            crashes += 1
            c.at(when, c.crash, node)
        elif kind == "loss":
            c.at(when, c.set_loss, x)
    return c


def _set_total(c: FakeCluster, pos: int, total: float) -> None:
    if c.hosts[pos].vms:
        c.set_demand(pos, total)


def _calm_all(c: FakeCluster) -> None:
    c.set_loss(0.0)
    for pos, host in enumerate(c.hosts):
        if host.vms:
            c.set_demand(pos, min(host.demand(), 0.5 * host.cpus))


@settings(
    max_examples=int(os.environ.get("DVMS_PARTITION_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=False,
)
@given(scenarios())
def test_random_interleavings_keep_the_invariants(s):
    note(f"scenario: {s}")
    c = build(s)
    c.run_until(CHAOS_S)
    where = f"seed={s['seed']} n={s['n']} strategy={s['strategy']}"
    assert c.violations == [], where
    assert c.vm_problems() == [], where
    _calm_all(c)
    c.run_until(CHAOS_S + QUIET_S)
    assert c.violations == [], where
    assert c.vm_problems() == [], where
    crashed = any(not node.alive for node in c.nodes)
    if not crashed:  # no loss, no problems left: everything must have ended
        assert c.pending_events() == [], f"{where}: events never ended"
        assert all(c.free()), where
    for pos, eid in c.pending_events():
        # With dead peers an ISP spends ~7.5 s of RPC retries per dead candidate per lap
        # (a known slowness): an event may still be running, but only in a partition
        # that carries it, never orphaned at its origin.
        core = c.core(pos)
        assert eid in core.own and core.own[eid].in_flight, f"{where}: {eid:x} orphaned"
        holder = core.view or core._holding
        assert holder is not None and eid in {e.event_id for e in holder.events}, where
    for e in c.done.values():
        assert e.finished >= e.started


def test_an_outcome_lost_for_good() -> None:
    """Under 23 % loss the leader's every copy of the Outcome for n4's overload event
    was lost after the partition dissolved as solved: the origin waited for it forever
    and the event never ended. It ends, as solved, once ``outcome_wait_s`` is over.
    The seed is one whose losses hit that Outcome with today's plans (a change of the
    placement engine's plans moves the losses: the last assertions say whether the
    path is still taken; another seed near it that takes it will do)."""
    s = {
        "n": 8,
        "seed": 7629,
        "strategy": "ring",
        "min_size": 1,
        "loads": [0, 1, 5, 3, 5, 4, 5, 0],
        "solve": 0.001,
        "driver": 0.01,
        "actions": [
            (0.0, "loss", 0, 0.234375),
            (0.0, "overload", 3, 0.0625),
            (3.0, "crash", 1, 0.0),
            (6.0, "overload", 4, 0.25),
            (8.0, "overload", 0, 0.25),
        ],
    }
    c = build(s)
    c.run_until(CHAOS_S)
    _calm_all(c)
    c.run_until(CHAOS_S + QUIET_S)
    assert c.pending_events() == []
    assert c.core(4).stats["outcome_lost"] == 1
    lost = [e for (pos, _), e in c.done.items() if pos == 4 and "report was lost" in e.reason]
    assert len(lost) == 1 and lost[0].ok and lost[0].kind == "overload"
