"""The observability pieces on their own: the HTTP handler, the event stream, label
tables, log lines naming the node, and metrics from a node's events (a real runner on an
in-memory network, no daemon)."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest
import trio

from dvms.cli.node import log_formatter
from dvms.partition.events import EventDone, EventStarted
from dvms.runtime.services.events import EventLog
from dvms.runtime.services.http import open_http_listeners, serve_http
from dvms.runtime.services.metrics import outcome_label, reason_label
from dvms.runtime.services.observe import ObserveConfig, event_dict
from dvms.runtime.services.observed import DriverCallDone


async def get(port: int, request: bytes) -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(request)
        out = b""
        while chunk := await stream.receive_some(65536):
            out += chunk
    return out


async def test_http_answers_pages_and_refuses_the_rest():
    pages = {
        "/ok": lambda: (200, "text/plain", b"fine\n"),
        "/no": lambda: (503, "text/plain", b"x"),
    }
    listeners, port = await open_http_listeners("127.0.0.1", 0)
    async with trio.open_nursery() as nursery:
        await nursery.start(lambda task_status: serve_http(listeners, pages, timeout_s=1.0,
                                                           task_status=task_status))  # fmt: skip
        ok = await get(port, b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
        assert ok.startswith(b"HTTP/1.1 200 OK\r\n") and ok.endswith(b"\r\n\r\nfine\n")
        assert b"Content-Length: 5\r\n" in ok
        assert (await get(port, b"GET /no?x=1 HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 503 ")
        assert (await get(port, b"GET /nope HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 404 ")
        assert (await get(port, b"POST /ok HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 405 ")
        assert (await get(port, b"garbage\r\n\r\n")).startswith(b"HTTP/1.1 400 ")
        assert (await get(port, b"GET /ok HTTP/1.1\r\n" + b"X: y\r\n" * 2000)).startswith(
            b"HTTP/1.1 400 "
        )
        head = await get(port, b"HEAD /ok HTTP/1.1\r\n\r\n")
        assert head.endswith(b"\r\n\r\n")
        # a client that never sends is dropped after the timeout, the server goes on
        silent = await trio.open_tcp_stream("127.0.0.1", port)
        with trio.fail_after(3):
            assert await silent.receive_some(10) == b""
        await silent.aclose()
        nursery.cancel_scope.cancel()


async def test_event_log_orders_waits_and_forgets_the_oldest():
    clock = iter(float(t) for t in range(100, 200))
    log = EventLog("node1", keep=3, wall=lambda: next(clock))
    log.on_event(EventStarted(0xAB, "overload"))
    log.on_event(EventDone(0xAB, "overload", True, "", 1.0, 1.5, partition_size=2, migrations=1))
    log.on_event(DriverCallDone("migrate", "web1", "prod", "node2", True, "", 0.25))
    rows = log.after()
    assert [r.type for r in rows] == ["overload", "event-done", "migration"]
    assert rows[2].message == "migrate prod/web1 node1 -> node2: ok in 0.25 s"
    assert event_dict(rows[0])["time"] == "1970-01-01T00:01:40.000+00:00"
    assert log.after(2) == [rows[2]]
    log.on_vjob({"id": "f00", "name": "web", "state": "failed", "reason": "no room", "vms": 3})
    assert [r.seq for r in log.after()] == [2, 3, 4]  # keep=3: the first is gone
    assert log.after()[-1].message == "vjob web (3 VMs) failed: no room"

    async def later() -> None:
        await trio.sleep(0.1)
        log.add("member", "node3", "node3 joined")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(later)
        with trio.fail_after(1):
            got = await log.wait(4, timeout=5)
    assert [r.subject for r in got] == ["node3"]
    assert await log.wait(5, timeout=0.01) == []


@pytest.mark.parametrize(
    ("reason", "outcome"),
    [
        ("solved", "solved"),
        ("merged into 1f", "merged"),
        ("initiator crashed", "initiator_lost"),
        ("two laps without a solution", "no_solution"),
        ("lease expired", "lease_expired"),
        ("something new", "other"),
    ],
)
def test_partition_outcomes_are_a_few_labels(reason, outcome):
    assert outcome_label(reason) == outcome


def test_refusal_reasons_are_a_few_labels():
    assert reason_label("no solution after two laps: no host fits web3") == "no_solution"
    assert reason_label("VM name already in use: web1") == "name_taken"
    assert reason_label("web1 web2 are nowhere") == "other"  # never the VM names


def test_every_log_line_names_the_node():
    rec = logging.LogRecord("dvms.node", logging.INFO, __file__, 1, "up %d%%", (5,), None)
    assert " node3 dvms.node: up 5%" in log_formatter("text", "node3").format(rec)
    assert " 100% dvms.node" in log_formatter("text", "100%").format(rec)
    assert json.loads(log_formatter("json", "node3").format(rec))["node"] == "node3"


def test_observe_config_refuses_nonsense():
    with pytest.raises(ValueError, match="events_kept"):
        ObserveConfig(events_kept=0)
    with pytest.raises(ValueError, match="sample_period_s"):
        ObserveConfig(sample_period_s=0)


ROOT = Path(__file__).resolve().parents[2]


def daemon_families() -> set[str]:
    """The family names the daemon's metrics module defines (counters without _total)."""
    text = (ROOT / "dvms" / "runtime" / "services" / "metrics.py").read_text()
    return set(re.findall(r'"(dvms_[a-z_]+)"', text))


def base_name(series: str) -> str:
    return re.sub(r"_(total|bucket|sum|count)$", "", series)


def test_the_docs_list_every_family_and_the_dashboard_uses_only_real_ones():
    families = daemon_families()
    assert len(families) > 30
    doc = (ROOT / "docs" / "observability.md").read_text()
    listed = {base_name(n) for n in re.findall(r"`(dvms_[a-z_]+)`", doc)}
    assert families <= listed, families - listed
    dashboard = json.loads((ROOT / "deploy" / "grafana-dvms.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    used = {base_name(n) for e in exprs for n in re.findall(r"dvms_[a-z_]+", e)}
    assert used <= families, used - families
    assert {"dvms_violation_active", "dvms_partition_outcome", "dvms_migration_duration_seconds",
            "dvms_overlay_routing_table_peers"} <= used  # fmt: skip


def test_kept_families_render_as_the_librarys_own_counters_and_histograms():
    from prometheus_client import CollectorRegistry, Counter, Histogram
    from prometheus_client.exposition import generate_latest

    from dvms.runtime.services.metrics import FAST_S, SIZES, _Family, _Kept

    ours, lib = CollectorRegistry(), CollectorRegistry()
    counter = _Family("dvms_x", "Help.", ("result",), start=[("ok",), ("failed",)])
    hist = _Family("dvms_y_seconds", "Help.", ("result",), bounds=FAST_S)
    sizes = _Family("dvms_z", "Help.", bounds=SIZES)
    ours.register(_Kept([counter, hist, sizes]))
    c = Counter("dvms_x", "Help.", ["result"], registry=lib)
    h = Histogram("dvms_y_seconds", "Help.", ["result"], buckets=FAST_S, registry=lib)
    z = Histogram("dvms_z", "Help.", buckets=SIZES, registry=lib)
    c.labels("ok"), c.labels("failed")  # every series from the start, in our order
    for v in (0.0, 0.005, 0.0051, 1.0, 59.9, 60.0, 61.0, 1e9):  # on, between, above bounds
        counter.inc(("ok",), 2)
        c.labels("ok").inc(2)
        hist.observe(v, ("solved",))
        h.labels("solved").observe(v)
        sizes.observe(int(v) % 60)
        z.observe(int(v) % 60)
    assert generate_latest(ours) == generate_latest(lib)
