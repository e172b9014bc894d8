"""The Vivaldi client: one node's coordinate, updated from RTT samples.

Port of hashicorp/serf ``coordinate/client.go``. One call to :meth:`VivaldiClient.update`
runs the serf pipeline::

    (peer_key, peer_coord, rtt_s)
        |  sanity: 0 <= rtt_s <= rtt_max, peer_coord valid and same dimensionality
        |          (else: count, raise SampleRejected, state untouched)
        v
    latency filter   per-peer moving (lower) median of the last `latency_filter_size` RTTs
                     no older than `latency_filter_max_age_s` (when `now` is given;
                     history kept for the `latency_filter_peers` most recent peers)
        v
    Vivaldi step     Dabek et al.: weight, error estimate, move along the unit vector
        v
    adjustment       ring buffer of (rtt - raw distance); adjustment = sum / (2 * window)
        v
    gravity          pull towards the origin with force (|c - origin| / rho) ** 2
        v
    NaN/inf check    reset to the origin and count it

Rejection policy: a bad sample raises :class:`SampleRejected` (a ``ValueError``) after
bumping the matching counter in :attr:`VivaldiClient.stats`; the client state is not
changed. Callers feeding peer input catch it (``except ValueError`` also covers
``Coordinate.from_wire``) and drop the sample.

The hot path is deliberately plain Python over tuples and lists (no numpy, no
per-call validation of our own state beyond the final finiteness check): simulations
call it millions of times.

Deviations from serf, all deliberate:
* a reset also clears the adjustment window (serf keeps it, so a non-finite sample
  in it would trigger a reset on every update until it ages out);
* a peer coordinate with a negative error or height counts as invalid (see
  :meth:`Coordinate.is_valid`);
* the latency-filter history is bounded (``latency_filter_peers``, least recently
  sampled peer dropped first); serf relies on ``ForgetNode`` alone;
* a sample older than ``latency_filter_max_age_s`` leaves the filter window (serf keeps
  the last samples however old);
* the latency filter takes the lower median (of two samples the shorter).
"""

from __future__ import annotations

import math
import random
from collections.abc import Hashable
from dataclasses import dataclass
from itertools import repeat
from operator import mul, sub

from dvms.vivaldi.config import VivaldiConfig
from dvms.vivaldi.coordinate import Coordinate, all_finite

__all__ = ["SampleRejected", "VivaldiClient", "VivaldiStats"]

_hypot = math.hypot
_dist = math.dist
_isfinite = math.isfinite


class SampleRejected(ValueError):
    """An RTT sample was refused; the client state is unchanged.

    ``reason`` is one of ``"rtt_out_of_range"``, ``"dimension_mismatch"``,
    ``"invalid_coordinate"``.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass(frozen=True, slots=True)
class VivaldiStats:
    """Counters of one client (a snapshot)."""

    updates: int  #: accepted samples
    resets: int  #: coordinate went non-finite and was reset to the origin
    zero_rtts: int  #: accepted samples with an RTT of exactly 0 (serf counts these too)
    rejected_rtt: int  #: RTT outside 0..rtt_max (or NaN)
    rejected_dimension: int  #: peer coordinate of another dimensionality
    rejected_coordinate: int  #: peer coordinate non-finite or with negative error/height

    @property
    def rejected(self) -> int:
        return self.rejected_rtt + self.rejected_dimension + self.rejected_coordinate


class VivaldiClient:
    """One node's Vivaldi state. Sans-I/O: no clock, no I/O, randomness injected.

    ``rng`` is used only to pick a direction when two positions coincide.
    """

    __slots__ = (
        "_adj_index",
        "_adj_samples",
        "_cc",
        "_ce",
        "_config",
        "_coord",
        "_dim",
        "_error_max",
        "_filter",
        "_filter_age",
        "_filter_peers",
        "_filter_size",
        "_height_min",
        "_n_rejected_coordinate",
        "_n_rejected_dimension",
        "_n_rejected_rtt",
        "_n_resets",
        "_n_updates",
        "_n_zero_rtts",
        "_rho",
        "_rng",
        "_rtt_max",
        "_zero",
    )

    def __init__(self, config: VivaldiConfig, rng: random.Random) -> None:
        self._config = config
        self._rng = rng
        # Config copied into slots: the hot path reads them once per update.
        self._dim = config.dimensionality
        self._ce = config.ce
        self._cc = config.cc
        self._error_max = config.error_max
        self._height_min = config.height_min
        self._rho = config.gravity_rho
        self._rtt_max = config.rtt_max
        self._zero = config.zero_threshold
        self._filter_size = config.latency_filter_size
        self._filter_peers = config.latency_filter_peers
        self._filter_age = config.latency_filter_max_age_s
        self._coord = Coordinate.origin(config)
        #: peer -> its last samples, oldest first, as (time taken or None, rtt)
        self._filter: dict[Hashable, tuple[tuple[float | None, float], ...]] = {}
        self._adj_samples = [0.0] * config.adjustment_window
        self._adj_index = 0
        self._n_updates = 0
        self._n_resets = 0
        self._n_zero_rtts = 0
        self._n_rejected_rtt = 0
        self._n_rejected_dimension = 0
        self._n_rejected_coordinate = 0

    # -- read side ---------------------------------------------------------------

    @property
    def config(self) -> VivaldiConfig:
        return self._config

    @property
    def coordinate(self) -> Coordinate:
        """The current coordinate (immutable; safe to hand out and put on the wire)."""
        return self._coord

    @property
    def stats(self) -> VivaldiStats:
        return VivaldiStats(
            updates=self._n_updates,
            resets=self._n_resets,
            zero_rtts=self._n_zero_rtts,
            rejected_rtt=self._n_rejected_rtt,
            rejected_dimension=self._n_rejected_dimension,
            rejected_coordinate=self._n_rejected_coordinate,
        )

    def distance_to(self, coord: Coordinate) -> float:
        """Predicted RTT in seconds from this node to ``coord``."""
        return self._coord.distance_to(coord)

    def known_peers(self) -> int:
        """How many peers have latency-filter history (call :meth:`forget` on eviction)."""
        return len(self._filter)

    # -- write side --------------------------------------------------------------

    def forget(self, peer_key: Hashable) -> None:
        """Drop the latency-filter history of a peer (serf ``ForgetNode``)."""
        self._filter.pop(peer_key, None)

    def set_coordinate(self, coord: Coordinate) -> None:
        """Replace the coordinate (e.g. restored across a restart; serf ``SetCoordinate``).

        Raises ``ValueError`` for an invalid or incompatible coordinate (state unchanged).
        """
        if len(coord.vec) != self._dim:
            raise ValueError(f"dimensionality {len(coord.vec)} != {self._dim}")
        if not coord.is_valid():
            raise ValueError("invalid coordinate")
        self._coord = Coordinate(
            tuple(float(x) for x in coord.vec),
            float(coord.error),
            float(coord.adjustment),
            float(coord.height),
        )

    def update(
        self,
        peer_key: Hashable,
        peer_coord: Coordinate,
        rtt_s: float,
        *,
        now: float | None = None,
    ) -> Coordinate:
        """Feed one RTT sample (seconds) to ``peer_key`` at ``peer_coord``.

        ``now`` (seconds, any clock the caller keeps) dates the sample: the peer's earlier
        samples older than ``latency_filter_max_age_s`` then leave its filter window.
        Without it, samples never age (serf's behaviour).

        Returns the new coordinate, or raises :class:`SampleRejected` (state unchanged).
        """
        if not 0.0 <= rtt_s <= self._rtt_max:  # also catches NaN
            self._n_rejected_rtt += 1
            raise SampleRejected("rtt_out_of_range", f"{rtt_s!r} not in [0, {self._rtt_max}]")
        pvec = peer_coord.vec
        if len(pvec) != self._dim:
            self._n_rejected_dimension += 1
            raise SampleRejected("dimension_mismatch", f"{len(pvec)} != {self._dim}")
        perr = peer_coord.error
        pheight = peer_coord.height
        padj = peer_coord.adjustment
        # A finite sum means every term is finite; only if it is not do we look closer
        # (a sum of huge but finite values may overflow).
        if not (
            perr >= 0.0
            and pheight >= 0.0
            and (_isfinite(perr + pheight + padj + sum(pvec)) or peer_coord.is_valid())
        ):
            self._n_rejected_coordinate += 1
            raise SampleRejected("invalid_coordinate", "non-finite or negative component")

        if rtt_s == 0.0:
            self._n_zero_rtts += 1
        rtt = self._latency_filter(peer_key, float(rtt_s), now)
        vec, error, height = self._vivaldi_step(pvec, perr, pheight, padj, rtt)
        adjustment = self._adjust(vec, height, pvec, pheight, rtt)
        vec, height = self._gravity(vec, height, adjustment)

        self._n_updates += 1
        if _isfinite(error + adjustment + height + sum(vec)) or all_finite(
            (*vec, error, adjustment, height)
        ):
            self._coord = Coordinate(tuple(vec), error, adjustment, height)
        else:
            self._n_resets += 1
            self._coord = Coordinate.origin(self._config)
            self._adj_samples = [0.0] * len(self._adj_samples)
            self._adj_index = 0
        return self._coord

    # -- the steps (private; each mirrors one serf function) ----------------------

    def _latency_filter(self, peer_key: Hashable, rtt: float, now: float | None) -> float:
        """serf ``latencyFilter``: median of the peer's last few samples, those older than
        ``latency_filter_max_age_s`` left out when ``now`` is known.

        The lower median (ours; serf takes the upper one): queueing and reordering only
        ever add delay, so of two samples the shorter is the better estimate. With the
        upper median, one delayed answer stayed the filtered RTT of its peer for the next
        sample as well, up to ``latency_filter_max_age_s`` later. Of three, it is the
        middle one either way.

        The dict is kept in least-recently-sampled order (pop and re-insert) and bounded
        by ``latency_filter_peers``.
        """
        history = self._filter
        samples = history.pop(peer_key, None)
        if samples is None:
            if len(history) >= self._filter_peers:
                del history[next(iter(history))]  # the least recently sampled peer
            history[peer_key] = ((now, rtt),)
            return rtt
        keep = self._filter_size - 1
        samples = samples[-keep:] if keep else ()
        if now is not None and samples:
            horizon = now - self._filter_age
            # Samples are oldest first: drop a stale prefix (an undated one stays).
            while samples and (t := samples[0][0]) is not None and t < horizon:
                samples = samples[1:]
        samples = (*samples, (now, rtt))
        history[peer_key] = samples
        if len(samples) == 1:
            return rtt
        return sorted(r for _, r in samples)[(len(samples) - 1) // 2]

    def _random_unit(self, dim: int) -> list[float]:
        """A random unit vector, for when two positions coincide (serf ``unitVectorAt``)."""
        rnd = self._rng.random
        ret = [rnd() - 0.5 for _ in range(dim)]
        mag = _hypot(*ret)
        if mag > self._zero:
            return [r / mag for r in ret]
        ret = [0.0] * dim
        ret[0] = 1.0
        return ret

    def _vivaldi_step(
        self, pvec: tuple[float, ...], perr: float, pheight: float, padj: float, rtt: float
    ) -> tuple[list[float], float, float]:
        """serf ``updateVivaldi`` + ``ApplyForce`` (adjusted distance, floors at 1e-6)."""
        c = self._coord
        vec = c.vec
        height = c.height
        error = c.error
        zero = self._zero
        diff = list(map(sub, vec, pvec))  # map over C functions: no per-element frame
        mag = _hypot(*diff)
        raw = mag + (height + pheight)  # the same sums as Coordinate.distance_to
        dist = raw + (c.adjustment + padj)
        if dist <= 0.0:
            dist = raw
        if rtt < zero:
            rtt = zero
        wrongness = abs(dist - rtt) / rtt
        total = error + perr
        if total < zero:
            total = zero
        weight = error / total
        ce_w = self._ce * weight
        error = ce_w * wrongness + error * (1.0 - ce_w)
        if error > self._error_max:
            error = self._error_max
        force = self._cc * weight * (rtt - dist)
        if mag > zero:
            k = force / mag  # unit vector (vec - pvec) / mag, times force
            new_vec = [a + d * k for a, d in zip(vec, diff, strict=False)]
            height = (height + pheight) * force / mag + height
            if height < self._height_min:
                height = self._height_min
        else:
            unit = self._random_unit(len(vec))
            new_vec = [a + u * force for a, u in zip(vec, unit, strict=False)]
        return new_vec, error, height

    def _adjust(
        self, vec: list[float], height: float, pvec: tuple[float, ...], pheight: float, rtt: float
    ) -> float:
        """serf ``updateAdjustment``: uses the raw distance after the move."""
        window = self._adj_samples
        if not window:
            return 0.0
        window[self._adj_index] = rtt - (_dist(vec, pvec) + (height + pheight))
        self._adj_index = (self._adj_index + 1) % len(window)
        return sum(window) / (2.0 * len(window))

    def _gravity(
        self, vec: list[float], height: float, adjustment: float
    ) -> tuple[list[float], float]:
        """serf ``updateGravity``: ApplyForce towards the origin coordinate.

        The origin has height ``height_min`` and adjustment 0, as in serf.
        """
        hmin = self._height_min
        mag = _hypot(*vec)
        raw = mag + (height + hmin)
        dist = raw + adjustment
        if dist <= 0.0:
            dist = raw
        scaled = dist / self._rho
        force = -(scaled * scaled)  # not ** 2: float pow raises OverflowError
        if mag > self._zero:
            scale = 1.0 + force / mag  # vec + force * vec / mag
            vec = list(map(mul, vec, repeat(scale)))
            height = (height + hmin) * force / mag + height
            if height < hmin:
                height = hmin
        else:
            unit = self._random_unit(len(vec))
            vec = [a + u * force for a, u in zip(vec, unit, strict=False)]
        return vec, height
