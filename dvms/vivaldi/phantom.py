"""Truth-matrix generators and an offline simulate/evaluate kit.

Port of hashicorp/serf ``coordinate/phantom.go``. The generators return symmetric
``numpy`` matrices of true RTTs in seconds with a zero diagonal; :func:`simulate`
feeds clients samples of those RTTs and :func:`evaluate` scores the resulting
coordinates. Used by the tests and for quick offline experiments; the overlay's
network simulation is the real acceptance measurement, not this.

Everything is deterministic given the ``random.Random`` passed in.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from dvms.vivaldi.client import VivaldiClient
from dvms.vivaldi.config import VivaldiConfig
from dvms.vivaldi.coordinate import predicted_rtt_matrix, relative_errors

__all__ = [
    "EvalStats",
    "evaluate",
    "generate_circle",
    "generate_grid",
    "generate_line",
    "generate_random",
    "generate_split",
    "generate_square",
    "load_matrix_ms",
    "make_clients",
    "simulate",
]


def _from_pairs(nodes: int, rtt_of: Callable[[int, int], float]) -> np.ndarray:
    truth = np.zeros((nodes, nodes))
    for i in range(nodes):
        for j in range(i + 1, nodes):
            truth[i, j] = truth[j, i] = rtt_of(i, j)
    return truth


def generate_line(nodes: int, spacing: float) -> np.ndarray:
    """Nodes on a line, ``spacing`` seconds apart (serf ``GenerateLine``)."""
    idx = np.arange(nodes, dtype=float)
    return np.abs(idx[:, None] - idx[None, :]) * spacing


def generate_grid(nodes: int, spacing: float) -> np.ndarray:
    """Nodes on a square grid of side ``isqrt(nodes)`` (serf ``GenerateGrid``)."""
    n = math.isqrt(nodes)
    xy = np.array([(i % n, i // n) for i in range(nodes)], dtype=float)
    diff = xy[:, None, :] - xy[None, :, :]
    return np.sqrt((diff**2).sum(axis=2)) * spacing


def generate_split(nodes: int, lan: float, wan: float) -> np.ndarray:
    """Two LANs (``lan`` s apart inside) joined by a WAN adding ``wan`` s (serf ``GenerateSplit``).

    serf's split index: nodes ``0..nodes // 2`` on one side, the rest on the other.
    """
    split = nodes // 2
    return _from_pairs(nodes, lambda i, j: lan + (wan if (i <= split) != (j <= split) else 0.0))


def generate_circle(nodes: int, radius: float) -> np.ndarray:
    """Nodes 1.. on a circle of ``radius`` s; node 0 is ``2 * radius`` from every other node.

    serf ``GenerateCircle``: node 0 only embeds well with a large height, the others
    lie in a plane with (near) minimal height.
    """

    def rtt(i: int, j: int) -> float:
        if i == 0:
            return 2.0 * radius
        t1 = 2.0 * math.pi * i / nodes
        t2 = 2.0 * math.pi * j / nodes
        return math.hypot(math.cos(t2) - math.cos(t1), math.sin(t2) - math.sin(t1)) * radius

    return _from_pairs(nodes, rtt)


def generate_square(side: float) -> np.ndarray:
    """Four nodes on the corners of a square, in order around it (serf's drift test)."""
    corners = [(0.0, 0.0), (0.0, side), (side, side), (side, 0.0)]
    return _from_pairs(4, lambda i, j: math.dist(corners[i], corners[j]))


def generate_random(nodes: int, mean: float, stddev: float, rng: random.Random) -> np.ndarray:
    """Symmetric RTTs drawn from N(mean, stddev), in pair order (serf ``GenerateRandom``)."""
    return _from_pairs(nodes, lambda i, j: rng.gauss(mean, stddev))


def load_matrix_ms(path: str | os.PathLike[str], *, symmetrise: bool = True) -> np.ndarray:
    """Read a square RTT matrix in milliseconds (comma or whitespace separated) as seconds.

    With ``symmetrise`` the result is ``(M + M.T) / 2``; the diagonal is set to 0.
    """
    with open(path) as fh:
        rows = [line.replace(",", " ").split() for line in fh if line.strip()]
    matrix = np.array(rows, dtype=float) / 1000.0
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"not a square matrix: {matrix.shape}")
    if symmetrise:
        matrix = (matrix + matrix.T) / 2.0
    np.fill_diagonal(matrix, 0.0)
    return matrix


def make_clients(nodes: int, config: VivaldiConfig, seed: int) -> list[VivaldiClient]:
    """``nodes`` fresh clients, client ``i`` with ``random.Random(seed * 1_000_003 + i)``."""
    return [VivaldiClient(config, random.Random(seed * 1_000_003 + i)) for i in range(nodes)]


def simulate(
    clients: Sequence[VivaldiClient],
    truth: np.ndarray,
    cycles: int,
    rng: random.Random,
    *,
    peers: Sequence[Sequence[int]] | None = None,
) -> None:
    """serf ``Simulate``: each cycle, every client in turn samples one random peer.

    The peer is uniform over all other nodes (serf draws over all nodes and skips a
    self-draw), or over ``peers[i]`` when given (e.g. a routing-table-like subset).
    The sampled RTT is the true one; updates are sequential, so a client sees the
    peers' coordinates as of that moment.
    """
    rows = np.asarray(truth, dtype=float).tolist()
    n = len(clients)
    if n < 2:
        return
    randrange = rng.randrange
    for _ in range(cycles):
        for i, client in enumerate(clients):
            if peers is None:
                j = randrange(n - 1)
                if j >= i:
                    j += 1
            else:
                mine = peers[i]
                if not mine:
                    continue
                j = mine[randrange(len(mine))]
            client.update(j, clients[j].coordinate, rows[i][j])


@dataclass(frozen=True, slots=True)
class EvalStats:
    """Relative error ``|predicted - true| / true`` over the scored pairs."""

    mean: float
    median: float
    p90: float
    max: float
    pairs: int


def evaluate(
    clients: Sequence[VivaldiClient], truth: np.ndarray, mask: np.ndarray | None = None
) -> EvalStats:
    """Score all pairs (serf ``Evaluate``, plus median and 90th percentile).

    By default each unordered pair ``i < j`` is scored once; ``mask`` (n x n, bool)
    narrows that further, e.g. to leave out pairs that share a matrix row.
    """
    truth = np.asarray(truth, dtype=float)
    pred = predicted_rtt_matrix([c.coordinate for c in clients])
    upper = np.triu(np.ones(truth.shape, dtype=bool), k=1)
    if mask is not None:
        upper &= np.asarray(mask, dtype=bool)
    errors = relative_errors(pred, truth, upper)
    if errors.size == 0:
        return EvalStats(0.0, 0.0, 0.0, 0.0, 0)
    return EvalStats(
        mean=float(errors.mean()),
        median=float(np.median(errors)),
        p90=float(np.percentile(errors, 90)),
        max=float(errors.max()),
        pairs=int(errors.size),
    )
