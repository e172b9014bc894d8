"""The simulated datacenter: initial placement, load model, monitors, migrations, faults."""

from __future__ import annotations

import itertools
import math
import random
from collections import Counter

import pytest

from dvms.placement.model import CPU_DEMAND
from dvms.sim.scenario import scenario_from_dict
from dvms.sim.solvercost import model_solver_time
from dvms.sim.world import World

QUIET = {"mean_interval_per_vm_s": 1e12}  # no load event within the run


def world(**sections) -> World:
    return World(scenario_from_dict(sections))


def test_balanced_initial_placement() -> None:
    w = world(hosts={"count": 7}, vms={"per_host": 10}, load={"initial": "mu"})
    assert len(w.vm_names) == 70 and len(set(w.vm_names)) == 70
    for h in range(7):
        assert len(w.vms_on(h)) == 10
        assert len(w.cluster.vms[w.hosts[h].name]) == 10
        assert w.host_demand[h] == 600
    assert w.check_invariants() == []
    assert world(hosts={"count": 3}).host_demand == [0, 0, 0]


def _normal_cdf(x: float) -> float:
    return 0.5 * (1 + math.erf((x - 60) / (20 * math.sqrt(2))))


def test_load_model_statistics() -> None:
    """Rate, uniform VM choice and the quantised N(60, 20^2) law, seeded; bounds at
    p ~ 0.001 so a wrong model fails."""
    w = world(hosts={"count": 100}, duration_s=3000, seed=5)
    seen: list[tuple[float, int, int]] = []
    real = w.set_vm_units

    def spy(v: int, units: int, now: float) -> None:
        seen.append((now, v, units))
        real(v, units, now)

    w.set_vm_units = spy  # type: ignore[method-assign]
    w.run()
    expected = 1000 / 300 * 3000  # 10,000 events, Poisson sd 100
    assert abs(len(seen) - expected) < 4 * math.sqrt(expected)
    assert w.load_events == len(seen)
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(seen)]
    assert sum(gaps) / len(gaps) == pytest.approx(0.3, rel=0.05)
    assert all(g >= 0 for g in gaps)
    values = Counter(u for _, _, u in seen)
    assert set(values) <= set(range(0, 101, 10))
    probs = [_normal_cdf(5)]
    probs += [_normal_cdf(10 * k + 5) - _normal_cdf(10 * k - 5) for k in range(1, 10)]
    probs.append(1 - _normal_cdf(95))
    chi2 = sum((values[10 * k] - len(seen) * p) ** 2 / (len(seen) * p) for k, p in enumerate(probs))
    assert chi2 < 30  # 10 degrees of freedom
    buckets = Counter(v * 10 // 1000 for _, v, _ in seen)
    mean = len(seen) / 10
    assert sum((buckets[b] - mean) ** 2 / mean for b in range(10)) < 28  # 9 dof
    # steady state: host demand ~ 10 * 59.9 on average, and P(host > 700) ~ 4 %
    assert sum(w.host_demand) / 100 == pytest.approx(599, abs=40)


def test_same_seed_same_trace_different_seed_different_trace() -> None:
    def trace(seed: int) -> list[int]:
        w = world(hosts={"count": 10}, duration_s=300, seed=seed)
        w.run()
        return list(w.vm_units)

    assert trace(1) == trace(1)
    assert trace(1) != trace(2)


def test_monitor_ticks_only_while_overloaded_and_marks_detection() -> None:
    w = world(hosts={"count": 2}, load={"initial": "mu", **QUIET}, duration_s=10)
    ticks: list[tuple[int, float]] = []
    w.on_overload(lambda h, now: ticks.append((h, now)))
    # host 0 holds the even VMs (round-robin over 2 hosts)
    w.engine.at(2.3, w.set_vm_units, 0, 100, 2.3)  # 600 - 60 + 100 = 640
    w.engine.at(2.4, w.set_vm_units, 2, 100, 2.4)  # host 0: 680
    w.engine.at(2.5, w.set_vm_units, 4, 100, 2.5)  # host 0: 720 > 700
    w.engine.at(5.5, w.set_vm_units, 4, 0, 5.5)  # host 0: 620
    w.run()
    assert ticks == [(0, 3.0), (0, 4.0), (0, 5.0)]
    s = w.summary()
    assert s["violations"] == 1 and s["violations_detected"] == 1
    assert s["cumulated_violation_s"] == pytest.approx(3.0)
    assert s["violation_detection_s"] == pytest.approx(0.5)
    assert s["violation_fix_s"] == pytest.approx(2.5)


def test_migrations_never_lose_or_duplicate_a_vm() -> None:
    """Random migrations, many of them invalid or conflicting, under load."""
    w = world(
        hosts={"count": 6, "memory_mib": 5 * 1024},
        vms={"per_host": 3},
        duration_s=400,
        load={"mean_interval_per_vm_s": 20},
        seed=3,
    )
    rng = random.Random(7)
    calls: Counter[int] = Counter()
    results: list[bool] = []
    names = [h.name for h in w.hosts] + ["nowhere"]

    def attempt(i: int) -> None:
        vm = rng.choice(w.vm_names)
        src = w.hosts[w.vm_host[w.vm_index[vm]]].name if rng.random() < 0.8 else rng.choice(names)
        dst = rng.choice(names)

        def done(ok: bool, duration: float) -> None:
            calls[i] += 1
            results.append(ok)
            assert (duration > 5) if ok else duration == 0.0

        w.migrate(vm, src, dst, done)
        assert w.check_invariants() == []

    for i in range(300):
        w.engine.at(rng.uniform(0, 350), attempt, i)
    w.run()
    assert calls == Counter(range(300))  # every callback exactly once
    assert w.check_invariants() == []
    assert sum(results) > 20 and not all(results)
    for h in range(6):
        on_host = [w.vm_index[name] for name in w.vms_on(h)]
        assert w.host_demand[h] == sum(w.vm_units[v] for v in on_host)
        assert set(w.vms_on(h)) == set(w.cluster.vms[w.hosts[h].name])
        assert len(on_host) * 1024 <= 5 * 1024
    s = w.summary()
    assert s["migrations"] == sum(results) and s["invariant_violations"] == 0
    assert s["migrations_started"] == sum(results)


def test_migration_moves_demand_and_violation() -> None:
    w = world(hosts={"count": 2}, load={"initial": "mu", **QUIET}, duration_s=60)
    for v in (0, 2, 4):  # host 0: 600 + 3 * 40 = 720
        w.set_vm_units(v, 100, 0.0)
    assert w.overloaded(0) and w.metrics.is_violated(0)
    ended: list[float] = []
    w.engine.at(1.0, w.migrate, "vm0000", "h000", "h001", lambda ok, d: ended.append(d))
    w.engine.at(2.0, lambda: ended.append(-float(w.incoming_mib[1])))
    w.run()
    assert ended[0] == -1024.0  # memory reserved on the destination while migrating
    assert 8.2 < ended[1] < 16.0  # 1 GiB pre-copy at 125 MiB/s, VM fully busy
    assert (w.host_demand[0], w.host_demand[1]) == (620, 700)
    assert not w.metrics.is_violated(0) and not w.metrics.is_violated(1)
    summary = w.summary()
    assert summary["cumulated_violation_s"] == pytest.approx(1.0 + ended[1])
    assert summary["violations_by_inbound_migration"] == 0  # h001 reached 700: not over


def test_a_landing_that_overloads_its_destination_is_counted() -> None:
    w = world(hosts={"count": 2}, load={"initial": "mu", **QUIET}, duration_s=60)
    for v in (0, 2, 4):  # host 0: 720
        w.set_vm_units(v, 100, 0.0)
    w.set_vm_units(1, 70, 0.0)  # host 1: 610, +100 -> 710
    w.engine.at(1.0, w.migrate, "vm0000", "h000", "h001", lambda ok, d: None)
    w.run()
    assert w.metrics.is_violated(1) and not w.metrics.is_violated(0)
    assert w.summary()["violations_by_inbound_migration"] == 1


def test_snapshot_of_some_hosts() -> None:
    w = world(hosts={"count": 4}, load={"initial": "mu", **QUIET})
    w.set_vm_units(1, 30, 0.0)
    snap = w.snapshot([1, "h002"])
    assert [h.name for h in snap.hosts] == ["h001", "h002"]
    assert len(snap.vms) == 20 and {vm.host for vm in snap.vms} == {"h001", "h002"}
    vm1 = next(vm for vm in snap.vms if vm.name == "vm0001")
    assert vm1.demand(CPU_DEMAND) == 300
    assert snap.hosts[0].limit(CPU_DEMAND, w.placement_config) == 7000
    assert len(w.snapshot().hosts) == 4


def test_solver_time_modes() -> None:
    model = world(hosts={"count": 2})
    assert model.solver_time(123.0, 640) == model_solver_time(640)
    assert model_solver_time(100_000) > model_solver_time(10_000) > model_solver_time(640) > 0
    measured = world(hosts={"count": 2}, solver_time="measured")
    assert measured.solver_time(0.25, 640) == 0.25


def test_crash_stops_violation_and_refuses_migrations() -> None:
    w = world(
        hosts={"count": 2},
        load={"initial": "mu", **QUIET},
        duration_s=20,
        faults={"crash": [{"host": 0, "at_s": 5.0, "recover_at_s": 15.0}]},
    )
    changes: list[tuple[int, bool, float]] = []
    w.on_host_change(lambda h, up, now: changes.append((h, up, now)))
    for v in (0, 2, 4):
        w.set_vm_units(v, 100, 0.0)
    refused: list[bool] = []
    w.engine.at(6.0, w.migrate, "vm0000", "h000", "h001", lambda ok, d: refused.append(ok))
    w.run()
    assert changes == [(0, False, 5.0), (0, True, 15.0)]
    assert refused == [False]
    s = w.summary()
    assert s["violations"] == 2 and s["cumulated_violation_s"] == pytest.approx(5.0 + 5.0)


def test_sites_and_inter_site_migrations() -> None:
    w = world(
        hosts={"count": 8},
        load=QUIET,
        duration_s=60,
        topology={
            "kind": "sites",
            "sites": ["a", "b", "c", "d"],
            "wan_rtt_ms": [[0, 5, 10, 15], [5, 0, 5, 10], [10, 5, 0, 5], [15, 10, 5, 0]],
        },
    )
    assert [h.site_name for h in w.hosts] == ["a", "a", "b", "b", "c", "c", "d", "d"]
    assert w.network.latency.rtt(0, 7) == pytest.approx(0.015)
    w.engine.at(0.0, w.migrate, "vm0000", "h000", "h001", lambda ok, d: None)
    w.engine.at(0.0, w.migrate, "vm0002", "h002", "h007", lambda ok, d: None)
    w.run()
    s = w.summary()
    assert s["migrations"] == 2 and s["inter_site_migrations"] == 1
    assert s["inter_site_operations"] == 1


def test_every_runs_periodically_until_cancelled() -> None:
    w = world(hosts={"count": 1}, load=QUIET, duration_s=10)
    seen: list[float] = []
    handle = w.every(2.0, seen.append, start_s=1.0)
    w.engine.at(6.0, handle.cancel)
    w.run()
    assert seen == [1.0, 3.0, 5.0]
