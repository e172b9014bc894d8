"""Unit tests of the update rule, ported from serf coordinate/client_test.go, plus ours."""

import math
import random
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dvms.vivaldi import (
    Coordinate,
    SampleRejected,
    VivaldiClient,
    VivaldiConfig,
)

CFG3 = VivaldiConfig(dimensionality=3)


def client(config: VivaldiConfig = CFG3, seed: int = 1) -> VivaldiClient:
    return VivaldiClient(config, random.Random(seed))


def at(*vec: float, config: VivaldiConfig = CFG3) -> Coordinate:
    """A fresh coordinate (serf NewCoordinate) moved to ``vec``."""
    return replace(Coordinate.origin(config), vec=tuple(vec))


# -- config ------------------------------------------------------------------------


def test_defaults_are_serfs():
    c = VivaldiConfig()
    assert (c.dimensionality, c.error_max, c.ce, c.cc) == (8, 1.5, 0.25, 0.25)
    assert (c.adjustment_window, c.height_min, c.latency_filter_size) == (20, 10e-6, 3)
    assert (c.gravity_rho, c.rtt_max, c.zero_threshold) == (150.0, 10.0, 1e-6)
    assert VivaldiConfig.serf() == c


@pytest.mark.parametrize(
    "bad",
    [
        {"dimensionality": 0},
        {"dimensionality": 2.0},
        {"dimensionality": True},
        {"latency_filter_size": 0},
        {"latency_filter_peers": 0},
        {"adjustment_window": -1},
        {"cc": 0.0},
        {"ce": 1.5},
        {"error_max": 0.0},
        {"height_min": -1e-6},
        {"rtt_max": math.inf},
        {"gravity_rho": math.nan},
        {"gravity_rho": "150"},
    ],
)
def test_config_rejects_nonsense(bad):
    with pytest.raises((ValueError, TypeError)):
        VivaldiConfig(**bad)


# -- serf TestClient_NewClient / TestClient_Update -------------------------------------


def test_new_client_sits_at_origin():
    c = client().coordinate
    assert c.vec == (0.0, 0.0, 0.0)
    assert (c.error, c.adjustment, c.height) == (1.5, 0.0, 10e-6)
    stats = client().stats
    assert (stats.updates, stats.resets, stats.rejected) == (0, 0, 0)


def test_longer_rtt_pushes_client_away_then_set_coordinate():
    cl = client()
    # A node right above the client, an RTT longer than the current estimate.
    other = at(0.0, 0.0, 0.001)
    c = cl.update("node", other, 2.0 * 0.001)
    assert c.vec[2] < 0.0  # scooted down, away from the peer
    assert c is cl.coordinate
    assert cl.distance_to(other) > 0.001
    assert cl.stats.updates == 1
    cl.set_coordinate(replace(c, vec=(c.vec[0], c.vec[1], 99.0)))
    assert cl.coordinate.vec[2] == 99.0


def test_one_step_by_hand():
    # Fresh client (error 1.5, height 10 us) and a fresh peer 100 ms up the z axis,
    # measured RTT 200 ms. Dabek/serf by hand:
    #   distance  = 0.1 + 2 * 10e-6 = 0.10002          weight w = 1.5 / 3 = 0.5
    #   wrongness = |0.10002 - 0.2| / 0.2 = 0.4999
    #   error     = 0.25 * w * 0.4999 + 1.5 * (1 - 0.25 * w) = 1.3749875
    #   force     = 0.25 * w * (0.2 - 0.10002) = 0.0124975, straight down
    #   height    = 10e-6 + (10e-6 + 10e-6) * force / 0.1 = 12.4995e-6
    #   adjustment= (0.2 - (0.1 + force + height + 10e-6)) / (2 * 20)
    # then gravity pulls towards the origin by ((|vec| + ...) / 150) ** 2, about 1e-8.
    cl = client()
    c = cl.update("p", at(0.0, 0.0, 0.1), 0.2)
    assert c.error == pytest.approx(1.3749875, rel=1e-12)
    assert c.vec[:2] == (0.0, 0.0)
    assert -0.0124975 < c.vec[2] < -0.0124975 + 2e-8
    assert c.height == pytest.approx(12.4995e-6, abs=1e-10)
    adjustment = (0.2 - (0.1 + 0.0124975 + 12.4995e-6 + 10e-6)) / 40
    assert c.adjustment == pytest.approx(adjustment, rel=1e-9)


def test_shorter_rtt_pulls_client_closer():
    cl = client()
    cl.set_coordinate(at(0.0, 0.0, -0.1))
    other = at(0.0, 0.0, 0.1)
    before = cl.distance_to(other)
    cl.update("node", other, 0.05)
    assert cl.coordinate.vec[2] > -0.1
    assert cl.distance_to(other) < before


def test_repeated_samples_converge_on_the_rtt():
    # A confident peer (error 0) gets full weight: the gap shrinks by (1 - cc) a step.
    cl = client()
    other = replace(at(0.0, 0.0, 0.0), error=0.0)
    for _ in range(100):
        cl.update("node", other, 0.080)
    assert cl.distance_to(other) == pytest.approx(0.080, rel=0.01)
    assert cl.coordinate.error < 0.05


def test_sample_weight_follows_the_errors():
    # w = e_own / (e_own + e_peer): an uncertain peer moves us less than a confident one.
    moved = {}
    for peer_error in (0.0, 0.5, 1.5):
        cl = client()
        cl.update("node", replace(at(0.0, 0.0, 0.0), error=peer_error), 0.080)
        moved[peer_error] = math.hypot(*cl.coordinate.vec)
    assert moved[0.0] > moved[0.5] > moved[1.5] > 0.0
    # Full weight: the first step is cc * (rtt - distance); gravity then pulls back by
    # about (0.02 / rho) ** 2 = 2e-8 s.
    step = 0.25 * (0.080 - 2 * 10e-6)
    assert step - 3e-8 < moved[0.0] < step - 1e-8


# -- the RTT sanity window -------------------------------------------------------------


@pytest.mark.parametrize("rtt", [-1e-9, -1.0, 10.000001, 1e9, math.inf, -math.inf, math.nan])
def test_out_of_range_rtt_rejected_without_change(rtt):
    cl = client()
    cl.update("warm", at(0.0, 0.0, 0.01), 0.02)
    before, updates = cl.coordinate, cl.stats.updates
    with pytest.raises(SampleRejected, match="rtt_out_of_range") as info:
        cl.update("node", at(0.0, 0.0, 0.001), rtt)
    assert info.value.reason == "rtt_out_of_range"
    assert isinstance(info.value, ValueError)
    assert cl.coordinate == before
    assert cl.known_peers() == 1  # the rejected sample did not reach the filter
    assert cl.stats.rejected_rtt == 1 and cl.stats.rejected == 1
    assert cl.stats.updates == updates


def test_rtt_window_edges_are_accepted_and_zero_is_counted():
    cl = client()
    cl.update("a", at(0.0, 0.0, 0.001), 0.0)
    cl.update("b", at(0.0, 0.0, 0.001), 10.0)
    assert cl.stats.updates == 2 and cl.stats.zero_rtts == 1 and cl.stats.rejected == 0
    assert cl.coordinate.is_valid()


# -- distance ---------------------------------------------------------------------------


def test_distance_to_hand_placed_coordinate():
    # serf TestClient_DistanceTo, with HeightMin = 0.
    cfg = replace(CFG3, height_min=0.0)
    cl = client(cfg)
    assert cl.distance_to(at(0.0, 0.0, 12.345, config=cfg)) == 12.345
    assert cl.distance_to(at(0.0, 3.0, 4.0, config=cfg)) == 5.0


# -- latency filter (serf TestClient_latencyFilter) -------------------------------------
#
# Observed through the public API: a client with a 3-sample filter fed raw RTTs must end
# up bit-identical to a client without filtering (size 1) fed the expected medians.


def _filter_pair() -> tuple[VivaldiClient, VivaldiClient]:
    return client(replace(CFG3, latency_filter_size=3)), client(
        replace(CFG3, latency_filter_size=1)
    )


PEER = at(0.0, 0.0, 0.1)


def test_latency_filter_median_and_ageing():
    filtered, plain = _filter_pair()
    raw_and_median = [
        (0.201, 0.201),
        (0.200, 0.200),  # lower median of two (serf: upper; delays only add)
        (0.207, 0.201),
        (1.900, 0.207),  # the glitch is median-ed out and never reaches Vivaldi
        (0.203, 0.207),
        (0.199, 0.203),  # 1.9 has aged out
        (0.211, 0.203),
    ]
    for raw, median in raw_and_median:
        filtered.update("alice", PEER, raw)
        plain.update("alice", PEER, median)
        assert filtered.coordinate == plain.coordinate


def test_latency_filter_peers_are_independent_and_forget_drops_history():
    filtered, plain = _filter_pair()
    for raw, median in ((0.201, 0.201), (0.200, 0.200), (0.207, 0.201)):
        filtered.update("alice", PEER, raw)
        plain.update("x", PEER, median)
    filtered.update("bob", PEER, 0.310)  # bob's first sample is used as is
    plain.update("x", PEER, 0.310)
    assert filtered.coordinate == plain.coordinate
    assert filtered.known_peers() == 2
    filtered.forget("alice")
    filtered.forget("never-seen")
    assert filtered.known_peers() == 1
    filtered.update("alice", PEER, 0.888)  # no history: used as is
    plain.update("x", PEER, 0.888)
    assert filtered.coordinate == plain.coordinate


def test_latency_filter_keeps_only_the_most_recently_sampled_peers():
    cfg = replace(CFG3, latency_filter_peers=2)
    filtered, plain = client(cfg), client(replace(cfg, latency_filter_size=1))
    steps = [
        ("a", 0.300, 0.300),
        ("b", 0.100, 0.100),
        ("a", 0.200, 0.200),  # a: (0.300, 0.200) -> lower median 0.200; a is now newest
        ("c", 0.150, 0.150),  # third peer: b, the least recently sampled, is dropped
        ("a", 0.900, 0.300),  # a kept its history: (0.300, 0.200, 0.900) -> 0.300
        ("b", 0.500, 0.500),  # b starts afresh (c is dropped now)
        ("b", 0.110, 0.110),  # (0.500, 0.110) -> 0.110: b's old 0.100 is gone
        ("b", 0.120, 0.120),  # (0.500, 0.110, 0.120) -> 0.120
    ]
    for key, raw, median in steps:
        filtered.update(key, PEER, raw)
        plain.update("x", PEER, median)
        assert filtered.coordinate == plain.coordinate, key
        assert filtered.known_peers() <= 2


# -- NaN, dimension mismatch, hostile peers (serf TestClient_NaN_Defense) ---------------


@pytest.mark.parametrize(
    "bad",
    [
        at(math.nan, 0.0, 0.0),
        at(0.0, math.inf, 0.0),
        replace(at(0.0, 0.0, 0.0), error=math.nan),
        replace(at(0.0, 0.0, 0.0), error=-0.5),
        replace(at(0.0, 0.0, 0.0), height=-math.inf),
        replace(at(0.0, 0.0, 0.0), height=-0.001),
        replace(at(0.0, 0.0, 0.0), adjustment=math.inf),
        replace(at(0.0, 0.0, 0.0), adjustment=math.nan),
    ],
)
def test_invalid_peer_coordinate_rejected_without_change(bad):
    cl = client()
    cl.update("warm", at(0.0, 0.0, 0.01), 0.02)
    before = cl.coordinate
    with pytest.raises(SampleRejected) as info:
        cl.update("node", bad, 0.25)
    assert info.value.reason == "invalid_coordinate"
    assert cl.coordinate == before and cl.coordinate.is_valid()
    assert cl.stats.rejected_coordinate == 1 and cl.known_peers() == 1
    with pytest.raises(ValueError):
        cl.set_coordinate(bad)
    assert cl.coordinate == before


@pytest.mark.parametrize("dim", [2, 4, 6])
def test_dimension_mismatch_rejected_for_update_and_set(dim):
    cl = client()
    other = Coordinate((0.0,) * dim, 1.5, 0.0, 10e-6)
    with pytest.raises(SampleRejected) as info:
        cl.update("node", other, 0.25)
    assert info.value.reason == "dimension_mismatch"
    assert cl.stats.rejected_dimension == 1
    with pytest.raises(ValueError, match="dimensionality"):
        cl.set_coordinate(other)
    assert cl.coordinate == Coordinate.origin(CFG3)


def test_overflowing_update_resets_to_origin_and_counts():
    cl = client()
    cl.update("warm", at(0.0, 0.0, 0.01), 0.02)
    assert cl.coordinate.adjustment != 0.0
    # Finite but absurd: the step overflows to inf, which must reset, not poison.
    huge = at(1e308, 1e308, 1e308)
    assert huge.is_valid()
    c = cl.update("huge", huge, 0.25)
    assert c.is_valid()
    assert c == Coordinate.origin(CFG3)
    assert cl.stats.resets == 1 and cl.stats.updates == 2
    # The adjustment window was cleared too: the next sample starts from scratch.
    c = cl.update("node", at(0.0, 0.0, 0.01), 0.02)
    fresh = client()
    assert c == fresh.update("node", at(0.0, 0.0, 0.01), 0.02)


# -- randomness only from the injected RNG ----------------------------------------------


def test_coinciding_positions_use_the_injected_rng(monkeypatch):
    def boom() -> float:
        raise AssertionError("global random used")

    monkeypatch.setattr(random, "random", boom)
    origin = Coordinate.origin(CFG3)
    a, b, c = client(seed=7), client(seed=7), client(seed=8)
    ca, cb, cc = (x.update("o", origin, 0.05) for x in (a, b, c))
    assert ca == cb
    assert ca.vec != cc.vec
    # Pushed away from the coinciding peer in a random direction, by the same amount.
    assert math.hypot(*ca.vec) == pytest.approx(math.hypot(*cc.vec))
    assert math.hypot(*ca.vec) > 0.0


# -- invariants under arbitrary valid input (hypothesis) --------------------------------

small = st.floats(min_value=-1.0, max_value=1.0, allow_nan=False)
peer_coords = st.builds(
    Coordinate,
    st.tuples(small, small, small),
    st.floats(min_value=0.0, max_value=2.0),
    st.floats(min_value=-0.5, max_value=0.5),
    st.floats(min_value=0.0, max_value=1.0),
)
samples = st.tuples(st.integers(0, 4), peer_coords, st.floats(min_value=0.0, max_value=10.0))


@settings(max_examples=200)
@given(st.lists(samples, min_size=1, max_size=30), st.integers(0, 2**32))
def test_any_valid_input_keeps_the_coordinate_valid(seq, seed):
    cl = client(seed=seed)
    for key, peer, rtt in seq:
        c = cl.update(key, peer, rtt)
        assert c.is_valid() and len(c.vec) == 3
        assert 0.0 <= c.error <= CFG3.error_max
        assert c.height >= CFG3.height_min
        assert math.isfinite(cl.distance_to(peer))
    assert cl.stats.updates == len(seq)
    assert cl.known_peers() == len({key for key, _, _ in seq})
