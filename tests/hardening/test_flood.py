"""A peer holding the cluster key floods a real daemon on loopback with signed requests:
lookups, record stores, partition requests, node-to-node queries, unique pings (the
replay memory) and requests from hundreds of source addresses (state per unknown
sender). Each bound holds: the drops are counted by reason, the bounded tables stay
within their limits, the victim's memory stays under a ceiling, and it keeps answering
another peer and its own control socket throughout."""

from __future__ import annotations

import os
import random
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bench._hostile import Hostile
from dvms.overlay.messages import FindNode, FindValue, Ping, Store
from dvms.overlay.records import Identity
from dvms.partition.messages import CanMerge
from dvms.runtime.client import call
from dvms.runtime.localcluster import cluster_down, cluster_up
from dvms.runtime.messages import HostQuery
from dvms.wire.keys import load_key

psutil = pytest.importorskip("psutil")
pytest.importorskip("libvirt", reason="libvirt-python not installed (needs libvirt-dev)")

#: The victim's limits, small so that a test-sized flood reaches every one.
LIMITS = """[limits]
datagram_per_s = 1000.0
datagram_burst = 1000
lookup_per_s = 50.0
lookup_burst = 100
request_per_s = 50.0
request_burst = 100
replay_entries = 2000
peers = 256
new_peers_per_s = 20.0
new_peers_burst = 50
"""
#: Datagrams per second a flood sends: about what one daemon reads on this machine.
PACE = 4000.0
#: Memory the victim may grow by under the whole flood, bytes.
RSS_CEILING = 64 * 2**20


@pytest.fixture(scope="module")
def cluster() -> Iterator[dict[str, Any]]:
    d = Path(tempfile.mkdtemp(prefix="dvms-flood-"))
    (d / "node.toml").write_text(LIMITS)
    try:
        rows = cluster_up(d / "c", 2, metrics=False, config_file=str(d / "node.toml"))
        yield {"rows": rows, "key": load_key(d / "c" / "cluster.key")}
    finally:
        cluster_down(d / "c")
        shutil.rmtree(d, ignore_errors=True)


def _blast(
    addr: tuple[str, int], datagrams: list[bytes], socks: int = 1, rate: float = PACE
) -> float:
    """Send every datagram to ``addr`` at about ``rate`` per second, from ``socks``
    source ports in turn; returns the rate reached, datagrams per second. (Faster than
    the victim reads, the kernel drops the excess from its socket buffer before the
    daemon sees it: that tests the kernel, not the bounds.)"""
    out = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(socks)]
    t0 = time.perf_counter()
    try:
        for i, data in enumerate(datagrams):
            ahead = t0 + i / rate - time.perf_counter()
            if ahead > 0.002:
                time.sleep(ahead)
            out[i % socks].sendto(data, addr)
    finally:
        for s in out:
            s.close()
    return len(datagrams) / (time.perf_counter() - t0)


def _while_flooding(flood: Callable[[], float], check: Callable[[], None]) -> float:
    """Run ``flood`` in a thread and ``check`` at once beside it; the flood's rate."""
    rate: list[float] = []
    t = threading.Thread(target=lambda: rate.append(flood()))
    t.start()
    try:
        check()
    finally:
        t.join()
    return rate[0]


def _victim(cluster: dict[str, Any]) -> tuple[dict[str, Any], tuple[str, int], Any]:
    row = cluster["rows"][0]
    host, port = row["address"].rsplit(":", 1)
    return row, (host, int(port)), psutil.Process(row["pid"])


def _drops(sock: str) -> dict[str, int]:
    return call(sock, "status")["dropped"]


def _other_peer_is_answered(cluster: dict[str, Any]) -> Callable[[], None]:
    """node2 measures its RTT to the victim (HostQuery probes the victim answers) and
    the victim's own control socket answers, while the flood runs."""

    def check() -> None:
        time.sleep(0.2)
        res = call(cluster["rows"][1]["socket"], "rtt", {"host": "node1"}, timeout=30)
        assert res["measured_ms"] is not None
        call(cluster["rows"][0]["socket"], "status", timeout=30)

    return check


def test_every_expensive_request_is_rate_limited_and_counted(cluster: dict[str, Any]) -> None:
    row, addr, proc = _victim(cluster)
    base_rss = proc.memory_info().rss
    before = _drops(row["socket"])
    h = Hostile(cluster["key"], rng=random.Random(7))
    me = random.Random(8).getrandbits(160)  # one node id, as a compromised node would use
    ident = Identity.generate()
    now = time.time()
    rec = ident.sign_record("flood/x", b"v" * 64, seq=1, ttl_s=60.0)
    kinds = {
        "lookup": lambda i: FindNode(i) if i % 2 else FindValue(i),
        "store": lambda i: Store(rec),
        "partition": lambda i: CanMerge(i),
        "request": lambda i: HostQuery(vms=True),
    }
    datagrams = [
        h.sign(make(i), now=now, sender=me) for make in kinds.values() for i in range(3000)
    ]
    random.Random(9).shuffle(datagrams)
    rate = _while_flooding(lambda: _blast(addr, datagrams), _other_peer_is_answered(cluster))
    time.sleep(0.5)
    after = _drops(row["socket"])
    for cls in kinds:
        grew = after.get(f"rate_{cls}", 0) - before.get(f"rate_{cls}", 0)
        assert grew > 0, (cls, after)
    bounds = call(row["socket"], "status")["bounds"]
    assert bounds["serving"] <= 256 and bounds["pending_rpcs"] <= 8192, bounds
    grown = proc.memory_info().rss - base_rss
    took = call(row["socket"], "status")["accepted"]
    print(f"flood {len(datagrams)} at {rate:,.0f}/s, {took} accepted in all; drops {after}; "
          f"rss +{grown / 2**20:.1f} MiB")  # fmt: skip
    assert grown < RSS_CEILING


def test_the_replay_memory_and_the_per_sender_state_stay_bounded(cluster: dict[str, Any]) -> None:
    row, addr, proc = _victim(cluster)
    base_rss = proc.memory_info().rss
    before = _drops(row["socket"])
    h = Hostile(cluster["key"], rng=random.Random(11))
    now = time.time()
    # 15,000 unique pings from made-up node ids: the replay memory holds 2,000
    pings = [h.sign(Ping(), now=now) for _ in range(15000)]
    rate = _while_flooding(lambda: _blast(addr, pings), _other_peer_is_answered(cluster))
    # lookups from 600 source ports: more than the newcomers' bucket lets in
    lookups = [h.sign(FindNode(i), now=time.time()) for i in range(3000)]
    _blast(addr, lookups, socks=600, rate=1000.0)
    time.sleep(0.5)
    status = call(row["socket"], "status")
    bounds, after = status["bounds"], status["dropped"]
    assert bounds["replay_memory"] <= 2000 and bounds["replay_evicted"] > 0, bounds
    assert bounds["rate_buckets"] <= 256, bounds
    new = "new_peer_datagram"
    assert after.get(new, 0) > before.get(new, 0), after
    assert after.get("rate_datagram", 0) > before.get("rate_datagram", 0), after
    assert bounds["answered_peers"] <= 4096 and bounds["asking_names"] <= 64, bounds
    assert status["peers"] <= 160 * 20  # the routing table is bounded by its buckets
    # a replay of an old ping is still refused, remembered or under the horizon
    ping_drops = after.get("replayed", 0) + after.get("replay_horizon", 0)
    _blast(addr, pings[:100])
    time.sleep(0.3)
    after2 = _drops(row["socket"])
    assert after2.get("replayed", 0) + after2.get("replay_horizon", 0) >= ping_drops + 90
    grown = proc.memory_info().rss - base_rss
    print(f"pings at {rate:,.0f}/s; bounds {bounds}; rss +{grown / 2**20:.1f} MiB")
    assert grown < RSS_CEILING
    assert os.path.exists(row["socket"])
