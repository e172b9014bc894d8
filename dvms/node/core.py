"""One node's whole protocol stack as a single sans-I/O core: the overlay (Kademlia +
Vivaldi) and, when the node hosts VMs, the partition protocol on top of it. Messages
are routed by type; timers and deadlines are merged. The Trio runner and the simulator
both drive this object."""

from __future__ import annotations

from typing import Any

from dvms.overlay.core import OverlayCore
from dvms.partition.core import PartitionCore
from dvms.partition.messages import PARTITION_MESSAGES

__all__ = ["NodeCore"]

_PARTITION_TYPES = frozenset(PARTITION_MESSAGES.values())


class NodeCore:
    def __init__(self, overlay: OverlayCore, partition: PartitionCore | None = None) -> None:
        self.overlay = overlay
        self.partition = partition

    @property
    def node_id(self) -> int:
        return self.overlay.node_id

    def on_message(self, src, sender: int, rid: int, msg: Any, *, now: float) -> list[Any]:
        if type(msg) in _PARTITION_TYPES:
            if self.partition is None:
                return []
            return self.partition.on_message(src, sender, rid, msg, now=now)
        return self.overlay.on_message(src, sender, rid, msg, now=now)

    def on_timer(self, *, now: float) -> list[Any]:
        out = self.overlay.on_timer(now=now)
        if self.partition is not None:
            d = self.partition.next_deadline()
            if d is not None and d <= now:
                out += self.partition.on_timer(now=now)
        return out

    def next_deadline(self) -> float | None:
        a = self.overlay.next_deadline()
        b = self.partition.next_deadline() if self.partition is not None else None
        if a is None:
            return b
        return a if b is None or a < b else b
