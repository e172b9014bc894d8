"""A node whose clock is 90 s off, on real daemons over loopback: its peers name it
(log, ``members``, metrics) within 10 s, while replay protection holds for everyone
(an exact replay and an old datagram are both dropped)."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from dvms.overlay.messages import Ping
from dvms.runtime.client import call
from dvms.runtime.daemon import build_registry
from dvms.wire.envelope import WireCodec
from dvms.wire.keys import load_keyring
from tests.e2e.test_e2e_cluster import dvms, dvms_json

pytest.importorskip("libvirt", reason="libvirt-python not installed (needs libvirt-dev)")


def start(d: Path, name: str, seed: str, offset_s: float) -> subprocess.Popen:
    state = d / name
    state.mkdir(mode=0o700)
    (state / "node.toml").write_text(f"[runner]\nclock_offset_s = {offset_s}\n")
    cmd = [sys.executable, "-m", "dvms", "node", "run", "--listen", "127.0.0.1:0",
           "--key", str(d / "cluster.key"), "--state-dir", str(state), "--hostname", name,
           "--log-level", "warning", "--seed", seed, "--profile", "local",
           "--config", str(state / "node.toml")]  # fmt: skip
    with open(state / "node.log", "ab") as log:
        return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip


def node_json(state: Path, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return json.loads((state / "node.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            time.sleep(0.05)
    raise AssertionError(f"{state.name} did not start: {(state / 'node.log').read_text()}")


@pytest.fixture
def cluster(tmp_path):
    d = tmp_path / "c"
    rows = dvms_json("cluster", "up", "--nodes", "3", "--dir", str(d), "--timeout", "90")["nodes"]
    procs: list[subprocess.Popen] = []
    try:
        yield d, {r["name"]: r for r in rows}, procs
    finally:
        for p in procs:
            p.terminate()
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        dvms("cluster", "down", "--dir", str(d), check=False, timeout=120)


def test_a_node_90_s_off_is_named_while_replays_are_still_dropped(cluster):
    d, rows, procs = cluster
    seed = rows["node1"]["address"]
    procs.append(start(d, "skewed", seed, 90.0))
    t0 = time.monotonic()
    skewed = node_json(d / "skewed")
    t_up = time.monotonic()
    sid = skewed["node_id"]

    log = d / "node1" / "node.log"
    pattern = re.compile(rf"clock of peer .*id {sid}\) is \+(9\d\.\d) s off")
    while not pattern.search(log.read_text()):
        assert time.monotonic() - t0 < 10, f"not named within 10 s: {log.read_text()}"
        time.sleep(0.05)
    t = time.monotonic()
    print(f"node1 named the skewed node {t - t_up:.2f} s after it listened ({t - t0:.1f} s "
          "after its process started)")  # fmt: skip
    assert 89 < float(pattern.search(log.read_text()).group(1)) < 91
    assert "datagrams from peer" in log.read_text() and "as stale" in log.read_text()
    procs.append(start(d, "slightly", seed, 20.0))  # inside the window: it joins
    slightly = node_json(d / "slightly")

    one = rows["node1"]["socket"]
    members = {m["node_id"]: m for m in dvms_json("members", sock=one)["members"]}
    assert members[sid]["state"] == "clock_skew"
    assert 89 < members[sid]["clock_offset_s"] < 91
    # the node 20 s off joined and shows its offset; the others are close to 0
    deadline = time.monotonic() + 20
    while (m := members.get(slightly["node_id"])) is None or m["clock_offset_s"] is None:
        assert time.monotonic() < deadline, members
        time.sleep(0.5)
        members = {m["node_id"]: m for m in dvms_json("members", sock=one)["members"]}
    assert m["state"] == "alive" and 19 < m["clock_offset_s"] < 21, m
    for name in ("node2", "node3"):
        other = members[rows[name]["node_id"]]
        assert abs(other["clock_offset_s"]) < 1, other
    metrics = urllib.request.urlopen(rows["node1"]["metrics"], timeout=5).read().decode()
    gauge = re.search(rf'dvms_peer_clock_offset_seconds{{peer="{sid}"}} (\S+)', metrics)
    assert gauge and 89 < float(gauge.group(1)) < 91
    assert call(one, "status")["dropped"]["stale"] > 0

    # replay protection still holds for everyone else: a copy of an accepted datagram
    # and a datagram stamped 90 s ago are both dropped by node2
    two = rows["node2"]
    before = call(two["socket"], "status")["dropped"]
    codec = WireCodec(load_keyring(d / "cluster.key"), build_registry())
    host, port = two["address"].rsplit(":", 1)
    fresh = codec.encode(Ping(), sender=12345, rid=1, now=time.time())
    old = codec.encode(Ping(), sender=12345, rid=2, now=time.time() - 90)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for data in (fresh, fresh, old):
            s.sendto(data, (host, int(port)))
            time.sleep(0.2)
    after = call(two["socket"], "status")["dropped"]
    assert after.get("replayed", 0) == before.get("replayed", 0) + 1, (before, after)
    assert after.get("stale", 0) >= before.get("stale", 0) + 1, (before, after)
