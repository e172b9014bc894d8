"""Configuration of the Vivaldi coordinate client.

Every field carries its unit, its default and where the default comes from. The
defaults are hashicorp/serf's ``coordinate.DefaultConfig`` (``coordinate/config.go``),
which in turn cites:

[1] Dabek, Cox, Kaashoek, Morris, "Vivaldi: a decentralized network coordinate
    system", SIGCOMM 2004.
[2] Ledlie, Gardner, Seltzer, "Network coordinates in the wild", NSDI 2007.
[3] Lee, Hong, Kim, Ahn, "On suitability of Euclidean embedding for host-based
    network coordinate systems", IEEE/ACM ToN 18(1), 2010.

All times are in seconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

__all__ = ["VivaldiConfig"]


@dataclass(frozen=True, slots=True)
class VivaldiConfig:
    """Tuning of one :class:`~dvms.vivaldi.client.VivaldiClient` (frozen, validated once)."""

    #: Euclidean dimensions of the coordinate (the height is extra). Unitless.
    #: serf default 8; [2] saw no gain beyond about 7.
    dimensionality: int = 8

    #: Error estimate of a fresh coordinate and upper clamp of the estimate.
    #: Unitless (a relative error). serf ``VivaldiErrorMax`` 1.5.
    error_max: float = 1.5

    #: Largest weight one sample has on the error estimate. Unitless.
    #: serf ``VivaldiCE`` 0.25, from [1].
    ce: float = 0.25

    #: Largest weight one sample has on the coordinate (adaptive timestep). Unitless.
    #: serf ``VivaldiCC`` 0.25, from [1].
    cc: float = 0.25

    #: Samples kept for the non-Euclidean adjustment term of [3]; 0 disables it.
    #: Count. serf ``AdjustmentWindowSize`` 20.
    adjustment_window: int = 20

    #: Floor of the height term (models the access link). Seconds.
    #: serf ``HeightMin`` 10e-6 s (10 µs).
    height_min: float = 10.0e-6

    #: Per-peer moving-median window of raw RTT samples ([2]'s latency filter).
    #: Count. serf ``LatencyFilterSize`` 3.
    latency_filter_size: int = 3

    #: Age after which a raw RTT sample leaves its peer's filter window. Seconds (ours;
    #: serf keeps the last samples however old). The median is there to drop a spike
    #: among a peer's recent samples; a node of a large cluster samples each peer only
    #: every few minutes, so without an age limit one burst of delayed answers (a
    #: reordering or congestion episode) stays the median of its peers for two more
    #: samples, that is minutes after the network is quiet again. Applies only when the
    #: caller passes ``now`` to ``update``.
    latency_filter_max_age_s: float = 60.0

    #: Most peers whose filter history is kept; the least recently sampled is dropped
    #: first. Count. Ours: serf keeps one entry per member until ``ForgetNode``; the
    #: bound keeps memory flat when a node samples thousands of distinct peers (10,000-node
    #: simulations), at the cost of filtering only the 128 most recently sampled peers.
    latency_filter_peers: int = 128

    #: Scale of the gravity that pulls the coordinate towards the origin to stop drift
    #: ([2]); the force is ``(distance_to_origin / gravity_rho) ** 2``. Seconds.
    #: serf ``GravityRho`` 150.0.
    gravity_rho: float = 150.0

    #: Upper end of the RTT sanity window ``0 <= rtt <= rtt_max``; samples outside
    #: are rejected. Seconds. serf ``client.go`` ``maxRTT`` 10 s.
    rtt_max: float = 10.0

    #: Two positions closer than this are "on top of each other" (a random direction
    #: is picked); RTTs and error sums are floored at it. Seconds.
    #: serf ``zeroThreshold`` 1.0e-6 (``coordinate.go``, ``client.go``).
    zero_threshold: float = 1.0e-6

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError(f"VivaldiConfig.{f.name} must be a number, got {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"VivaldiConfig.{f.name} must be finite, got {value!r}")
        ints = (
            "dimensionality",
            "adjustment_window",
            "latency_filter_size",
            "latency_filter_peers",
        )
        for name in ints:
            if not isinstance(getattr(self, name), int):
                raise TypeError(f"VivaldiConfig.{name} must be an int")
        if self.dimensionality < 1:
            raise ValueError("dimensionality must be >= 1")
        if self.latency_filter_size < 1 or self.latency_filter_peers < 1:
            raise ValueError("latency_filter_size and latency_filter_peers must be >= 1")
        if self.adjustment_window < 0:
            raise ValueError("adjustment_window must be >= 0")
        if not 0.0 < self.ce <= 1.0 or not 0.0 < self.cc <= 1.0:
            raise ValueError("ce and cc must be in (0, 1]")
        for name in (
            "error_max",
            "gravity_rho",
            "rtt_max",
            "zero_threshold",
            "latency_filter_max_age_s",
        ):
            if getattr(self, name) <= 0.0:
                raise ValueError(f"{name} must be > 0")
        if self.height_min < 0.0:
            raise ValueError("height_min must be >= 0")

    @classmethod
    def serf(cls) -> VivaldiConfig:
        """serf's ``DefaultConfig`` (the same as ``VivaldiConfig()``), named for clarity."""
        return cls()
