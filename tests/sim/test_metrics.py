"""Violation accounting on hand-built traces, and the other metric helpers."""

from __future__ import annotations

import pytest

from dvms.sim.metrics import SUCCESS, Metrics, percentile

# Each trace: (host, "on"/"off"/"seen", time) steps, the end time, then the expected
# (violations, cumulated, detection part, fix part, detected count, open at end).
TRACES = [
    ("nothing", [], 10.0, (0, 0.0, 0.0, 0.0, 0, 0)),
    ("one closed, never seen", [(0, "on", 1.0), (0, "off", 4.0)], 10.0, (1, 3.0, 3.0, 0.0, 0, 0)),
    (
        "seen after 0.5 s, fixed 2 s later",
        [(0, "on", 1.0), (0, "seen", 1.5), (0, "off", 3.5)],
        10.0,
        (1, 2.5, 0.5, 2.0, 1, 0),
    ),
    (
        "second notice ignored",
        [(0, "on", 1.0), (0, "seen", 2.0), (0, "seen", 3.0), (0, "off", 5.0)],
        10.0,
        (1, 4.0, 1.0, 3.0, 1, 0),
    ),
    ("notice while healthy ignored", [(0, "seen", 1.0)], 10.0, (0, 0.0, 0.0, 0.0, 0, 0)),
    ("open at the end", [(1, "on", 6.0)], 10.0, (1, 4.0, 4.0, 0.0, 0, 1)),
    (
        "two hosts overlapping",
        [(0, "on", 1.0), (1, "on", 2.0), (0, "off", 3.0), (1, "seen", 4.0), (1, "off", 7.0)],
        10.0,
        (2, 7.0, 4.0, 3.0, 1, 0),
    ),
    (
        "repeated 'on' is idempotent",
        [(0, "on", 1.0), (0, "on", 2.0), (0, "off", 3.0), (0, "off", 4.0)],
        10.0,
        (1, 2.0, 2.0, 0.0, 0, 0),
    ),
    (
        "same host twice",
        [(0, "on", 1.0), (0, "off", 2.0), (0, "on", 5.0), (0, "seen", 5.0), (0, "off", 6.0)],
        10.0,
        (2, 2.0, 1.0, 1.0, 1, 0),
    ),
]


@pytest.mark.parametrize(("name", "steps", "end", "want"), TRACES, ids=[t[0] for t in TRACES])
def test_violation_accounting(name: str, steps: list, end: float, want: tuple) -> None:
    m = Metrics(3, monitor_period_s=1.0, site_of=[0, 0, 0])
    for h, what, t in steps:
        if what == "seen":
            m.detected(h, t)
        else:
            m.set_violation(h, what == "on", t)
    m.finish(end)
    s = m.summary()
    got = (
        s["violations"],
        s["cumulated_violation_s"],
        s["violation_detection_s"],
        s["violation_fix_s"],
        s["violations_detected"],
        s["violations_open_at_end"],
    )
    assert got == pytest.approx(want)
    assert s["cumulated_violation_s"] == pytest.approx(
        s["violation_detection_s"] + s["violation_fix_s"]
    )
    if want[0]:
        assert s["mean_violation_s"] == pytest.approx(want[1] / want[0])
    else:
        assert s["mean_violation_s"] is None


def test_finish_is_idempotent_and_series_is_consistent() -> None:
    m = Metrics(2, monitor_period_s=1.0, site_of=[0, 1])
    m.set_violation(0, True, 0.0)
    m.set_violation(1, True, 5.0)
    m.set_violation(0, False, 10.0)
    m.finish(20.0)
    m.finish(30.0)
    assert m.summary()["cumulated_violation_s"] == pytest.approx(25.0)
    t, y = m.binned_violations(5.0, 20.0)
    assert t == [0.0, 5.0, 10.0, 15.0]
    assert y == pytest.approx([1.0, 2.0, 1.0, 1.0])
    # the area under the binned series is the cumulated violation time
    assert sum(v * 5.0 for v in y) == pytest.approx(25.0)


def test_migrations_partitions_messages_and_launches() -> None:
    m = Metrics(4, monitor_period_s=1.0, site_of=[0, 0, 1, 1])
    m.migration_started(0, 1)
    m.migration_started(0, 2)
    m.migration_ended(True, 10.0)
    m.migration_ended(True, 12.0)
    m.migration_ended(False, 0.0)
    m.partition(4, SUCCESS)
    m.partition(6, SUCCESS)
    m.partition(9, "failure")
    m.message(0, 0, "IspForward")
    m.message(0, 1, "IspForward")
    m.message(1, 0, "Update")
    m.launch(0.01)
    m.launch(None)
    s = m.summary()
    assert (s["migrations"], s["migrations_failed"], s["mean_migration_s"]) == (2, 1, 11.0)
    assert s["inter_site_migrations"] == 1 and s["inter_site_messages"] == 2
    assert s["inter_site_operations"] == 3
    assert s["mean_partition_size"] == 5.0
    assert s["partitions"] == {"failure": 1, SUCCESS: 2}
    assert s["messages"] == {"IspForward": 2, "Update": 1}
    assert (s["launch_requests"], s["launches_placed"], s["launch_latency_p50_s"]) == (2, 1, 0.01)


def test_empty_summary_uses_null_for_undefined_means() -> None:
    s = Metrics(1, monitor_period_s=1.0, site_of=[0]).summary()
    for key in ("mean_partition_size", "mean_migration_s", "launch_latency_p99_s"):
        assert s[key] is None
    assert s["migrations"] == 0 and s["monitor_period_s"] == 1.0


@pytest.mark.parametrize(
    ("values", "q", "want"),
    [([], 50, None), ([3.0], 99, 3.0), ([1, 2, 3, 4], 50, 2), ([1, 2, 3, 4], 99, 4)],
)
def test_percentile(values: list, q: float, want: float | None) -> None:
    assert percentile(values, q) == want


def test_binned_violations_terminates_on_float_bin_edges():
    """(5 * 0.09) // 0.09 == 4.0: a violation starting exactly on that bin edge made the
    binning loop forever (it hung `dvms sim run --out`)."""
    import signal

    m = Metrics(1, monitor_period_s=1.0, site_of=[0])
    step = 18.0 / 200
    edge = 5 * step
    m.set_violation(0, True, edge)
    m.set_violation(0, False, edge + 3 * step)
    m.finish(18.0)

    def hung(signum, frame):
        raise TimeoutError("binned_violations did not terminate")

    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(5)
    try:
        t, y = m.binned_violations(step, 18.0)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    assert len(t) == 200
    assert abs(sum(y) * step - 3 * step) < 1e-9
