"""Table and statistical tests for the pure network model (no trio)."""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dvms.transport.netmodel import (
    ConstantLatency,
    LatencyMatrixError,
    MatrixLatency,
    NetworkConditions,
    NetworkModel,
    SitesLatency,
    parse_latency_matrix,
)

WONDERNETWORK = Path("/work/shared/data/latency/wondernetwork222_avg_rtt_ms.csv")
if not WONDERNETWORK.exists():  # a checkout elsewhere: the repo-relative shared folder
    WONDERNETWORK = Path(__file__).resolve().parents[3] / "shared/data/latency" / WONDERNETWORK.name

# ---------------------------------------------------------------------------------------
# Latency models


@pytest.mark.parametrize(
    ("a", "b", "rtt", "same"),
    [(0, 1, 0.02, False), (1, 0, 0.02, False), (5, 5, 0.0, True), (0, 9999, 0.02, False)],
)
def test_constant_latency(a: int, b: int, rtt: float, same: bool) -> None:
    model = ConstantLatency(0.02)
    assert model.rtt(a, b) == rtt
    assert model.same_position(a, b) is same
    assert model.size is None


@pytest.mark.parametrize("bad", [-0.001, math.nan, math.inf])
def test_constant_latency_rejects_bad_rtt(bad: float) -> None:
    with pytest.raises(ValueError):
        ConstantLatency(bad)


# Three sites; the table is deliberately asymmetric between sites 0 and 2.
SITES_WAN = [[0.0, 0.010, 0.090], [0.010, 0.0, 0.050], [0.110, 0.050, 0.0]]
SITE_OF = [0, 0, 1, 2]


@pytest.mark.parametrize(
    ("a", "b", "rtt"),
    [
        (0, 0, 0.0),  # the node itself
        (0, 1, 0.0005),  # same site: LAN
        (0, 2, 0.010),
        (2, 0, 0.010),
        (2, 3, 0.050),
        (0, 3, 0.100),  # (0.090 + 0.110) / 2: symmetrised
        (3, 0, 0.100),
        (4, 2, 0.010),  # position 4 wraps to site_of[0] = 0
        (4, 0, 0.0005),  # 4 and 0 share a slot: LAN, not 0
        (7, 4, 0.100),  # 7 -> site 2, 4 -> site 0
    ],
)
def test_sites_latency_table(a: int, b: int, rtt: float) -> None:
    model = SitesLatency(SITE_OF, SITES_WAN, lan_rtt_s=0.0005)
    assert model.rtt(a, b) == pytest.approx(rtt, abs=1e-15)
    assert model.size == 4


def test_sites_latency_same_position_and_site() -> None:
    model = SitesLatency(SITE_OF, SITES_WAN)
    assert model.same_position(0, 4) and model.same_position(3, 7)
    assert not model.same_position(0, 1)  # same site, different slots
    assert [model.site(i) for i in range(8)] == [0, 0, 1, 2, 0, 0, 1, 2]


@pytest.mark.parametrize(
    ("site_of", "wan"),
    [
        ([0, 3], SITES_WAN),  # no site 3
        ([], SITES_WAN),
        ([0, 1], [[0.0, 0.1]]),  # not square
        ([0, 1], [[0.0, -0.1], [0.1, 0.0]]),  # negative
        ([0, 1], [[0.0, math.nan], [0.1, 0.0]]),
    ],
)
def test_sites_latency_rejects_bad_input(site_of: list[int], wan: list[list[float]]) -> None:
    with pytest.raises(ValueError):
        SitesLatency(site_of, wan)


# ---------------------------------------------------------------------------------------
# Matrix files


@pytest.mark.parametrize(
    ("text", "rows"),
    [
        ("0 1\n1 0\n", [[0, 1], [1, 0]]),
        ("0,1\n1,0", [[0, 1], [1, 0]]),
        ("0 , 1.5\n 2e1,0 \n", [[0, 1.5], [20, 0]]),
        ("# header\n\n0\t1  # trailing\n\n  1 0\n# end\n", [[0, 1], [1, 0]]),
        ("7", [[7]]),
    ],
)
def test_parse_latency_matrix_accepts(text: str, rows: list[list[float]]) -> None:
    assert parse_latency_matrix(text) == rows


@pytest.mark.parametrize(
    ("text", "line", "column", "fragment"),
    [
        ("0 1\n1 x\n", 2, 2, "'x' is not a number"),
        ("# c\n\n0,1\nabc,0\n", 4, 1, "'abc' is not a number"),
        ("0,,1\n1,0,1\n1,1,0", 1, 2, "empty field"),
        ("0 1 2\n1 0\n", 2, 3, "row has 2 columns, expected 3 like line 1"),
        ("0 1\n1 0 5\n", 2, 3, "row has 3 columns, expected 2"),
        ("0 -1\n1 0\n", 1, 2, "'-1' is not a finite RTT >= 0"),
        ("0 1\nnan 0\n", 2, 1, "'nan' is not a finite RTT"),
        ("0 inf\n1 0\n", 1, 2, "'inf' is not a finite RTT"),
        ("0 1 2\n1 0 2\n", None, None, "not square: 2 rows of 3 columns"),
        ("# only a comment\n\n", None, None, "no matrix rows"),
    ],
)
def test_parse_latency_matrix_errors_name_line_and_column(
    text: str, line: int | None, column: int | None, fragment: str
) -> None:
    with pytest.raises(LatencyMatrixError) as info:
        parse_latency_matrix(text, source="m.csv")
    err = info.value
    assert (err.line, err.column) == (line, column)
    assert fragment in str(err)
    assert str(err).startswith("m.csv")
    if line is not None:
        assert f"m.csv:{line}, column {column}:" in str(err)


def test_matrix_from_file_symmetrises_and_converts_ms(tmp_path: Path) -> None:
    path = tmp_path / "m.txt"
    path.write_text("0 10 40\n30 0 5\n40 5 0\n")
    model = MatrixLatency.from_file(path, lan_rtt_s=0.001)
    assert model.size == 3
    assert model.rtt(0, 1) == pytest.approx(0.020)  # (10 + 30) / 2 ms
    assert model.rtt(1, 0) == model.rtt(0, 1)
    assert model.rtt(1, 2) == pytest.approx(0.005)
    assert model.rtt(2, 2) == 0.0


def test_matrix_node_i_takes_row_i_mod_size(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text("0,10,40\n10,0,5\n40,5,0\n")
    model = MatrixLatency.from_file(path, lan_rtt_s=0.0005)
    for a in range(9):
        for b in range(9):
            if a == b:
                expected = 0.0
            elif a % 3 == b % 3:
                expected = 0.0005
            else:
                expected = model.rtt(a % 3, b % 3)
            assert model.rtt(a, b) == expected
            assert model.same_position(a, b) is (a % 3 == b % 3)
    assert model.rtt(4, 2) == pytest.approx(0.005)


def test_matrix_from_file_reports_path_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("0,1\n1,zero\n")
    with pytest.raises(LatencyMatrixError, match=r"bad\.csv:2, column 2: 'zero'"):
        MatrixLatency.from_file(path)


@pytest.mark.skipif(not WONDERNETWORK.exists(), reason="shared latency data not available")
def test_shipped_wondernetwork_matrix_loads_symmetrised() -> None:
    raw = np.loadtxt(WONDERNETWORK, delimiter=",")
    model = MatrixLatency.from_file(WONDERNETWORK)
    assert model.size == 222
    rng = random.Random(3)
    for _ in range(200):
        a, b = rng.randrange(222), rng.randrange(222)
        if a != b:
            assert model.rtt(a, b) == pytest.approx((raw[a, b] + raw[b, a]) / 2000)
    assert model.rtt(0, 222) == 0.0005
    table = model.to_array()
    assert np.array_equal(table, table.T)


@settings(max_examples=40, deadline=None)
@given(
    st.integers(1, 6).flatmap(
        lambda n: st.lists(
            st.lists(st.floats(0, 1000, allow_nan=False), min_size=n, max_size=n),
            min_size=n,
            max_size=n,
        )
    ),
    st.integers(0, 50),
    st.integers(0, 50),
)
def test_matrix_rtt_is_symmetric_non_negative_and_periodic(
    rows: list[list[float]], a: int, b: int
) -> None:
    model = MatrixLatency(rows, lan_rtt_s=0.0005)
    n = len(rows)
    assert model.rtt(a, b) == model.rtt(b, a) >= 0.0
    if a + n == b:
        assert model.rtt(a + n, b) == 0.0
    elif a % n == b % n:  # same row, different nodes: the LAN stand-in
        assert model.rtt(a + n, b) == 0.0005
    else:
        assert model.rtt(a + n, b) == model.rtt(a, b)
    if a % n != b % n:
        assert model.rtt(a, b) == pytest.approx((rows[a % n][b % n] + rows[b % n][a % n]) / 2)


# ---------------------------------------------------------------------------------------
# NetworkConditions and NetworkModel


@pytest.mark.parametrize(
    "kwargs", [{"loss": -0.1}, {"loss": 1.5}, {"duplicate": 2.0}, {"jitter": -1.0}]
)
def test_conditions_reject_out_of_range(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        NetworkConditions(**kwargs)


def test_route_on_a_perfect_network_is_half_the_rtt() -> None:
    model = NetworkModel(SitesLatency(SITE_OF, SITES_WAN), rng=random.Random(1))
    assert model.route(0, 3, 0.0) == (0.050,)
    assert model.route(0, 1, 0.0) == (0.00025,)
    assert model.statistics().delivered == 2


N = 20_000


def _bounds(p: float, n: int = N, sigmas: float = 5.0) -> tuple[float, float]:
    half = sigmas * math.sqrt(p * (1 - p) / n)
    return p - half, p + half


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("loss", [0.05, 0.3])
def test_loss_rate_within_bounds(seed: int, loss: float) -> None:
    model = NetworkModel(ConstantLatency(0.01), NetworkConditions(loss=loss), random.Random(seed))
    dropped = sum(1 for i in range(N) if model.route(i % 7, 7 + i % 5, 0.0) == ())
    lo, hi = _bounds(loss)
    assert lo <= dropped / N <= hi
    stats = model.statistics()
    assert (stats.sent, stats.lost, stats.dropped, stats.delivered) == (
        N,
        dropped,
        dropped,
        N - dropped,
    )


@pytest.mark.parametrize("seed", [1, 2])
def test_duplication_rate_within_bounds_and_loss_comes_first(seed: int) -> None:
    conditions = NetworkConditions(loss=0.2, duplicate=0.1)
    model = NetworkModel(ConstantLatency(0.01), conditions, random.Random(seed))
    routes = [model.route(0, 1, 0.0) for _ in range(N)]
    doubled = sum(1 for r in routes if len(r) == 2)
    survived = sum(1 for r in routes if r)
    assert all(len(r) <= 2 for r in routes)
    lo, hi = _bounds(0.1, survived)
    assert lo <= doubled / survived <= hi
    assert model.statistics().duplicated == doubled
    assert model.statistics().delivered == survived + doubled


def test_jitter_mean_and_spread() -> None:
    model = NetworkModel(ConstantLatency(0.2), NetworkConditions(jitter=0.05), random.Random(7))
    delays = np.array([model.route(0, 1, 0.0)[0] for _ in range(N)])
    assert abs(delays.mean() - 0.1) < 5 * 0.005 / math.sqrt(N)
    assert 0.0045 < delays.std() < 0.0055
    assert len(set(delays.tolist())) > N * 0.99  # really random, not a constant


def test_huge_jitter_never_gives_negative_delays() -> None:
    model = NetworkModel(ConstantLatency(0.2), NetworkConditions(jitter=2.0), random.Random(7))
    delays = [model.route(0, 1, 0.0)[0] for _ in range(5000)]
    assert min(delays) == 0.0  # clamped, and with this spread it happens
    assert all(d >= 0.0 for d in delays)


def test_cut_drops_both_directions_until_heal() -> None:
    model = NetworkModel(ConstantLatency(0.01), rng=random.Random(0))
    model.cut([0, 1], [2, 3])
    assert model.route(0, 2, 0.0) == ()
    assert model.route(3, 1, 0.0) == ()
    assert model.route(0, 1, 0.0) == (0.005,)  # same side
    assert model.route(2, 3, 0.0) == (0.005,)
    assert model.route(0, 4, 0.0) == (0.005,)  # 4 is on neither side
    assert model.is_cut(1, 2) and not model.is_cut(1, 4)
    model.cut([4], [0])
    assert model.route(4, 0, 0.0) == ()
    assert model.statistics().cut == 3
    model.heal()
    assert model.route(0, 2, 0.0) == (0.005,)
    assert model.route(4, 0, 0.0) == (0.005,)


def test_cut_with_a_node_on_both_sides_is_an_error() -> None:
    model = NetworkModel(ConstantLatency(0.01))
    with pytest.raises(ValueError, match=r"\[1\]"):
        model.cut([0, 1], [1, 2])


def test_down_node_neither_sends_nor_receives() -> None:
    model = NetworkModel(ConstantLatency(0.01), rng=random.Random(0))
    model.set_down(2)
    assert not model.is_up(2)
    assert model.route(2, 0, 0.0) == ()
    assert model.route(0, 2, 0.0) == ()
    assert model.route(0, 1, 0.0) == (0.005,)
    model.set_up(2)
    model.set_up(2)  # idempotent
    assert model.route(0, 2, 0.0) == (0.005,)
    stats = model.statistics()
    assert (stats.down, stats.delivered, stats.sent) == (2, 2, 4)


def _routes(seed: int) -> list[tuple[float, ...]]:
    latency = MatrixLatency([[0.0, 0.1, 0.2], [0.1, 0.0, 0.3], [0.2, 0.3, 0.0]])
    conditions = NetworkConditions(loss=0.1, duplicate=0.05, jitter=0.02)
    model = NetworkModel(latency, conditions, random.Random(seed))
    pairs = random.Random(99)
    return [model.route(pairs.randrange(6), pairs.randrange(6), float(i)) for i in range(2000)]


def test_same_seed_same_routes_other_seed_other_routes() -> None:
    assert _routes(5) == _routes(5)
    assert _routes(5) != _routes(6)


def test_random_conditions_require_a_seeded_rng() -> None:
    with pytest.raises(ValueError, match="seeded"):
        NetworkModel(ConstantLatency(0.01), NetworkConditions(loss=0.1))
    model = NetworkModel(ConstantLatency(0.01))  # a perfect network draws nothing
    assert model.route(0, 1, 0.0) == (0.005,)
    with pytest.raises(ValueError, match="seeded"):
        model.set_conditions(NetworkConditions(jitter=0.1))


def test_set_conditions_changes_behaviour_from_then_on() -> None:
    model = NetworkModel(ConstantLatency(0.01), rng=random.Random(0))
    assert model.route(0, 1, 0.0) == (0.005,)
    model.set_conditions(NetworkConditions(loss=1.0))
    assert model.route(0, 1, 0.0) == ()
