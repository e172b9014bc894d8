"""Phantom generators and serf's performance tests (coordinate/performance_test.go).

How the thresholds were derived (once, for this implementation): each scenario was
run with seeds 1..12, grouped in four triples (1-3, 4-6, 7-9, 10-12); a test asserts
the median over its triple (seeds 1-3) of the mean and of the max relative error, so
one seed landing in an odd equilibrium does not decide it (split, seed 4: the two
LANs collapse to points and LAN RTTs are carried by the adjustment terms, mean RE
0.0025 instead of 0.00005). Threshold = the worst triple median seen x 1.3, rounded
up. Each comment quotes that worst value and serf's own threshold for comparison; an
untrained system sits near relative error 1, so every bound is at least 10x below
what a broken update rule gives.
"""

import math
import random
import statistics
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from dvms.vivaldi import Coordinate, VivaldiConfig
from dvms.vivaldi.phantom import (
    evaluate,
    generate_circle,
    generate_grid,
    generate_line,
    generate_random,
    generate_split,
    generate_square,
    load_matrix_ms,
    make_clients,
    simulate,
)

CFG = VivaldiConfig()
CFG2 = replace(CFG, dimensionality=2)

# -- generators ----------------------------------------------------------------------


def _symmetric_zero_diagonal(m: np.ndarray) -> bool:
    return bool(np.array_equal(m, m.T) and not np.diag(m).any())


def test_generators_shapes_and_values():
    line = generate_line(4, 0.01)
    assert line[0, 3] == pytest.approx(0.03) and line[2, 1] == pytest.approx(0.01)
    grid = generate_grid(9, 0.01)  # 3 x 3: node 0 at (0, 0), node 8 at (2, 2)
    assert grid[0, 8] == pytest.approx(math.sqrt(8) * 0.01)
    split = generate_split(6, 0.001, 0.01)  # serf's split: nodes 0..3 | 4..5
    assert split[0, 3] == pytest.approx(0.001) and split[3, 4] == pytest.approx(0.011)
    circle = generate_circle(8, 0.1)
    assert (circle[0, 1:] == 0.2).all()
    assert circle[2, 6] == pytest.approx(0.2)  # opposite points of the circle
    square = generate_square(0.5)
    assert square[0, 1] == square[1, 2] == 0.5
    assert square[0, 2] == pytest.approx(0.5 * math.sqrt(2)) == square[1, 3]
    rnd = generate_random(5, 0.1, 0.01, random.Random(1))
    assert np.array_equal(rnd, generate_random(5, 0.1, 0.01, random.Random(1)))
    for m in (line, grid, split, circle, square, rnd):
        assert _symmetric_zero_diagonal(m)


def test_load_matrix_ms_symmetrises_and_converts(tmp_path):
    p = tmp_path / "m.csv"
    p.write_text("0,10,20\n12, 0,30\n20 30 5\n\n")
    m = load_matrix_ms(p)
    want = np.array([[0, 0.011, 0.02], [0.011, 0, 0.03], [0.02, 0.03, 0]])
    assert np.allclose(m, want, rtol=0, atol=1e-15)
    raw = load_matrix_ms(p, symmetrise=False)
    assert raw[1, 0] == pytest.approx(0.012) and raw[2, 2] == 0.0
    p.write_text("0,1\n1,0\n2,2\n")
    with pytest.raises(ValueError, match="square"):
        load_matrix_ms(p)


def test_simulate_with_peer_subsets_only_samples_those_peers():
    truth = generate_line(5, 0.01)
    clients = make_clients(5, CFG, 1)
    simulate(clients, truth, 3, random.Random(1), peers=[[1], [0], [], [4], [3]])
    assert [c.known_peers() for c in clients] == [1, 1, 0, 1, 1]
    assert clients[2].coordinate == Coordinate.origin(CFG)


# -- serf performance tests ----------------------------------------------------------


def _run(truth: np.ndarray, config: VivaldiConfig, cycles: int, seed: int):
    clients = make_clients(len(truth), config, seed)
    simulate(clients, truth, cycles, random.Random(seed))
    return clients, evaluate(clients, truth)


def _median_of_seeds(truth, config, cycles=1000, seeds=(1, 2, 3)):
    runs = [_run(truth, config, cycles, s) for s in seeds]
    mean = statistics.median(st.mean for _, st in runs)
    worst = statistics.median(st.max for _, st in runs)
    return mean, worst, [clients for clients, _ in runs]


def test_performance_line():
    # 10 nodes, 10 ms apart. Worst triple median: mean 0.00316, max 0.0204.
    # serf: avg <= 0.0031, max <= 0.0130.
    mean, worst, _ = _median_of_seeds(generate_line(10, 0.010), CFG)
    assert mean <= 0.0041
    assert worst <= 0.027


def test_performance_grid():
    # 25 nodes on a 5 x 5 grid, 10 ms spacing. Worst triple median: mean 0.00157,
    # max 0.0143. serf: avg <= 0.0016, max <= 0.0230.
    mean, worst, _ = _median_of_seeds(generate_grid(25, 0.010), CFG)
    assert mean <= 0.0021
    assert worst <= 0.019


def test_performance_split():
    # Two LANs (1 ms) joined by a 10 ms WAN. Worst triple median: mean 0.000056,
    # max 0.00038. serf: avg <= 0.000060, max <= 0.00048.
    mean, worst, _ = _median_of_seeds(generate_split(25, 0.001, 0.010), CFG)
    assert mean <= 0.000075
    assert worst <= 0.0005


def test_performance_height():
    # 24 nodes on a 100 ms circle plus one node 200 ms from all of them, in 2-D: only
    # the height can place it. Worst triple median: mean 0.00392, max 0.0953; centre
    # height >= 1.007 r, others' largest height <= 0.0325 r (single seeds: 0.049 r).
    # serf: avg <= 0.0028, max <= 0.064, centre >= 0.97 r, others <= 0.03 r.
    radius = 0.100
    mean, worst, runs = _median_of_seeds(generate_circle(25, radius), CFG2)
    assert mean <= 0.0052
    assert worst <= 0.125
    centre = statistics.median(clients[0].coordinate.height for clients in runs)
    others = statistics.median(max(c.coordinate.height for c in clients[1:]) for clients in runs)
    assert centre >= 0.97 * radius
    assert others <= 0.043 * radius


def test_performance_random():
    # 25 nodes, RTTs drawn from N(100 ms, 10 ms): no good embedding exists. Worst
    # triple median: mean 0.0585, max 0.284. serf: avg <= 0.075, max <= 0.33.
    truth = generate_random(25, 0.100, 0.010, random.Random(1))
    mean, worst, _ = _median_of_seeds(truth, CFG)
    assert mean <= 0.076
    assert worst <= 0.37


def test_performance_drift():
    # serf's drift test: 4 nodes on a 500 ms square, 2-D, placed with a corner at the
    # origin (centre 0.354 s away). After 1,000 cycles take the distance of the bounding
    # box centre from the origin; 10,000 more cycles of gravity must shrink it to
    # <= 0.8 of that (serf's bound). Measured over seeds 1..8: 0.741..0.761; with
    # gravity disabled (rho = 1e12) it is 1.000, so the bound separates the two.
    # The embedding must stay accurate meanwhile: max RE 0.0010..0.0015 -> <= 0.002.
    side = 0.5
    truth = generate_square(side)
    clients = make_clients(4, CFG2, 1)
    for client, corner in zip(clients, [(0, 0), (0, side), (side, side), (side, 0)], strict=True):
        client.set_coordinate(replace(client.coordinate, vec=(float(corner[0]), float(corner[1]))))

    def centre_error() -> float:
        vecs = [c.coordinate.vec for c in clients]
        mid = [(min(v[k] for v in vecs) + max(v[k] for v in vecs)) / 2 for k in range(2)]
        return math.hypot(*mid)

    rng = random.Random(1)
    simulate(clients, truth, 1000, rng)
    baseline = centre_error()
    assert baseline > 0.3  # sanity: the square really starts off-centre
    simulate(clients, truth, 10000, rng)
    assert centre_error() <= 0.8 * baseline
    assert evaluate(clients, truth).max <= 0.002


def test_offline_benchmark_prints_a_convergence_curve(tmp_path):
    truth_ms = generate_grid(9, 10.0)  # 3 x 3 grid, 10 ms spacing
    path = tmp_path / "grid.csv"
    path.write_text("\n".join(",".join(f"{x:.3f}" for x in row) for row in truth_ms))
    bench = Path(__file__).resolve().parents[2] / "bench" / "vivaldi.py"
    out = subprocess.run(
        [sys.executable, str(bench), str(path), "--checkpoints", "5,400"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    lines = out.stdout.splitlines()
    assert len(lines) == 3 and "µs per update" in lines[-1]
    first, last = (float(line.split("median RE ")[1].split()[0]) for line in lines[:2])
    assert last < first and last < 0.05
