"""Each peer's clock offset, estimated from the timestamps its datagrams carry.

Every envelope carries the sender's wall clock when it sent (``ts``). The receiver
knows its own clock at arrival and, from the overlay's round trips, the smoothed RTT to
that peer; half of it is the one-way delay. So each authentic datagram is one NTP-style
sample of the peer's offset (its clock minus ours)::

    offset = ts - (received - srtt / 2)

(the NTP formula ((t1 - t0) + (t2 - t3)) / 2 with the peer's receive and send times
t1 = t2 = ts and t3 - t0 = srtt). The estimate is the median of the last ``samples``
samples, so one datagram delayed in a queue does not move it.

Samples come from accepted datagrams and also from datagrams the envelope dropped as
``stale``: they are authentic (their tag is checked), only too far from our clock, and
they are how a peer whose clock is beyond the replay window gets named at all (its
datagrams are never accepted). An attacker replaying captured old datagrams can make a
peer's estimate wrong, never a datagram accepted.

Pure: the caller passes every time (``received``, ``now``) in; what it should log comes
back as ``ClockNote`` values. State is bounded: ``max_peers`` peers, the least
recently heard forgotten first.
"""

from __future__ import annotations

import statistics
from collections import OrderedDict, deque
from dataclasses import dataclass

__all__ = ["ClockConfig", "ClockNote", "ClockOffsets"]


@dataclass(frozen=True, slots=True)
class ClockConfig:
    """How offsets are estimated and reported (ours)."""

    #: Samples per peer the estimate is the median of.
    samples: int = 5
    #: Warn once a peer's offset passes this fraction of the replay window (half: the
    #: peer is halfway to having every datagram dropped).
    warn_fraction: float = 0.5
    #: At most one log line per peer about its dropped (stale) datagrams this often, s.
    stale_report_s: float = 60.0
    #: Peers remembered at most.
    max_peers: int = 4096

    def __post_init__(self) -> None:
        if self.samples < 1 or self.max_peers < 1:
            raise ValueError("samples and max_peers must be at least 1")
        if not 0 < self.warn_fraction <= 1 or not self.stale_report_s >= 0:
            raise ValueError("warn_fraction must be in (0, 1], stale_report_s >= 0")


@dataclass(frozen=True, slots=True)
class ClockNote:
    """Something to tell the operator about a peer's clock.

    ``kind``: ``"skewed"`` (its offset passed the warning threshold), ``"recovered"``
    (back under half of it), ``"dropped"`` (its datagrams are being dropped as stale:
    ``dropped`` of them since the last such note)."""

    kind: str
    peer: int
    offset_s: float
    threshold_s: float
    dropped: int = 0


class _Peer:
    __slots__ = ("dropped", "reported_at", "samples", "warned")

    def __init__(self, n: int) -> None:
        self.samples: deque[float] = deque(maxlen=n)
        self.warned = False
        self.dropped = 0
        self.reported_at: float | None = None


class ClockOffsets:
    def __init__(self, config: ClockConfig | None = None, *, replay_window_s: float = 60.0) -> None:
        self.config = config or ClockConfig()
        self.replay_window_s = replay_window_s
        self._peers: OrderedDict[int, _Peer] = OrderedDict()

    @property
    def warn_s(self) -> float:
        return self.replay_window_s * self.config.warn_fraction

    def offset(self, peer: int) -> float | None:
        """The peer's estimated offset (its clock minus ours), seconds, or None."""
        p = self._peers.get(peer)
        return statistics.median(p.samples) if p is not None and p.samples else None

    def offsets(self) -> dict[int, float]:
        return {peer: statistics.median(p.samples) for peer, p in self._peers.items()}

    def sample(
        self,
        peer: int,
        sent: float,
        received: float,
        rtt: float | None,
        *,
        stale: bool = False,
        now: float,
    ) -> list[ClockNote]:
        """One datagram from ``peer`` sent at ``sent`` (its clock), received at
        ``received`` (ours); ``rtt``: the smoothed RTT to it, if known. ``stale``: the
        envelope dropped it for its timestamp. ``now``: the caller's clock, for rate
        limits. Returns what to log (usually nothing)."""
        p = self._peers.get(peer)
        if p is None:
            p = self._peers[peer] = _Peer(self.config.samples)
            if len(self._peers) > self.config.max_peers:
                self._peers.popitem(last=False)
        else:
            self._peers.move_to_end(peer)
        p.samples.append(sent - received + (rtt / 2 if rtt is not None else 0.0))
        est = statistics.median(p.samples)
        out: list[ClockNote] = []
        warn = self.warn_s
        if not p.warned and abs(est) > warn:
            p.warned = True
            out.append(ClockNote("skewed", peer, est, warn))
        elif p.warned and abs(est) < warn / 2:
            p.warned = False
            out.append(ClockNote("recovered", peer, est, warn))
        if stale:
            p.dropped += 1
            if p.reported_at is None or now - p.reported_at >= self.config.stale_report_s:
                out.append(ClockNote("dropped", peer, est, self.replay_window_s, p.dropped))
                p.dropped = 0
                p.reported_at = now
        return out
