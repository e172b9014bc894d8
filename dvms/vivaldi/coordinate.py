"""A Vivaldi network coordinate and the pure functions over coordinates.

A coordinate is a point in ``dimensionality``-D Euclidean space plus a height (the
access link) plus an adjustment (a per-node non-Euclidean offset), all in seconds,
and a unitless error estimate. The predicted RTT between two coordinates follows
hashicorp/serf ``coordinate.go`` (``DistanceTo``, ``rawDistanceTo``)::

    raw      = |a.vec - b.vec| + a.height + b.height
    adjusted = raw + a.adjustment + b.adjustment
    distance = adjusted if adjusted > 0 else raw

``distance_to``, :func:`nearest` and :func:`predicted_rtt_matrix` all use this rule.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

if TYPE_CHECKING:
    from dvms.vivaldi.config import VivaldiConfig

__all__ = [
    "Coordinate",
    "nearest",
    "predicted_rtt_matrix",
    "relative_errors",
]

K = TypeVar("K")

_isfinite = math.isfinite


def all_finite(values: Iterable[float]) -> bool:
    """True when every value is a finite float (fast path: one sum)."""
    values = tuple(values)
    try:
        if _isfinite(math.fsum(values)):
            return True
    except (OverflowError, ValueError):
        # fsum raises on inf/nan mixtures and on intermediate overflow.
        pass
    return all(_isfinite(v) for v in values)


@dataclass(frozen=True, slots=True)
class Coordinate:
    """An immutable Vivaldi coordinate. Units: seconds (``error`` is unitless).

    Construction does not validate (the client builds one per update); call
    :meth:`is_valid`, or decode peer input with :meth:`from_wire`, which does.
    """

    vec: tuple[float, ...]
    error: float
    adjustment: float
    height: float

    @classmethod
    def origin(cls, config: VivaldiConfig) -> Coordinate:
        """A fresh coordinate: at the origin, maximal error, minimal height (serf)."""
        return cls((0.0,) * config.dimensionality, config.error_max, 0.0, config.height_min)

    def is_valid(self) -> bool:
        """All components finite, ``error >= 0`` and ``height >= 0``.

        serf checks finiteness only; the sign checks are ours, because a negative peer
        error or height would give a sample weight outside [0, 1].
        """
        if not (self.error >= 0.0 and self.height >= 0.0):  # also False for NaN
            return False
        return all_finite((*self.vec, self.error, self.adjustment, self.height))

    def is_compatible_with(self, other: Coordinate) -> bool:
        return len(self.vec) == len(other.vec)

    def raw_distance_to(self, other: Coordinate) -> float:
        """Euclidean distance plus both heights, without adjustments (seconds)."""
        if len(self.vec) != len(other.vec):
            raise ValueError(
                f"coordinate dimensionality mismatch: {len(self.vec)} != {len(other.vec)}"
            )
        # Parenthesised so that a.distance_to(b) == b.distance_to(a) bit for bit.
        return math.dist(self.vec, other.vec) + (self.height + other.height)

    def distance_to(self, other: Coordinate) -> float:
        """Predicted RTT to ``other`` in seconds (serf's adjusted-distance rule)."""
        raw = self.raw_distance_to(other)
        adjusted = raw + (self.adjustment + other.adjustment)
        return adjusted if adjusted > 0.0 else raw

    def to_wire(self) -> list[float]:
        """``[*vec, error, adjustment, height]``: a flat list for CBOR."""
        return [*self.vec, self.error, self.adjustment, self.height]

    @classmethod
    def from_wire(cls, data: Any, dimensionality: int) -> Coordinate:
        """Decode untrusted peer input; raise ``ValueError`` unless it is well formed.

        Accepts a list or tuple of exactly ``dimensionality + 3`` real numbers (ints are
        converted, bools are not numbers here), all finite, with ``error >= 0`` and
        ``height >= 0``.
        """
        if not isinstance(data, list | tuple):
            raise ValueError(f"coordinate must be a list, got {type(data).__name__}")
        if len(data) != dimensionality + 3:
            raise ValueError(f"coordinate must have {dimensionality + 3} numbers, got {len(data)}")
        values: list[float] = []
        for item in data:
            if isinstance(item, bool) or not isinstance(item, int | float):
                raise ValueError(f"coordinate component is not a number: {type(item).__name__}")
            try:
                value = float(item)
            except OverflowError:
                raise ValueError("coordinate component out of float range") from None
            if not _isfinite(value):
                raise ValueError("coordinate component is not finite")
            values.append(value)
        *vec, error, adjustment, height = values
        if error < 0.0:
            raise ValueError("coordinate error must be >= 0")
        if height < 0.0:
            raise ValueError("coordinate height must be >= 0")
        return cls(tuple(vec), error, adjustment, height)


def nearest(
    own: Coordinate, peers: Iterable[tuple[K, Coordinate]], n: int
) -> list[tuple[K, float]]:
    """The ``n`` peers with the smallest predicted RTT from ``own``: ``[(key, seconds)]``.

    Sorted by predicted RTT, then by key, so keys must be mutually orderable and the
    result is deterministic. Peers whose coordinate is invalid or of another
    dimensionality are skipped (they come from the network; dropping them is the
    peer-error policy).
    """
    if n <= 0:
        return []
    candidates = (
        (own.distance_to(coord), key)
        for key, coord in peers
        if own.is_compatible_with(coord) and coord.is_valid()
    )
    return [(key, dist) for dist, key in heapq.nsmallest(n, candidates)]


def _as_arrays(coords: Sequence[Coordinate]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if not coords:
        return np.zeros((0, 0)), np.zeros(0), np.zeros(0)
    dim = len(coords[0].vec)
    if any(len(c.vec) != dim for c in coords):
        raise ValueError("coordinates of mixed dimensionality")
    vecs = np.array([c.vec for c in coords], dtype=float).reshape(len(coords), dim)
    heights = np.array([c.height for c in coords], dtype=float)
    adjustments = np.array([c.adjustment for c in coords], dtype=float)
    return vecs, heights, adjustments


def predicted_rtt_matrix(coords: Sequence[Coordinate], *, block: int = 256) -> np.ndarray:
    """All-pairs predicted RTT (seconds) with the same rule as ``distance_to``.

    Entry ``[i, j]`` equals ``coords[i].distance_to(coords[j])``, including the
    diagonal (which is then ``2 * height + 2 * adjustment``, not 0; mask it out when
    scoring). Differences are taken exactly, ``block`` rows at a time, so memory
    stays at ``block * n * dimensionality`` floats besides the n x n result.
    """
    vecs, heights, adjustments = _as_arrays(coords)
    n = len(heights)
    out = np.empty((n, n), dtype=float)
    for start in range(0, n, block):
        stop = min(start + block, n)
        diff = vecs[start:stop, None, :] - vecs[None, :, :]
        raw = np.sqrt(np.einsum("ijk,ijk->ij", diff, diff))
        raw += heights[start:stop, None] + heights[None, :]
        adjusted = raw + (adjustments[start:stop, None] + adjustments[None, :])
        out[start:stop] = np.where(adjusted > 0.0, adjusted, raw)
    return out


def relative_errors(
    pred: np.ndarray, truth: np.ndarray, mask: np.ndarray | None = None
) -> np.ndarray:
    """``|pred - truth| / truth`` as a flat array over the scored pairs.

    Scored pairs: where ``mask`` is true (default: every off-diagonal entry), and in
    any case only where ``truth > 0`` (a zero true RTT has no relative error). Pass a
    mask of the upper triangle to count each unordered pair once.
    """
    pred = np.asarray(pred, dtype=float)
    truth = np.asarray(truth, dtype=float)
    if pred.shape != truth.shape or pred.ndim != 2:
        raise ValueError(f"shape mismatch: {pred.shape} vs {truth.shape}")
    if mask is None:
        mask = ~np.eye(truth.shape[0], truth.shape[1], dtype=bool)
    else:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != truth.shape:
            raise ValueError(f"mask shape {mask.shape} != {truth.shape}")
    scored = mask & (truth > 0.0)
    return np.abs(pred[scored] - truth[scored]) / truth[scored]
