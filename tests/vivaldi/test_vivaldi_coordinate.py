"""Coordinate, wire codec, nearest() and the vectorised helpers (serf coordinate_test.go)."""

import math
import random

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dvms.vivaldi import (
    Coordinate,
    VivaldiConfig,
    nearest,
    predicted_rtt_matrix,
    relative_errors,
)

CFG = VivaldiConfig()
finite = st.floats(min_value=-10.0, max_value=10.0, allow_nan=False)
nonneg = st.floats(min_value=0.0, max_value=10.0, allow_nan=False)


def coords(dim: int = 8) -> st.SearchStrategy[Coordinate]:
    return st.builds(
        Coordinate,
        st.tuples(*([finite] * dim)),
        nonneg,
        st.floats(min_value=-1.0, max_value=1.0, allow_nan=False),
        nonneg,
    )


def test_origin_uses_config():
    c = Coordinate.origin(VivaldiConfig(dimensionality=3))
    assert c == Coordinate((0.0, 0.0, 0.0), 1.5, 0.0, 10e-6)
    assert c.is_valid()


def test_distance_hand_placed_exact():
    # serf TestClient_DistanceTo: heights 0, one axis 12.345 s away.
    a = Coordinate((0.0, 0.0, 0.0), 1.0, 0.0, 0.0)
    b = Coordinate((0.0, 0.0, 12.345), 1.0, 0.0, 0.0)
    assert a.distance_to(b) == 12.345
    # 3-4-5 triangle in ms, plus both heights, plus both adjustments.
    a = Coordinate((0.0, 0.0), 0.5, 0.002, 0.001)
    b = Coordinate((0.003, 0.004), 0.5, 0.0005, 0.004)
    assert a.raw_distance_to(b) == pytest.approx(0.005 + 0.001 + 0.004, abs=1e-15)
    assert a.distance_to(b) == pytest.approx(0.010 + 0.0025, abs=1e-15)
    assert b.distance_to(a) == a.distance_to(b)


@given(coords(), coords())
def test_distance_is_symmetric_and_positive(a, b):
    assert a.distance_to(b) == b.distance_to(a)  # bit for bit
    assert a.distance_to(b) >= 0.0


def test_distance_falls_back_to_raw_when_adjusted_is_not_positive():
    a = Coordinate((0.0,), 0.5, -0.02, 0.001)
    b = Coordinate((0.003,), 0.5, -0.01, 0.001)
    assert a.raw_distance_to(b) == pytest.approx(0.005)
    assert a.distance_to(b) == a.raw_distance_to(b)  # 0.005 - 0.03 < 0


def test_distance_dimension_mismatch_raises():
    with pytest.raises(ValueError, match="dimensionality"):
        Coordinate((0.0, 0.0), 1.0, 0.0, 0.0).distance_to(Coordinate((0.0,), 1.0, 0.0, 0.0))


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("field", ["vec", "error", "adjustment", "height"])
def test_is_valid_rejects_non_finite(field, bad):
    good = Coordinate((0.1, 0.2), 0.5, 0.01, 0.001)
    assert good.is_valid()
    parts = {"vec": good.vec, "error": 0.5, "adjustment": 0.01, "height": 0.001}
    parts[field] = (0.1, bad) if field == "vec" else bad
    assert not Coordinate(**parts).is_valid()


def test_is_valid_rejects_negative_error_or_height_and_accepts_huge_finite():
    assert not Coordinate((0.0,), -0.1, 0.0, 0.0).is_valid()
    assert not Coordinate((0.0,), 0.1, 0.0, -1e-9).is_valid()
    assert Coordinate((0.0,), 0.1, -5.0, 0.0).is_valid()  # adjustments may be negative
    assert Coordinate((1e308, 1e308), 0.1, 0.0, 0.0).is_valid()  # sum overflows, values don't


@given(coords())
def test_wire_round_trip(c):
    wire = c.to_wire()
    assert len(wire) == 8 + 3 and all(type(x) is float for x in wire)
    assert Coordinate.from_wire(wire, 8) == c
    assert Coordinate.from_wire(tuple(wire), 8) == c


def test_from_wire_converts_ints():
    c = Coordinate.from_wire([1, 0, 1, 0, 0], 2)
    assert c == Coordinate((1.0, 0.0), 1.0, 0.0, 0.0)
    assert all(type(x) is float for x in c.to_wire())


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (None, "must be a list"),
        ({"vec": [0.0]}, "must be a list"),
        ("0.0,0.0,1.0,0.0,0.0", "must be a list"),
        (b"\x00" * 5, "must be a list"),
        ([0.0, 0.0, 1.0, 0.0], "must have 5"),
        ([0.0] * 6, "must have 5"),
        ([], "must have 5"),
        ([0.0, "0", 1.0, 0.0, 0.0], "not a number"),
        ([0.0, None, 1.0, 0.0, 0.0], "not a number"),
        ([True, 0.0, 1.0, 0.0, 0.0], "not a number"),
        ([[0.0], 0.0, 1.0, 0.0, 0.0], "not a number"),
        ([math.nan, 0.0, 1.0, 0.0, 0.0], "not finite"),
        ([0.0, 0.0, math.inf, 0.0, 0.0], "not finite"),
        ([0.0, 0.0, 1.0, -math.inf, 0.0], "not finite"),
        ([10**400, 0.0, 1.0, 0.0, 0.0], "float range"),
        ([0.0, 0.0, -1.0, 0.0, 0.0], "error must be >= 0"),
        ([0.0, 0.0, 1.0, 0.0, -0.001], "height must be >= 0"),
    ],
)
def test_from_wire_rejects_hostile_input(data, problem):
    with pytest.raises(ValueError, match=problem):
        Coordinate.from_wire(data, 2)


wire_junk = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=4)
    | st.binary(max_size=4),
    lambda inner: st.lists(inner, max_size=12) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=20,
)


@given(st.one_of(wire_junk, st.lists(st.floats() | st.integers(), min_size=11, max_size=11)))
def test_from_wire_fuzz_raises_value_error_or_returns_valid(data):
    try:
        c = Coordinate.from_wire(data, 8)
    except ValueError:
        return
    assert c.is_valid() and len(c.vec) == 8


def _coord(x: float, height: float = 0.0, adjustment: float = 0.0) -> Coordinate:
    return Coordinate((x, 0.0), 0.5, adjustment, height)


def test_nearest_sorted_by_rtt_then_key():
    own = _coord(0.0)
    peers = [
        ("d", _coord(0.040)),
        ("b", _coord(0.010)),
        ("c", _coord(-0.010)),  # same predicted RTT as "b": key decides
        ("a", _coord(0.030)),
        ("e", _coord(0.001, height=0.050)),  # close in space, far by height
    ]
    want = [("b", 0.010), ("c", 0.010), ("a", 0.030), ("d", 0.040)]
    for _ in range(5):
        random.Random(_).shuffle(peers)
        got = nearest(own, peers, 4)
        assert [k for k, _ in got] == [k for k, _ in want]
        assert [d for _, d in got] == pytest.approx([d for _, d in want])
    assert [k for k, _ in nearest(own, peers, 10)] == ["b", "c", "a", "d", "e"]
    assert nearest(own, peers, 0) == []
    assert nearest(own, iter(peers), 1) == [("b", pytest.approx(0.010))]


def test_nearest_skips_invalid_and_incompatible_peers():
    own = _coord(0.0)
    peers = [
        (1, Coordinate((math.nan, 0.0), 0.5, 0.0, 0.0)),
        (2, Coordinate((0.001,), 0.5, 0.0, 0.0)),
        (3, _coord(0.5)),
    ]
    assert nearest(own, peers, 3) == [(3, pytest.approx(0.5))]


@given(st.lists(coords(3), min_size=1, max_size=12), st.integers(min_value=1, max_value=5))
def test_predicted_rtt_matrix_matches_distance_to(cs, block):
    m = predicted_rtt_matrix(cs, block=block)
    assert m.shape == (len(cs), len(cs))
    for i, a in enumerate(cs):
        for j, b in enumerate(cs):
            assert m[i, j] == pytest.approx(a.distance_to(b), rel=1e-12, abs=1e-12)


def test_predicted_rtt_matrix_edge_cases():
    assert predicted_rtt_matrix([]).shape == (0, 0)
    with pytest.raises(ValueError, match="mixed"):
        predicted_rtt_matrix([_coord(0.0), Coordinate((0.0,), 1.0, 0.0, 0.0)])


def test_relative_errors_hand_computed():
    truth = np.array([[0.0, 0.1, 0.2], [0.1, 0.0, 0.0], [0.2, 0.0, 0.0]])
    pred = np.array([[9.0, 0.15, 0.1], [0.05, 9.0, 0.3], [0.2, 0.3, 9.0]])
    # Diagonal and zero-truth entries are never scored.
    got = relative_errors(pred, truth)
    assert sorted(got.tolist()) == pytest.approx([0.0, 0.5, 0.5, 0.5])
    upper = np.triu(np.ones((3, 3), dtype=bool), k=1)
    assert sorted(relative_errors(pred, truth, upper).tolist()) == pytest.approx([0.5, 0.5])
    with pytest.raises(ValueError, match="shape"):
        relative_errors(pred, truth[:2])
    with pytest.raises(ValueError, match="mask"):
        relative_errors(pred, truth, upper[:2])
