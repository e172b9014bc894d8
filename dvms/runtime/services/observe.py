"""Seeing a node from outside: its event stream (``dvms events``), its Prometheus
metrics, ``/healthz`` and ``/readyz``, and one log line per partition outcome.

::

    runner listeners (core events, shell observations) -+-> EventLog   (events.py)
    vjob listeners (record changes) ---------------------+-> NodeMetrics (metrics.py,
    sampler (every sample_period_s): loop lag,           |   only with ``metrics`` set)
      overload edges, routing-table changes -------------+-> INFO log of partition outcomes
    HTTP (http.py), with ``metrics = "host:port"``:
      /metrics  NodeMetrics.exposition()
      /healthz  200 while the event loop wakes its sampler within health_lag_s
      /readyz   200 once joined to the overlay and the hypervisor answered lately

The event stream runs on every node; metrics and the HTTP endpoint cost nothing unless
``metrics`` is set (``NodeConfig.metrics``, ``--metrics``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any

import trio
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from dvms.overlay.core import OverlayCore
from dvms.partition.events import EventStarted, PartitionReleased
from dvms.runtime.capabilities import Handlers, PartitionStatus, Peers, Requester
from dvms.runtime.client import ControlError
from dvms.runtime.messages import MAX_EVENT_ROWS, EventRow, EventsQuery, EventsReply
from dvms.runtime.services.events import EventLog
from dvms.runtime.services.http import serve_http
from dvms.runtime.services.metrics import NodeMetrics
from dvms.runtime.services.monitor import HostMonitor
from dvms.runtime.services.partition_log import PartitionLog
from dvms.wire.envelope import WireCodec

__all__ = ["Observability", "ObserveConfig", "event_dict"]

log = logging.getLogger("dvms.runtime.services.observe")

TEXT = "text/plain; charset=utf-8"


@dataclass(frozen=True, slots=True)
class ObserveConfig:
    """The observability service (``[observe]`` of the node TOML; ours)."""

    #: How often the sampler wakes, seconds: loop lag, overload edges, routing-table
    #: changes are seen this late at most.
    sample_period_s: float = 0.25
    #: Entries of the event stream kept per node.
    events_kept: int = 1000
    #: ``/healthz`` fails when the sampler woke this late, seconds (a blocked loop).
    health_lag_s: float = 2.0
    #: ``/readyz`` fails when the hypervisor's last answer is older than this, seconds
    #: (the host monitor reads it every ``[monitor] period_s``).
    ready_stale_s: float = 5.0
    #: An HTTP client has this long to send its request, seconds.
    http_timeout_s: float = 5.0
    #: A new routing-table member is reported once its host name is known, or after
    #: this long, seconds.
    member_name_wait_s: float = 3.0
    #: ``events --follow`` long-polls at most this long per request, seconds.
    follow_wait_max_s: float = 30.0

    def __post_init__(self) -> None:
        if self.events_kept < 1:
            raise ValueError("events_kept must be at least 1")
        for name in ("sample_period_s", "health_lag_s", "ready_stale_s", "http_timeout_s",
                     "follow_wait_max_s"):  # fmt: skip
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0")


def event_dict(row: EventRow) -> dict[str, Any]:
    """An event as the control socket returns it: the row plus its ISO-8601 time."""
    out = asdict(row)
    out["time"] = datetime.fromtimestamp(row.ts, UTC).isoformat(timespec="milliseconds")
    return out


class Observability:
    def __init__(
        self,
        *,
        name: str,
        overlay: OverlayCore,
        codec: WireCodec,
        partition: PartitionStatus,
        partitions: PartitionLog,
        monitor: HostMonitor,
        requests: Requester,
        peers: Peers,
        handlers: Handlers,
        pending_vms: Callable[[], int] = lambda: 0,
        metrics: bool = False,
        config: ObserveConfig | None = None,
    ) -> None:
        self.name = name
        self.overlay = overlay
        self.partition = partition
        self.partitions = partitions
        self.monitor = monitor
        self.requests = requests
        self.peers = peers
        self.config = cfg = config or ObserveConfig()
        self.events = EventLog(name, keep=cfg.events_kept)
        self.lag = 0.0
        self._last_tick = -math.inf
        self.metrics: NodeMetrics | None = None
        if metrics:
            self.metrics = NodeMetrics(
                name=name,
                overlay=overlay,
                codec=codec,
                partition=partition,
                partitions=partitions,
                monitor=monitor,
                pending_vms=pending_vms,
                loop_lag=lambda: self.lag,
            )
        self._overloaded_since: float | None = None
        self._members: dict[int, str] = {}
        self._new: dict[int, float] = {}
        handlers.register(EventsQuery, self._answer_events)

    # -- inputs ------------------------------------------------------------------------

    def on_event(self, event: object) -> None:
        self.events.on_event(event)
        if (
            isinstance(event, EventStarted)
            and event.kind == "overload"
            and self._overloaded_since is None
        ):
            # an overload shorter than a sample period is timed from its detection
            self._overloaded_since = trio.current_time()
        if self.metrics is not None:
            self.metrics.on_event(event)
        if isinstance(event, PartitionReleased):
            self._log_outcome(event)

    def on_vjob(self, record: dict[str, Any]) -> None:
        self.events.on_vjob(record)
        if self.metrics is not None:
            self.metrics.on_vjob(record)

    def _log_outcome(self, e: PartitionReleased) -> None:
        """One INFO line per partition outcome, by the node that reports its end (its
        leader, or a leaderless end's deputy: ``PartitionLog.reported_here``)."""
        rec = self.partitions.reported_here(e.pid, self.overlay.node_id)
        if rec is None:
            return
        took = (rec.ended or rec.started) - rec.started
        log.info(
            "partition %016x %s: events %s, members %s, actions %d, migrations %d, %.2f s",
            e.pid, e.reason, ",".join(rec.events) or "-",
            ",".join(self.peers.name_of(m) for m in rec.members), rec.actions,
            rec.migrations, took,
        )  # fmt: skip

    # -- service -----------------------------------------------------------------------

    async def run(
        self,
        listeners: list[trio.SocketListener] | None = None,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """The sampler, and with ``listeners`` the HTTP endpoint, until cancelled."""
        self._last_tick = trio.current_time()
        async with trio.open_nursery() as nursery:
            if listeners:
                pages = {"/metrics": self.metrics_page, "/healthz": self.healthz,
                         "/readyz": self.readyz}  # fmt: skip
                timeout = self.config.http_timeout_s
                await nursery.start(partial(serve_http, listeners, pages, timeout_s=timeout))
            nursery.start_soon(self._sampler)
            task_status.started()

    async def _sampler(self) -> None:
        period = self.config.sample_period_s
        expected = trio.current_time()
        while True:
            expected += period
            await trio.sleep_until(expected)
            now = trio.current_time()
            self.lag = max(0.0, now - expected)
            self._last_tick = now
            expected = max(expected, now - period)  # after a long stall, do not catch up
            self.sample(now)

    def sample(self, now: float) -> None:
        """Overload edges and routing-table changes since the last sample."""
        over = self.partition.overloaded()
        if over and self._overloaded_since is None:
            self._overloaded_since = now
        elif not over and self._overloaded_since is not None:
            took = now - self._overloaded_since
            self._overloaded_since = None
            self.events.add("overload-ended", self.name, f"{self.name} no longer overloaded "
                            f"after {took:.2f} s")  # fmt: skip
            if self.metrics is not None:
                self.metrics.violation_ended(took)
        self._membership(now)

    def _membership(self, now: float) -> None:
        table = self.overlay.table.index
        for node_id, entry in table.items():
            if node_id in self._members:
                continue
            first = self._new.setdefault(node_id, now)
            name = self.peers.host_name(node_id)
            if name is None and now - first < self.config.member_name_wait_s:
                continue
            self._new.pop(node_id, None)
            shown = name or self.peers.name_of(entry.contact)
            self._members[node_id] = shown
            self.events.add("member", shown, f"{shown} joined this node's routing table")
        for node_id in [i for i in self._members if i not in table]:
            shown = self._members.pop(node_id)
            why = "it stopped cleanly" if node_id in self.overlay.left else "failed or evicted"
            self.events.add("member", shown, f"{shown} left this node's routing table ({why})")
        for node_id in [i for i in self._new if i not in table]:
            del self._new[node_id]

    # -- pages -------------------------------------------------------------------------

    def metrics_page(self) -> tuple[int, str, bytes]:
        assert self.metrics is not None
        return 200, CONTENT_TYPE_LATEST, self.metrics.exposition()

    def healthz(self) -> tuple[int, str, bytes]:
        """Alive, and the event loop woke the sampler on time lately."""
        late = trio.current_time() - self._last_tick - self.config.sample_period_s
        lag = max(self.lag, late)
        if lag > self.config.health_lag_s:
            return 503, TEXT, f"event loop late by {lag:.3f} s\n".encode()
        return 200, TEXT, f"ok: event loop lag {lag:.3f} s\n".encode()

    def readyz(self) -> tuple[int, str, bytes]:
        """Joined the overlay, and the hypervisor answered within ``ready_stale_s``."""
        problems = []
        if not self.overlay.joined:
            problems.append("not joined to the overlay")
        age = trio.current_time() - self.monitor.refreshed_at
        if age > self.config.ready_stale_s:
            problems.append(
                "hypervisor never answered" if math.isinf(age)
                else f"hypervisor last answered {age:.1f} s ago"
            )  # fmt: skip
        if problems:
            return 503, TEXT, ("not ready: " + "; ".join(problems) + "\n").encode()
        return 200, TEXT, b"ready\n"

    # -- dvms events -------------------------------------------------------------------

    async def _answer_events(self, msg: EventsQuery) -> EventsReply:
        rows = self.events.after(since=msg.since, limit=min(msg.limit, MAX_EVENT_ROWS))
        return EventsReply(self.name, tuple(rows))

    async def command(self, args: dict[str, Any]) -> dict[str, Any]:
        """The ``events`` control command. ``after`` (this node's seq) with ``wait``
        (seconds): long-poll for entries after it; ``all`` with ``since`` (epoch
        seconds): every node's entries after ``since``, gathered."""
        try:
            after = int(args.get("after", 0))
            wait = float(args.get("wait", 0.0))
            since = float(args.get("since", 0.0))
            limit = int(args.get("limit", self.config.events_kept))
        except (TypeError, ValueError):
            raise ControlError("events: after, wait, since and limit must be numbers") from None
        if after < 0 or wait < 0 or limit < 1 or not math.isfinite(since + wait):
            raise ControlError("events: after, wait and since must be >= 0, limit >= 1")
        if args.get("all"):
            replies, silent = await self.requests.gather(
                EventsQuery(since, min(limit, MAX_EVENT_ROWS))
            )
            rows = [r for rep in replies if isinstance(rep, EventsReply) for r in rep.rows]
            rows.sort(key=lambda r: (r.ts, r.host, r.seq))
            return {
                "events": [event_dict(r) for r in rows[-limit:]],
                "unreachable": sorted(self.peers.name_of(c) for c in silent),
            }
        wait = min(wait, self.config.follow_wait_max_s)
        found = self.events.after(after, since=since, limit=limit)
        if not found and wait > 0:
            found = [r for r in await self.events.wait(after, wait) if r.ts > since]
        return {"events": [event_dict(r) for r in found[-limit:]], "last": self.events.last_seq}
