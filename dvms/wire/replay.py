"""The envelope's replay memory, bounded.

Every accepted datagram's (sender, type, rid, ts) is remembered for twice the replay
window, so an exact copy sent again is dropped (``replayed``). A key holder flooding a
node could make that memory grow with its rate; it holds at most ``max_entries`` keys
(each stored as a 64-bit digest, ~100 bytes with the table). When full, the oldest is
forgotten, and the memory's *horizon* moves up to that entry's time: a datagram stamped
at or before the horizon is dropped (``replay_horizon``), since the memory can no longer
tell whether it was seen. The horizon is the older of the forgotten entry's arrival
and stamp, so a flood stamped in the future cannot push it past honest traffic; under
a flood it stays ``max_entries / rate`` seconds behind now (26 s at 10,000 datagrams/s
with the default 262,144), far older than anything a healthy peer sends. What it gives
up: a forgotten datagram stamped ahead of this node's clock can be replayed until the
horizon passes its stamp (at most the replay window) -- only while the memory is full.
"""

from __future__ import annotations

import hashlib
import struct

__all__ = ["ReplayMemory"]

_KEY = struct.Struct(">20sQQd")


class ReplayMemory:
    def __init__(self, keep_s: float, max_entries: int) -> None:
        self.keep_s = keep_s
        self.max_entries = max_entries
        #: digest -> (arrival time, sender's stamp), oldest first (insertion order)
        self._seen: dict[int, tuple[float, float]] = {}
        self.horizon = float("-inf")
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._seen)

    def check(self, sender: bytes, code: int, rid: int, ts: float, now: float) -> str | None:
        """None (and remembered) if the datagram is new, else why it is dropped:
        ``replayed`` or ``replay_horizon``."""
        seen = self._seen
        limit = now - self.keep_s
        while seen:  # forget what is past the window
            first = next(iter(seen))
            if seen[first][0] >= limit:
                break
            del seen[first]
        if ts <= self.horizon:
            return "replay_horizon"
        digest = int.from_bytes(
            hashlib.blake2b(_KEY.pack(sender, code & (2**64 - 1), rid, ts), digest_size=8).digest(),
            "big",
        )
        if digest in seen:
            return "replayed"
        seen[digest] = (now, ts)
        if len(seen) > self.max_entries:
            arrived, stamped = seen.pop(next(iter(seen)))
            self.horizon = max(self.horizon, min(arrived, stamped))
            self.evicted += 1
        return None
