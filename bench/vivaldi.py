"""Vivaldi offline benchmark: convergence curve on a latency matrix and µs per update.

    .venv/bin/python bench/vivaldi.py ../shared/data/latency/wondernetwork222_avg_rtt_ms.csv \
        [--nodes 2000] [--checkpoints 25,50,100,150,200]

Each node samples one uniformly random peer per round (serf's ``Simulate``); after each
checkpoint (samples per node) it prints the median / p90 / mean relative error over all
pairs (same-row pairs left out) and, at the end, the mean wall time of one update.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Sequence

import numpy as np

from dvms.vivaldi import VivaldiConfig
from dvms.vivaldi.phantom import evaluate, load_matrix_ms, make_clients, simulate


def main(argv: Sequence[str] | None = None) -> int:
    """``python bench/vivaldi.py MATRIX_MS.csv``: convergence curve and µs/update.

    An offline experiment, not a test: prints the relative error after each checkpoint
    (samples per node) and the mean wall time of one ``update`` call.
    """
    parser = argparse.ArgumentParser(prog="python bench/vivaldi.py")
    parser.add_argument("matrix", help="square RTT matrix in ms (comma/space separated)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--nodes", type=int, default=0, help="tile the matrix to N nodes")
    parser.add_argument("--lan-ms", type=float, default=0.5, help="RTT of nodes on one row")
    parser.add_argument("--checkpoints", default="25,50,100,150,200,300,600")
    args = parser.parse_args(argv)

    base = load_matrix_ms(args.matrix)
    nodes = args.nodes or len(base)
    rows = np.arange(nodes) % len(base)
    truth = base[rows][:, rows]
    same_row = rows[:, None] == rows[None, :]
    truth[same_row] = args.lan_ms / 1000.0
    np.fill_diagonal(truth, 0.0)
    clients = make_clients(nodes, VivaldiConfig(), args.seed)
    rng = random.Random(args.seed)
    done, busy = 0, 0.0
    for target in sorted(int(x) for x in args.checkpoints.split(",")):
        start = time.perf_counter()
        simulate(clients, truth, target - done, rng)
        busy += time.perf_counter() - start
        done = target
        st = evaluate(clients, truth, mask=~same_row)
        print(
            f"{nodes} nodes, {done:5d} samples/node: median RE {st.median:.4f}"
            f"  p90 {st.p90:.3f}  mean {st.mean:.3f}"
        )
    print(f"{busy / (done * nodes) * 1e6:.2f} µs per update (simulate loop included)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
