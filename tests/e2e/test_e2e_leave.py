"""Real daemons on loopback: overlay RPCs are counted by request type and result, and
a node that stops cleanly is shown ``left`` by the others, one killed with SIGKILL
``failed``.

`dvms cluster up --nodes 5` (metrics on); after a `dvms members` (a crawl) node1's
/metrics, parsed with prometheus_client's parser, counts its pings and FindNodes as
``ok`` with their latency, and every (type, result) pair is there; then node5 runs
`dvms node leave`, node4 gets SIGTERM, node3 SIGKILL: within a few seconds `dvms members`
on node1 shows node4 and node5 ``left`` and node3 ``failed`` (node2 too), node1 took
both leaves, its event stream says node4 stopped cleanly, and `vm info --all` names
only node3 unreachable."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from tests.e2e.test_e2e_cluster import dvms, dvms_json, pid_alive
from tests.e2e.test_observability import scrape, total

pytest.importorskip("libvirt", reason="libvirt-python not installed (needs libvirt-dev)")

TYPES = {"ping", "find_node", "find_value", "store", "leave"}


@pytest.fixture
def cluster(tmp_path):
    d = tmp_path / "c"
    rows = dvms_json("cluster", "up", "--nodes", "5", "--dir", str(d), "--timeout", "90")["nodes"]
    try:
        yield {r["name"]: r for r in rows}
    finally:
        dvms("cluster", "down", "--dir", str(d), check=False)


def _states(sock: str) -> dict[str, str]:
    return {m["name"]: m["state"] for m in dvms_json("members", sock=sock)["members"]}


def _wait_gone(pid: int, within_s: float) -> None:
    deadline = time.monotonic() + within_s
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(pid), f"pid {pid} still running after {within_s} s"


def test_rpcs_by_type_and_a_clean_stop_is_left_a_crash_failed(cluster):
    one = cluster["node1"]
    # node1 started first (no join lookup of its own); `members` crawls: FindNodes
    assert _states(one["socket"]) == dict.fromkeys(cluster, "alive")
    samples = scrape(one["metrics"])
    rpcs = samples["dvms_overlay_rpcs_total"]
    assert {dict(k)["type"] for k in rpcs} == TYPES
    assert {dict(k)["result"] for k in rpcs} == {"ok", "error", "timeout"}
    assert len(rpcs) == len(TYPES) * 3
    assert total(samples, "dvms_overlay_rpcs_total", type="ping", result="ok") >= 1
    assert total(samples, "dvms_overlay_rpcs_total", type="find_node", result="ok") >= 1
    answered = total(samples, "dvms_overlay_rpcs_total", type="find_node", result="ok")
    answered += total(samples, "dvms_overlay_rpcs_total", type="find_node", result="error")
    assert total(samples, "dvms_overlay_rpc_duration_seconds_count", type="find_node") == answered
    inf = samples["dvms_overlay_rpc_duration_seconds_bucket"]
    assert inf[(("le", "+Inf"), ("type", "find_node"))] == answered
    assert total(samples, "dvms_overlay_rpc_duration_seconds_sum", type="find_node") > 0
    assert set(samples["dvms_overlay_rpc_retransmits_total"]) == {(("type", t),) for t in TYPES}

    # node5: `dvms node leave`; node4: SIGTERM; node3: SIGKILL
    out = dvms_json("node", "leave", sock=cluster["node5"]["socket"])
    assert out == {"name": "node5", "stopped": True}
    _wait_gone(cluster["node5"]["pid"], 30)
    os.kill(cluster["node4"]["pid"], signal.SIGTERM)
    _wait_gone(cluster["node4"]["pid"], 30)
    os.kill(cluster["node3"]["pid"], signal.SIGKILL)
    _wait_gone(cluster["node3"]["pid"], 10)
    want = {"node1": "alive", "node2": "alive", "node3": "failed", "node4": "left", "node5": "left"}
    deadline = time.monotonic() + 15
    while (states := _states(one["socket"])) != want and time.monotonic() < deadline:
        time.sleep(0.5)
    assert states == want
    assert _states(cluster["node2"]["socket"]) == want
    assert dvms_json("status", sock=one["socket"])["stats"]["peer_left"] == 2
    table = dvms("members", sock=one["socket"]).stdout
    assert "2 alive, 2 left, 1 failed" in table
    events = json.dumps(dvms_json("events", sock=one["socket"]))
    assert "node4 left this node's routing table (it stopped cleanly)" in events
    # cluster-wide answers name the crashed node unreachable, not those that left
    unreachable = dvms_json("vm", "info", "--all", sock=one["socket"])["unreachable"]
    assert unreachable == ["node3"], unreachable
