"""Real data: the WonderNetwork 222-node RTT matrix (shared/data/latency, see its README).

The overlay acceptance target is a median relative error <= 0.10 over all pairs. This
test runs the serf-style offline simulation (every node samples one uniformly random
peer per cycle, true symmetrised RTTs) and checks the target is met after 200 samples
per node. Measured, seeds 1..6 (median / 90th percentile):
  after  50 samples per node: 0.167..0.195 / 0.97..1.19
  after 200 samples per node: 0.082..0.086 / 0.311..0.337
  after 1000 samples per node: 0.071..0.072 (the shared README's numpy baseline: 0.073)
The median first drops under 0.10 at about 100..150 samples per node (222 nodes); in a
2,000-node tiling of the matrix it takes about 150..160.
"""

import random
from pathlib import Path

import numpy as np
import pytest

from dvms.vivaldi import VivaldiConfig
from dvms.vivaldi.phantom import evaluate, load_matrix_ms, make_clients, simulate

LATENCY = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "latency"
MATRIX = LATENCY / "wondernetwork222_avg_rtt_ms.csv"


@pytest.fixture(scope="module")
def truth():
    if not MATRIX.is_file():
        pytest.skip(f"latency matrix not found at {MATRIX}")
    return load_matrix_ms(MATRIX)  # symmetrised: (M + M.T) / 2, seconds


def test_matrix_is_what_the_readme_says(truth):
    assert truth.shape == (222, 222)
    off = truth[~np.eye(222, dtype=bool)]
    assert (off > 0).all()
    assert 0.13 < float(np.median(off)) < 0.15  # README: 141.5 ms


def test_wondernetwork_median_error_within_target(truth):
    clients = make_clients(len(truth), VivaldiConfig(), seed=1)
    rng = random.Random(1)
    simulate(clients, truth, 50, rng)
    early = evaluate(clients, truth)
    simulate(clients, truth, 150, rng)  # 200 samples per node in all
    late = evaluate(clients, truth)
    print(f"WonderNetwork 222, seed 1: after 50 samples/node {early}; after 200 {late}")
    assert late.median <= 0.10  # the acceptance target
    assert late.p90 <= 0.40  # measured 0.311..0.337, x 1.2
    assert late.median < early.median  # it is the learning that gets it there
    assert all(c.stats.resets == 0 and c.stats.rejected == 0 for c in clients)
