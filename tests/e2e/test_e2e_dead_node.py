"""A node killed with SIGKILL is reported as not answering, not as unknown: ``rtt`` to
it and ``vm migrate`` onto it say the host did not answer; a name no node ever had is
still ``no such host``, listing the hosts there are."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest

from dvms.runtime.client import ControlError, call
from tests.e2e.test_e2e_cluster import dvms, dvms_json, pid_alive

pytest.importorskip("libvirt", reason="libvirt-python not installed (needs libvirt-dev)")


@pytest.fixture
def cluster(tmp_path):
    d = tmp_path / "c"
    dvms_json("cluster", "up", "--nodes", "3", "--dir", str(d), "--timeout", "90")
    yield d
    dvms("cluster", "down", "--dir", str(d), check=False)


def test_a_dead_node_is_reported_as_not_answering(cluster):
    rows = {r["name"]: r for r in json.loads((cluster / "cluster.json").read_text())}
    one, two = rows["node1"]["socket"], rows["node2"]["socket"]
    assert call(one, "ns", {"words": ["namespace", "d", "vm", "config", "schedule", "node1"]})["ok"]
    assert call(one, "ns", {"words": ["namespace", "d", "vm", "launch", "kvm", "a"]})["ok"]
    pid = rows["node3"]["pid"]
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    for _ in range(2):  # right away (still in the routing table), and once dropped from it
        out = dvms("rtt", "node3", sock=two, check=False)
        assert out.returncode == 1 and "node3" in out.stderr and "did not answer" in out.stderr
        assert "no such host" not in out.stderr
        moved = call(one, "ns", {"words": ["namespace", "d", "vm", "migrate", "a", "node3"]})
        assert not moved["ok"] and "host node3 is unreachable" in moved["error"], moved
        time.sleep(6)
    unknown = dvms("rtt", "nosuch", sock=two, check=False)
    assert unknown.returncode == 1 and "no such host: nosuch (hosts: node1, node2" in unknown.stderr


@pytest.fixture
def roomy(tmp_path):
    """Three nodes whose test hosts take hundreds of VMs (a launch of 600 lasts ~10 s)."""
    d = tmp_path / "c"
    dvms_json(
        "cluster", "up", "--nodes", "3", "--dir", str(d), "--timeout", "90", "--host-cpus", "400"
    )
    yield d
    dvms("cluster", "down", "--dir", str(d), check=False)


def test_a_launcher_killed_mid_launch_does_not_block_clear_namespace(roomy):
    """The node carrying out ``vm launch`` dies half-way: its ``ns schedule status`` row
    said ``running`` for ever and ``clear namespace`` refused on every node ("scheduler
    still running for namespace"). Once the overlay drops the dead launcher, the row is
    closed as interrupted and the namespace can be cleared."""
    rows = {r["name"]: r for r in json.loads((roomy / "cluster.json").read_text())}
    one, two = rows["node1"]["socket"], rows["node2"]["socket"]
    assert call(one, "ns", {"words": ["namespace", "big", "vm", "config", "memory", "16"]})["ok"]
    errors: list[str] = []

    def launch() -> None:
        try:
            call(
                one,
                "ns",
                {"words": ["namespace", "big", "vm", "launch", "kvm", "600"]},
                timeout=300,
            )
        except ControlError as exc:  # the launcher is killed under it
            errors.append(str(exc))

    worker = threading.Thread(target=launch, daemon=True)
    worker.start()
    clear = {"words": ["namespace", "big", "clear", "namespace", "big"]}
    deadline = time.monotonic() + 60
    while True:  # the status row is written before the first VM is created
        status = call(two, "ns", {"words": ["namespace", "big", "ns", "schedule", "status"]})
        if status["ok"] and "running" in status["text"]:
            break
        assert time.monotonic() < deadline, status
        time.sleep(0.05)
    refused = call(two, "ns", clear)
    assert not refused["ok"] and refused["error"] == "scheduler still running for namespace"
    pid = rows["node1"]["pid"]
    os.kill(pid, signal.SIGKILL)
    worker.join(timeout=30)
    t0 = time.monotonic()
    while not (out := call(two, "ns", clear))["ok"]:
        assert out["error"] == "scheduler still running for namespace", out
        assert time.monotonic() - t0 < 30, "the dead launcher's row was never closed"
        time.sleep(0.5)
    assert errors, "the launch finished before its launcher was killed: nothing was tested"
    assert "big" not in call(two, "ns", {"words": ["namespace"]})["text"]
