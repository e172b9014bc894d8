"""The clock-offset estimator: NTP-style samples, a median, warnings once."""

import pytest

from dvms.overlay.clock import ClockConfig, ClockOffsets

PEER = 7


def test_offset_is_the_timestamp_difference_plus_half_the_rtt():
    c = ClockOffsets()
    assert c.offset(PEER) is None
    # the peer stamped 105.0 when our clock read 100.0 - 0.01 (sent half an RTT ago)
    assert c.sample(PEER, 105.0, 100.0, 0.02, now=0.0) == []
    assert c.offset(PEER) == pytest.approx(5.01)


def test_the_median_ignores_one_delayed_datagram():
    c = ClockOffsets(ClockConfig(samples=5))
    for i, late in enumerate([0.0, 0.0, 3.0, 0.0, 0.0]):
        c.sample(PEER, 10.0 + i, 10.0 + i + late, None, now=float(i))
    assert c.offset(PEER) == 0.0


def test_a_peer_past_half_the_window_is_named_once_then_recovers():
    c = ClockOffsets(replay_window_s=60.0)
    notes = c.sample(PEER, 190.0, 100.0, None, stale=True, now=0.0)
    assert [(n.kind, n.peer, n.offset_s) for n in notes] == [
        ("skewed", PEER, 90.0),
        ("dropped", PEER, 90.0),
    ]
    assert notes[0].threshold_s == 30.0 and notes[1].dropped == 1
    # no more warnings; the drops are reported at most once per stale_report_s
    for t in range(1, 60):
        assert c.sample(PEER, 190.0 + t, 100.0 + t, None, stale=True, now=float(t)) == []
    again = c.sample(PEER, 250.0, 160.0, None, stale=True, now=60.0)
    assert [(n.kind, n.dropped) for n in again] == [("dropped", 60)]
    # the clock is fixed: the median follows within a few samples and says so once
    kinds = [n.kind for t in range(5) for n in c.sample(PEER, 200.0, 200.0, None, now=61.0 + t)]
    assert kinds == ["recovered"] and c.offset(PEER) == 0.0


def test_a_small_offset_is_not_reported():
    c = ClockOffsets(replay_window_s=60.0)
    assert c.sample(PEER, 129.0, 100.0, None, now=0.0) == []


def test_state_is_bounded():
    c = ClockOffsets(ClockConfig(max_peers=10))
    for peer in range(100):
        c.sample(peer, 1.0, 1.0, None, now=0.0)
    assert len(c.offsets()) == 10 and c.offset(99) == 0.0 and c.offset(0) is None
