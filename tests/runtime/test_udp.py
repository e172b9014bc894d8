"""Real UDP on loopback: five `dvms node run` processes join through one seed and all see
each other; a node with the wrong cluster key is ignored; garbage is dropped and counted."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dvms.runtime.client import call
from dvms.wire.keys import generate_key, write_key

NODES = 5
#: How long a daemon may take to start (import, key, socket): a bound for a machine
#: loaded by other work, not a performance target.
STARTUP_S = 90.0


def start(tmp: Path, name: str, key: Path, seed: str | None = None) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "dvms", "node", "run", "--listen", "127.0.0.1:0"]
    cmd += ["--key", str(key), "--state-dir", str(tmp / name), "--profile", "local"]
    cmd += ["--hostname", name, "--log-level", "warning"]
    if seed:
        cmd += ["--seed", seed]
    log = open(tmp / f"{name}.log", "w")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)


def wait_for(pred, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = pred()
            if last:
                return last
        except Exception as exc:  # the node may not be up yet
            last = exc
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def info(tmp: Path, name: str) -> dict:
    return json.loads((tmp / name / "node.json").read_text())


def sock(tmp: Path, name: str) -> str:
    return str(tmp / name / "dvms.sock")


@pytest.fixture
def cluster(tmp_path):
    key = tmp_path / "cluster.key"
    write_key(key, generate_key())
    procs: dict[str, subprocess.Popen] = {}
    try:
        procs["n0"] = start(tmp_path, "n0", key)
        wait_for(lambda: (tmp_path / "n0" / "dvms.sock").exists(), STARTUP_S, "seed node")
        seed = info(tmp_path, "n0")["address"]
        for i in range(1, NODES):
            procs[f"n{i}"] = start(tmp_path, f"n{i}", key, seed)
        yield tmp_path, procs, seed
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs.values():
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


def test_five_nodes_see_each_other_and_reject_outsiders(cluster):
    tmp, procs, seed = cluster
    names = [f"n{i}" for i in range(NODES)]
    for name in names:
        wait_for(lambda name=name: os.path.exists(sock(tmp, name)), STARTUP_S, f"{name} socket")
    ids = {name: info(tmp, name)["node_id"] for name in names}

    def everyone_sees_everyone():
        for name in names:
            peers = {p["node_id"] for p in call(sock(tmp, name), "peers")}
            if peers != set(ids.values()) - {ids[name]}:
                return False
        return True

    wait_for(everyone_sees_everyone, 30, "all nodes to see each other")
    for name in names:
        assert call(sock(tmp, name), "status")["joined"] is True

    # A node with another cluster key: everything it sends names a key nobody holds.
    bad_key = tmp / "other.key"
    write_key(bad_key, generate_key())
    procs["evil"] = start(tmp, "evil", bad_key, seed)
    wait_for(lambda: os.path.exists(sock(tmp, "evil")), STARTUP_S, "outsider socket")
    wait_for(
        lambda: call(sock(tmp, "n0"), "status")["dropped"].get("unknown_key", 0) >= 2,
        20,
        "seed to drop the outsider's datagrams",
    )
    evil_id = info(tmp, "evil")["node_id"]
    for name in names:
        assert evil_id not in {p["node_id"] for p in call(sock(tmp, name), "peers")}
    evil = call(sock(tmp, "evil"), "status")
    assert evil["joined"] is False and evil["peers"] == 0

    # Garbage, truncated and forged datagrams from a raw socket: dropped and counted
    # (random bytes fail the version byte, or name a key nobody holds).
    host, port = seed.rsplit(":", 1)
    before = call(sock(tmp, "n0"), "status")["dropped"]

    def refused(dropped: dict) -> int:
        return sum(dropped.get(r, 0) for r in ("bad_version", "unknown_key", "bad_mac"))

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(b"\x00" * 10, (host, int(port)))  # shorter than a MAC
        s.sendto(os.urandom(300), (host, int(port)))  # random bytes
        s.sendto(b"\xa1" * 40 + b"not cbor", (host, int(port)))
    wait_for(
        lambda: (
            call(sock(tmp, "n0"), "status")["dropped"].get("truncated", 0)
            >= before.get("truncated", 0) + 1
            and refused(call(sock(tmp, "n0"), "status")["dropped"]) >= refused(before) + 2
        ),
        10,
        "garbage to be counted",
    )
    # The node still works: a lookup from n3 finds every other node.
    found = call(sock(tmp, "n3"), "lookup", {"target": ids["n1"]})
    assert set(found) == set(ids.values())


def test_sigterm_stops_a_node_cleanly(tmp_path):
    key = tmp_path / "k"
    write_key(key, generate_key())
    p = start(tmp_path, "solo", key)
    try:
        wait_for(lambda: (tmp_path / "solo" / "dvms.sock").exists(), STARTUP_S, "node")
        assert call(sock(tmp_path, "solo"), "status")["joined"] is True
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=10) == 0
    finally:
        if p.poll() is None:
            p.kill()


def test_bad_configuration_is_reported_without_a_traceback(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "dvms", "node", "run", "--key", str(tmp_path / "missing")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 1
    assert "does not exist" in out.stderr and "Traceback" not in out.stderr
    out = subprocess.run(
        [sys.executable, "-m", "dvms", "node", "run", "--listen", "nonsense"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 1 and "host:port" in out.stderr


def test_a_second_node_on_the_same_state_dir_is_refused(tmp_path):
    """Two nodes on one state dir would share the node id and the control socket: the
    second one exits with an error naming the first one's pid, and the first runs on."""
    key = tmp_path / "k"
    write_key(key, generate_key())
    first = start(tmp_path, "solo", key)
    try:
        wait_for(lambda: (tmp_path / "solo" / "dvms.sock").exists(), STARTUP_S, "node")
        cmd = [sys.executable, "-m", "dvms", "node", "run", "--listen", "127.0.0.1:0"]
        cmd += ["--key", str(key), "--state-dir", str(tmp_path / "solo"), "--profile", "local"]
        second = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert second.returncode == 1, second.stderr
        assert f"in use by another dvms node (pid {first.pid})" in second.stderr
        assert "Traceback" not in second.stderr
        assert call(sock(tmp_path, "solo"), "status")["joined"] is True
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=10)
