"""The latency filter's age limit: a dated RTT sample older than
``latency_filter_max_age_s`` no longer counts in its peer's median."""

import random
import statistics

import pytest

from dvms.vivaldi import Coordinate, VivaldiClient, VivaldiConfig

CFG = VivaldiConfig()
LAN_RTT = 50e-6


def settled_pair() -> tuple[VivaldiClient, Coordinate]:
    """A client settled on a peer 50 µs away, sampled once a second (dated)."""
    client = VivaldiClient(CFG, random.Random(1))
    peer = Coordinate((0.0,) * CFG.dimensionality, 0.05, 0.0, CFG.height_min)
    for t in range(100):
        client.update("p", peer, LAN_RTT, now=float(t))
    return client, peer


@pytest.mark.parametrize("dated", [True, False])
def test_two_delayed_answers_do_not_stay_the_median_once_they_are_old(dated):
    """Two delayed answers in a row, then a quiet one minutes later: dated, the old ones
    have left the window and the quiet sample counts as it is; undated (serf), the
    median is still a delayed answer and the coordinate is thrown milliseconds off."""
    client, peer = settled_pair()
    client.update("p", peer, 0.03, now=100.0)
    client.update("p", peer, 0.04, now=101.0)
    before = client.distance_to(peer)
    later = 101.0 + CFG.latency_filter_max_age_s + 1.0
    client.update("p", peer, LAN_RTT, now=later if dated else None)
    after = client.distance_to(peer)
    if dated:
        assert after < before  # pulled back towards 50 µs
    else:
        assert after > before  # pushed out again by the stale median (30 ms)


def test_samples_within_the_age_limit_are_still_filtered():
    client, peer = settled_pair()
    at = client.distance_to(peer)
    client.update("p", peer, 0.05, now=100.0)  # one spike: the median is still 50 µs
    assert client.distance_to(peer) == pytest.approx(at, abs=20e-6)


def test_a_lan_cluster_leaves_the_error_clamp_sooner_when_samples_age_out():
    """50 clients on a 50 µs LAN, one sample per client per second; 20 s of answers
    delayed by 3-100 ms puts every error estimate at its clamp. Afterwards, with every
    sample a clean 50 µs: after 160 s the median estimate is back under 0.5 when samples
    are dated (they leave the filter after 60 s); undated (serf), the delayed samples
    stay the median of their peers and it is still above 0.5. Both stay at the clamp for
    the first minute and more: why the overlay bounds its fast probing after a surge."""

    def median_error_after_window(dated: bool) -> tuple[float, float]:
        rng = random.Random(7)
        clients = [VivaldiClient(CFG, random.Random(i)) for i in range(50)]
        t = 0.0

        def rounds(k: int, rtt) -> None:
            nonlocal t
            for _ in range(k):
                t += 1.0
                for i, c in enumerate(clients):
                    j = rng.randrange(len(clients) - 1)
                    j += j >= i
                    c.update(j, clients[j].coordinate, rtt(), now=t if dated else None)

        rounds(200, lambda: LAN_RTT)
        rounds(20, lambda: rng.uniform(3e-3, 0.1))
        rounds(60, lambda: LAN_RTT)
        minute = statistics.median(c.coordinate.error for c in clients)
        rounds(100, lambda: LAN_RTT)
        return minute, statistics.median(c.coordinate.error for c in clients)

    dated_minute, dated = median_error_after_window(True)
    serf_minute, serf = median_error_after_window(False)
    assert dated_minute == serf_minute == CFG.error_max
    assert dated < 0.5 < serf


def test_one_delayed_answer_of_two_is_not_the_filtered_rtt():
    """Delays only add: of a delayed answer and a quiet one right after it, the filter
    uses the quiet one (the lower median), so the coordinate comes back at once. With
    the upper median (serf's) the delayed answer counted twice."""
    client, peer = settled_pair()
    client.update("q", peer, 0.03, now=100.0)  # q's first sample: used as it is
    thrown = client.distance_to(peer)
    client.update("q", peer, LAN_RTT, now=101.0)
    assert client.distance_to(peer) < thrown
