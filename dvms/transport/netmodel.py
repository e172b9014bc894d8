"""The simulated network's physics, as pure functions of positions and a seeded RNG.

No trio, no clock, no I/O: both simulator modes use this module. The Trio-mode
``SimNetwork`` (``simnet.py``) and the fast discrete-event loop (``dvms.sim``) ask
``NetworkModel.route(src, dst, now)`` what happens to each datagram and schedule the
deliveries themselves.

Nodes are identified by their *position*, an integer 0..N-1. A latency model maps a pair
of positions to a round-trip time in seconds:

    ConstantLatency(rtt_s)                      every distinct pair: rtt_s
    SitesLatency(site_of, wan_rtt_s, lan_rtt_s) node -> site; WAN table between sites,
                                                lan_rtt_s inside a site
    MatrixLatency.from_file(path)               a measured RTT matrix in milliseconds;
                                                node i takes row i mod size

All models return 0.0 for ``rtt(a, a)`` and are symmetric. ``same_position(a, b)`` says
that two distinct nodes share one modelled slot (the same matrix row, the same entry of
``site_of``), so their RTT is a stand-in and metrics should leave the pair out.

``NetworkModel`` adds what happens to one datagram: a one-way delay of rtt/2 with
relative jitter, independent loss and duplication, an optional reordering delay,
partitions (``cut``/``uncut``/``heal``) and crashed hosts (``set_down``/``set_up``).
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Protocol

import numpy as np

__all__ = [
    "DEFAULT_LAN_RTT_S",
    "ConstantLatency",
    "LatencyMatrixError",
    "LatencyModel",
    "MatrixLatency",
    "NetworkConditions",
    "NetworkModel",
    "NetworkStatistics",
    "SitesLatency",
    "parse_latency_matrix",
]

DEFAULT_LAN_RTT_S = 0.0005
"""RTT between two hosts of one site or one matrix row: 0.5 ms, a switched LAN."""


class LatencyModel(Protocol):
    """Round-trip times between node positions (non-negative integers)."""

    @property
    def size(self) -> int | None:
        """Number of distinct slots positions wrap around (``None``: no wrapping)."""
        ...

    def rtt(self, a: int, b: int) -> float:
        """Round-trip time in seconds between positions ``a`` and ``b``; 0.0 if equal."""
        ...

    def same_position(self, a: int, b: int) -> bool:
        """True if ``a`` and ``b`` occupy the same modelled slot (or are equal)."""
        ...


class LatencyMatrixError(ValueError):
    """A latency matrix is malformed. ``line``/``column`` are 1-based when known."""

    def __init__(
        self, message: str, *, source: str = "", line: int | None = None, column: int | None = None
    ) -> None:
        self.source = source
        self.line = line
        self.column = column
        where = source
        if line is not None:
            where += f":{line}" if where else f"line {line}"
        if column is not None:
            where += f", column {column}"
        super().__init__(f"{where}: {message}" if where else message)


# ---------------------------------------------------------------------------------------
# Latency models


class ConstantLatency:
    """The same RTT between every two distinct positions (a flat LAN)."""

    __slots__ = ("_rtt",)

    def __init__(self, rtt_s: float) -> None:
        if not (math.isfinite(rtt_s) and rtt_s >= 0):
            raise ValueError(f"rtt_s must be a finite number >= 0, not {rtt_s!r}")
        self._rtt = float(rtt_s)

    @property
    def size(self) -> int | None:
        return None

    def rtt(self, a: int, b: int) -> float:
        return 0.0 if a == b else self._rtt

    def same_position(self, a: int, b: int) -> bool:
        return a == b

    def __repr__(self) -> str:
        return f"ConstantLatency(rtt_s={self._rtt!r})"


def _symmetric_table(rtt_s: object, *, source: str = "") -> np.ndarray:
    """Validate a square matrix of RTTs and return (M + M.T) / 2 as float64."""
    try:
        m = np.asarray(rtt_s, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise LatencyMatrixError(f"not a numeric matrix ({exc})", source=source) from None
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] == 0:
        raise LatencyMatrixError(
            f"matrix must be square and non-empty, not of shape {m.shape}", source=source
        )
    bad = ~np.isfinite(m) | (m < 0)
    if bad.any():
        r, c = (int(x) for x in np.argwhere(bad)[0])
        raise LatencyMatrixError(
            f"entry ({r + 1}, {c + 1}) is {m[r, c]!r}; RTTs must be finite and >= 0",
            source=source,
        )
    return (m + m.T) / 2.0


class SitesLatency:
    """Hosts grouped in sites: a WAN RTT table between sites, ``lan_rtt_s`` inside one.

    Position i belongs to site ``site_of[i % len(site_of)]``. The WAN table (seconds) is
    symmetrised as (W + W.T) / 2 and its diagonal is ignored.
    """

    __slots__ = ("_lan", "_n", "_site_of", "_table")

    def __init__(
        self,
        site_of: Sequence[int],
        wan_rtt_s: Sequence[Sequence[float]] | np.ndarray,
        lan_rtt_s: float = DEFAULT_LAN_RTT_S,
    ) -> None:
        table = _symmetric_table(wan_rtt_s)
        sites = table.shape[0]
        if not site_of:
            raise ValueError("site_of must name a site for at least one position")
        for i, s in enumerate(site_of):
            if not (isinstance(s, int | np.integer) and 0 <= s < sites):
                raise ValueError(f"site_of[{i}] = {s!r} is not a site index 0..{sites - 1}")
        if not (math.isfinite(lan_rtt_s) and lan_rtt_s >= 0):
            raise ValueError(f"lan_rtt_s must be a finite number >= 0, not {lan_rtt_s!r}")
        np.fill_diagonal(table, lan_rtt_s)
        self._table: list[list[float]] = table.tolist()
        self._site_of: list[int] = [int(s) for s in site_of]
        self._n = len(self._site_of)
        self._lan = float(lan_rtt_s)

    @property
    def size(self) -> int | None:
        return self._n

    def site(self, a: int) -> int:
        """The site of position ``a``."""
        return self._site_of[a % self._n]

    def rtt(self, a: int, b: int) -> float:
        if a == b:
            return 0.0
        site_of = self._site_of
        n = self._n
        return self._table[site_of[a % n]][site_of[b % n]]

    def same_position(self, a: int, b: int) -> bool:
        return a % self._n == b % self._n

    def __repr__(self) -> str:
        return f"SitesLatency(positions={self._n}, sites={len(self._table)}, lan_rtt_s={self._lan})"


class MatrixLatency:
    """A measured RTT matrix: position i takes row ``i % size``.

    The matrix is symmetrised as (M + M.T) / 2; its diagonal is ignored. Two distinct
    positions on the same row get ``lan_rtt_s`` (and ``same_position`` is true for them).
    """

    __slots__ = ("_lan", "_n", "_rows")

    def __init__(
        self,
        rtt_s: Sequence[Sequence[float]] | np.ndarray,
        *,
        lan_rtt_s: float = DEFAULT_LAN_RTT_S,
    ) -> None:
        """Build from a square matrix in **seconds** (``from_file`` reads milliseconds)."""
        table = _symmetric_table(rtt_s)
        if not (math.isfinite(lan_rtt_s) and lan_rtt_s >= 0):
            raise ValueError(f"lan_rtt_s must be a finite number >= 0, not {lan_rtt_s!r}")
        np.fill_diagonal(table, lan_rtt_s)
        # Python lists of floats: indexing them is several times faster than numpy scalars.
        self._rows: list[list[float]] = table.tolist()
        self._n = table.shape[0]
        self._lan = float(lan_rtt_s)

    @classmethod
    def from_file(
        cls, path: str | PathLike[str], *, lan_rtt_s: float = DEFAULT_LAN_RTT_S
    ) -> MatrixLatency:
        """Load a square matrix of RTTs in milliseconds (see ``parse_latency_matrix``)."""
        p = Path(path)
        rows_ms = parse_latency_matrix(p.read_text(encoding="utf-8"), source=str(p))
        return cls(np.asarray(rows_ms) / 1000.0, lan_rtt_s=lan_rtt_s)

    @property
    def size(self) -> int | None:
        return self._n

    def rtt(self, a: int, b: int) -> float:
        if a == b:
            return 0.0
        n = self._n
        return self._rows[a % n][b % n]

    def same_position(self, a: int, b: int) -> bool:
        return a % self._n == b % self._n

    def to_array(self) -> np.ndarray:
        """The symmetrised row-by-row RTT table in seconds (``lan_rtt_s`` on the diagonal)."""
        return np.array(self._rows)

    def __repr__(self) -> str:
        return f"MatrixLatency(size={self._n}, lan_rtt_s={self._lan})"


_COMMENT = re.compile(r"#.*")


def parse_latency_matrix(text: str, *, source: str = "<string>") -> list[list[float]]:
    """Parse a square matrix of non-negative numbers, one row per line.

    Fields are separated by commas (with optional spaces around them) or, on lines
    without a comma, by whitespace. Blank lines and ``#`` comments (whole or trailing)
    are ignored. Returns the rows as written (no unit change, no symmetrisation). Raises
    ``LatencyMatrixError`` naming the line and column of the first problem.
    """
    rows: list[list[float]] = []
    first_line = 0
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = _COMMENT.sub("", raw).strip()
        if not line:
            continue
        fields = [f.strip() for f in line.split(",")] if "," in line else line.split()
        row = [_parse_field(f, source, lineno, col) for col, f in enumerate(fields, start=1)]
        if rows and len(row) != len(rows[0]):
            raise LatencyMatrixError(
                f"row has {len(row)} columns, expected {len(rows[0])} like line {first_line}",
                source=source,
                line=lineno,
                column=min(len(row), len(rows[0])) + 1,
            )
        if not rows:
            first_line = lineno
        rows.append(row)
    if not rows:
        raise LatencyMatrixError("no matrix rows found", source=source)
    if len(rows) != len(rows[0]):
        raise LatencyMatrixError(
            f"matrix is not square: {len(rows)} rows of {len(rows[0])} columns", source=source
        )
    return rows


def _parse_field(field: str, source: str, line: int, column: int) -> float:
    if not field:
        raise LatencyMatrixError("empty field", source=source, line=line, column=column)
    try:
        value = float(field)
    except ValueError:
        raise LatencyMatrixError(
            f"{field!r} is not a number", source=source, line=line, column=column
        ) from None
    if not math.isfinite(value) or value < 0:
        raise LatencyMatrixError(
            f"{field!r} is not a finite RTT >= 0", source=source, line=line, column=column
        )
    return value


# ---------------------------------------------------------------------------------------
# Conditions and the network model


@dataclass(frozen=True, slots=True)
class NetworkConditions:
    """Per-datagram impairments, the same on every link. The default is a perfect network."""

    loss: float = 0.0
    """Probability (0..1) that a datagram is dropped. 0.05 is a bad WAN."""
    duplicate: float = 0.0
    """Probability (0..1) that a datagram that was not lost arrives twice, each copy with
    its own jittered delay (so copies may also swap order with other datagrams)."""
    jitter: float = 0.0
    """Relative standard deviation of the one-way delay: delay ~ N(d, (jitter*d)^2) with
    d = rtt/2, clamped at 0 so it is never negative. 0.02 matches the median per-pair
    std-dev / mean of the WonderNetwork data (3.5 ms / 141 ms)."""
    reorder_s: float = 0.0
    """Each copy is held back by an extra delay drawn uniformly from [0, reorder_s)
    seconds, so datagrams sent less than that apart may arrive in either order (a
    relative ``jitter`` on a 50 us LAN reorders almost nothing). 0 = no extra delay."""

    def __post_init__(self) -> None:
        for name in ("loss", "duplicate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], not {value!r}")
        for name in ("jitter", "reorder_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0.0):
                raise ValueError(f"{name} must be a finite number >= 0, not {value!r}")


@dataclass(frozen=True, slots=True)
class NetworkStatistics:
    """Counters of ``NetworkModel.route`` calls (an immutable snapshot)."""

    sent: int
    """Calls to ``route``."""
    delivered: int
    """Copies scheduled for delivery (duplicates count twice)."""
    lost: int
    """Dropped by random loss."""
    cut: int
    """Dropped because source and destination are on two sides of a cut."""
    down: int
    """Dropped because the source or the destination is down."""
    duplicated: int
    """Datagrams delivered twice."""

    @property
    def dropped(self) -> int:
        return self.lost + self.cut + self.down


_BLOCK = 4096  # standard normals drawn at a time for jitter


class NetworkModel:
    """What happens to each datagram: delay, loss, duplication, partitions, crashes.

    ``rng`` is the only source of randomness; the same seed, latency model, conditions
    and sequence of calls give the same results.
    """

    def __init__(
        self,
        latency: LatencyModel,
        conditions: NetworkConditions | None = None,
        rng: random.Random | None = None,
    ) -> None:
        """``rng`` is required as soon as ``conditions`` draw random numbers.

        A perfect network (the default conditions) never draws, so tests of pure latency
        may leave it out.
        """
        self._seeded = rng is not None
        self._check_seeded(conditions or NetworkConditions())
        self._latency = latency
        self._rtt = latency.rtt  # bound once: route() runs per message
        self._conditions = conditions or NetworkConditions()
        self._rng = rng or random.Random()  # never drawn from when not seeded (see above)
        self._cuts: list[tuple[frozenset[int], frozenset[int]]] = []
        self._down: set[int] = set()
        self._sent = 0
        self._delivered = 0
        self._lost = 0
        self._cut = 0
        self._down_dropped = 0
        self._duplicated = 0
        self._normals: list[float] = []  # standard normals for jitter, used from the end

    @property
    def latency(self) -> LatencyModel:
        return self._latency

    @property
    def conditions(self) -> NetworkConditions:
        return self._conditions

    def set_conditions(self, conditions: NetworkConditions) -> None:
        """Change loss/duplication/jitter from now on (e.g. a lossy phase of a scenario)."""
        self._check_seeded(conditions)
        self._conditions = conditions

    def _check_seeded(self, conditions: NetworkConditions) -> None:
        if not self._seeded and conditions != NetworkConditions():
            raise ValueError("pass a seeded random.Random: these conditions draw random numbers")

    def route(self, src: int, dst: int, now: float) -> tuple[float, ...]:
        """One-way delays (seconds) of the copies of one datagram sent at ``now``.

        ``()`` means dropped; two entries mean duplicated. ``now`` is accepted so that
        time-varying models can be added without changing callers; the current model
        does not depend on it.
        """
        self._sent += 1
        if self._down and (src in self._down or dst in self._down):
            self._down_dropped += 1
            return ()
        if self._cuts and self._is_cut(src, dst):
            self._cut += 1
            return ()
        cond = self._conditions
        rng = self._rng
        if cond.loss and rng.random() < cond.loss:
            self._lost += 1
            return ()
        one_way = self._rtt(src, dst) * 0.5
        jitter = cond.jitter
        if cond.duplicate and rng.random() < cond.duplicate:
            self._duplicated += 1
            self._delivered += 2
            if jitter:
                pair = (self._jittered(one_way, jitter), self._jittered(one_way, jitter))
            else:
                pair = (one_way, one_way)
            if cond.reorder_s:
                r = cond.reorder_s
                return (pair[0] + rng.random() * r, pair[1] + rng.random() * r)
            return pair
        self._delivered += 1
        delay = self._jittered(one_way, jitter) if jitter else one_way
        if cond.reorder_s:
            return (delay + rng.random() * cond.reorder_s,)
        return (delay,)

    def _jittered(self, mean: float, jitter: float) -> float:
        """``mean * (1 + jitter * z)`` for a standard normal z, clamped at 0.

        ``random.gauss`` costs about 0.4 us per call in pure Python; normals are drawn in
        blocks with numpy instead, from a generator seeded by ``rng`` (so still
        reproducible from the one seed).
        """
        normals = self._normals
        if not normals:
            block = np.random.default_rng(self._rng.getrandbits(64)).standard_normal(_BLOCK)
            normals.extend(block.tolist())
        delay = mean * (1.0 + jitter * normals.pop())
        return delay if delay > 0.0 else 0.0

    # -- partitions and crashes --------------------------------------------------------

    def cut(self, group_a: Iterable[int], group_b: Iterable[int]) -> None:
        """Drop every datagram between a node of ``group_a`` and one of ``group_b``.

        Cuts accumulate until ``heal()``. A node in both groups is a caller bug.
        """
        a, b = frozenset(group_a), frozenset(group_b)
        if a & b:
            raise ValueError(f"positions {sorted(a & b)[:5]} are on both sides of the cut")
        self._cuts.append((a, b))

    def heal(self) -> None:
        """Remove every cut."""
        self._cuts.clear()

    def uncut(self, group_a: Iterable[int], group_b: Iterable[int]) -> None:
        """Remove the one cut made by ``cut(group_a, group_b)`` (others stay); a cut
        that is not there is ignored."""
        key = (frozenset(group_a), frozenset(group_b))
        if key in self._cuts:
            self._cuts.remove(key)

    def is_cut(self, src: int, dst: int) -> bool:
        """True if a cut separates ``src`` and ``dst`` (either direction)."""
        return bool(self._cuts) and self._is_cut(src, dst)

    def _is_cut(self, src: int, dst: int) -> bool:
        # A plain loop: about 3x faster than any() over a generator, and this runs per message.
        for a, b in self._cuts:  # noqa: SIM110
            if (src in a and dst in b) or (src in b and dst in a):
                return True
        return False

    def set_down(self, node: int) -> None:
        """Crash ``node``: everything it sends or is sent is dropped until ``set_up``."""
        self._down.add(node)

    def set_up(self, node: int) -> None:
        """Bring ``node`` back (idempotent)."""
        self._down.discard(node)

    def is_up(self, node: int) -> bool:
        return node not in self._down

    def statistics(self) -> NetworkStatistics:
        return NetworkStatistics(
            sent=self._sent,
            delivered=self._delivered,
            lost=self._lost,
            cut=self._cut,
            down=self._down_dropped,
            duplicated=self._duplicated,
        )
