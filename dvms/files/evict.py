"""Which files to evict from a full store: least recently used first, never a pinned
one, from above the high watermark down to the low one (squid's cache_swap_high/low)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["StoredFile", "choose_victims"]


@dataclass(frozen=True, slots=True)
class StoredFile:
    root: bytes
    size: int
    #: When it was last added, fetched or used, seconds (any clock, one per store).
    last_used: float
    pinned: bool
    #: Partial files (transfers) are never evicted.
    complete: bool = True


def choose_victims(
    files: list[StoredFile],
    incoming: int,
    *,
    capacity: int,
    high: float,
    low: float,
) -> tuple[list[bytes], bool]:
    """Roots to evict before adding ``incoming`` bytes, and whether it then fits under
    ``capacity``. Nothing is evicted while the store stays under ``high * capacity``;
    else the oldest unpinned files go until it is under ``low * capacity``, or no
    candidate is left. ``capacity`` 0: unbounded (nothing to evict)."""
    used = sum(f.size for f in files)
    if capacity <= 0 or used + incoming <= high * capacity:
        return [], capacity <= 0 or used + incoming <= capacity
    victims: list[bytes] = []
    for f in sorted(files, key=lambda f: (f.last_used, f.root)):
        if used + incoming <= low * capacity:
            break
        if f.pinned or not f.complete:
            continue
        victims.append(f.root)
        used -= f.size
    return victims, used + incoming <= capacity
