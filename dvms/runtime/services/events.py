"""A node's event stream (``dvms events``): what happened here, in order, with times,
like ``kubectl get events``. Built from what the node already produces; the
observability service (``observe.py``) feeds it::

    EventStarted(kind)            -> launch | overload | underload   raised here
    EventDone                     -> event-done       solved or failed, why, how long
    PartitionChanged (new pid)    -> partition        joined as leader or member
    PartitionReleased             -> partition        ended: outcome
    DriverCallDone                -> migration | boot
    HaEvent (dvms.ha)             -> ha               adopted, fenced, agreed, launched...
    vjob record changes           -> vjob             accepted, done, failed, stopped, removed
    routing-table changes         -> member           joined, lost (observe.py)
    overload edges                -> overload-ended   (observe.py)

Entries carry a sequence number per node (``seq``) and a wall-clock time; the newest
``keep`` are kept. ``wait`` returns as soon as an entry after a given ``seq`` exists:
``events --follow`` long-polls it, so an entry shows within the poll's round trip.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

import trio

from dvms.ha import HaEvent
from dvms.partition.events import EventDone, EventStarted, PartitionChanged, PartitionReleased
from dvms.runtime.messages import EventRow
from dvms.runtime.services.observed import DriverCallDone

__all__ = ["EVENT_TYPES", "EventLog"]

EVENT_TYPES = (
    "launch",
    "overload",
    "underload",
    "event-done",
    "partition",
    "migration",
    "boot",
    "vjob",
    "member",
    "overload-ended",
    "ha",
)


class EventLog:
    def __init__(self, host: str, *, keep: int, wall: Callable[[], float] = time.time) -> None:
        self.host = host
        self.wall = wall
        self._rows: deque[EventRow] = deque(maxlen=keep)
        self._seq = 0
        self._added = trio.Event()
        #: partitions this node has reported joining (a view changes many times)
        self._seen_pids: deque[int] = deque(maxlen=64)

    def add(self, type_: str, subject: str, message: str) -> EventRow:
        self._seq += 1
        row = EventRow(self._seq, self.wall(), self.host, type_, subject[:128], message[:256])
        self._rows.append(row)
        self._added.set()
        self._added = trio.Event()
        return row

    @property
    def last_seq(self) -> int:
        return self._seq

    def after(
        self, seq: int = 0, *, since: float = 0.0, limit: int | None = None
    ) -> list[EventRow]:
        """Entries with a sequence number above ``seq`` and a time after ``since``, oldest
        first; the newest ``limit`` of them."""
        rows = [r for r in self._rows if r.seq > seq and r.ts > since]
        return rows[-limit:] if limit else rows

    async def wait(self, seq: int, timeout: float) -> list[EventRow]:
        """The entries after ``seq``, as soon as there is one, or [] after ``timeout``."""
        with trio.move_on_after(timeout):
            while self._seq <= seq:
                await self._added.wait()
        return self.after(seq)

    # -- from the node's own events ----------------------------------------------------

    def on_event(self, event: object) -> None:
        if isinstance(event, EventStarted):
            self.add(event.kind, f"{event.event_id:x}", f"{event.kind} event raised on {self.host}")
        elif isinstance(event, EventDone):
            self._event_done(event)
        elif isinstance(event, PartitionChanged):
            view = event.view
            if view.pid not in self._seen_pids:
                self._seen_pids.append(view.pid)
                events = ", ".join(f"{e.kind}:{e.event_id:x}" for e in view.events)
                self.add(
                    "partition",
                    f"{view.pid:016x}",
                    f"in partition as {event.role}, {len(view.members)} members, "
                    f"events {events or '-'}",
                )
        elif isinstance(event, PartitionReleased):
            self.add("partition", f"{event.pid:016x}", f"partition ended: {event.reason}")
        elif isinstance(event, DriverCallDone):
            self._driver(event)
        elif isinstance(event, HaEvent):
            vm = f"{event.namespace}/{event.name}" if event.namespace else event.name
            why = f": {event.detail}" if event.detail else ""
            self.add("ha", vm, f"{event.kind} generation {event.generation} on {self.host}{why}")

    def _event_done(self, e: EventDone) -> None:
        result = "solved" if e.ok else "failed"
        why = f": {e.reason}" if e.reason else ""
        self.add(
            "event-done",
            f"{e.event_id:x}",
            f"{e.kind} {result}{why}; partition of {e.partition_size}, "
            f"{e.migrations} migrations, {e.finished - e.started:.2f} s",
        )

    def _driver(self, e: DriverCallDone) -> None:
        vm = f"{e.namespace}/{e.vm}" if e.namespace else e.vm
        result = "ok" if e.ok else f"failed: {e.reason}"
        if e.call == "migrate":
            msg = f"migrate {vm} {self.host} -> {e.dst}: {result} in {e.duration_s:.2f} s"
            self.add("migration", vm, msg)
        else:
            self.add("boot", vm, f"create {vm} on {self.host}: {result}")

    def on_vjob(self, record: dict[str, Any]) -> None:
        state = str(record.get("state", ""))
        name = record.get("name") or "-"
        reason = record.get("reason") or ""
        vms = record.get("vms", 0)
        text = f"vjob {name} ({vms} VMs) {state}" + (f": {reason}" if reason else "")
        self.add("vjob", str(record.get("id", "")), text)
