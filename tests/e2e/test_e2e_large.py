"""Cluster-wide views on a cluster larger than any routing table: 24 daemons with the
overlay's bucket size k = 4 (`dvms cluster up --overlay-k 4`), so every node's table
holds only part of the cluster, as on a cluster of thousands with k = 20.

`host`, `vm info --all`, `vjob list` and `members` from every node see every node, VM
and vjob (the nodes are found by a crawl of the overlay); a node killed with SIGKILL is
named: `unreachable` in the views, `failed` in `members`. About 40 s on 2 cores.

Large namespaces on 3 daemons: one `vm launch` of 400 VMs (launched 100 per partition
event; as one event its messages did not fit a datagram), shown from another node and
cleared; a vjob's `colocate` inside a namespace, with a VM of the same vjob and with one
an earlier vjob placed. About 40 s."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from dvms.runtime.client import call
from tests.e2e.test_e2e_cluster import dvms, dvms_json, pid_alive

pytest.importorskip("libvirt", reason="libvirt-python not installed (needs libvirt-dev)")

NODES = 24
#: the vjobs' entry nodes: one per quarter of the cluster
ENTRIES = ("node2", "node8", "node14", "node20")

JOB = """
name = "{name}"
namespace = "{name}"

[[vms]]
name = "v[1-3]"
memory = 256

[[constraints]]
kind = "spread"
vms = "v[1-3]"
"""


@pytest.fixture
def large(tmp_path_factory):
    """24 daemons, down again before the next test (they load the machine)."""
    d = tmp_path_factory.mktemp("large") / "c"
    up = ("cluster", "up", "--nodes", str(NODES), "--overlay-k", "4", "--dir", str(d))
    rows = dvms_json(*up, "--timeout", "120")["nodes"]
    try:
        yield d, {r["name"]: r for r in rows}
    finally:
        dvms("cluster", "down", "--dir", str(d), check=False)


def test_every_view_is_complete_from_every_node_then_names_a_dead_node(large, tmp_path):
    _, nodes = large
    socks = {name: r["socket"] for name, r in nodes.items()}
    tables = {name: call(s, "peers") for name, s in socks.items()}
    # no routing table holds every node: asking one's table would miss some
    assert max(len(t) for t in tables.values()) < NODES - 1, [len(t) for t in tables.values()]

    for name in ENTRIES:
        job = tmp_path / f"{name}.toml"
        job.write_text(JOB.format(name=f"j{name}"))
        assert dvms_json("submit", str(job), sock=socks[name])["ok"]
    want_vms = {(f"j{e}", f"v{i}") for e in ENTRIES for i in (1, 2, 3)}
    want_jobs = {f"j{e}" for e in ENTRIES}
    hosts_of_vms = set()
    outside = 0
    for name, sock in socks.items():
        assert len(call(sock, "host")["hosts"]) == NODES, name
        info = call(sock, "vm_info", {"namespace": None})
        assert {(v["namespace"], v["name"]) for v in info["vms"]} == want_vms, name
        assert info["unreachable"] == []
        hosts_of_vms |= {v["host"] for v in info["vms"]}
        table = {p["name"] for p in tables[name]} | {name}
        outside += bool({v["host"] for v in info["vms"]} - table)
        listed = call(sock, "vjob_list")
        assert {v["name"] for v in listed["vjobs"]} == want_jobs, name
        assert listed["unreachable"] == []
    # the VMs are spread over many hosts, most of them outside some node's table
    assert len(hosts_of_vms) >= 6 and outside > 0

    # the CLI's views, from one node
    members = dvms_json("members", sock=socks["node5"])["members"]
    assert [m["name"] for m in members] == [f"node{i}" for i in range(1, NODES + 1)]
    assert {m["state"] for m in members} == {"alive"}
    assert all(m["rtt_ms"] is not None for m in members if m["name"] != "node5")

    # a node hosting VMs dies: every view names it
    victim = sorted(hosts_of_vms - {"node1", "node5", "node12"})[0]
    os.kill(nodes[victim]["pid"], signal.SIGKILL)
    while pid_alive(nodes[victim]["pid"]):
        time.sleep(0.05)
    t0 = time.monotonic()
    info = call(socks["node5"], "vm_info", {"namespace": None}, timeout=30)
    took = time.monotonic() - t0
    assert info["unreachable"] == [victim], info["unreachable"]
    assert not any(v["host"] == victim for v in info["vms"])
    assert took < 10, took
    out = dvms("vm", "info", "--all", sock=socks["node1"]).stdout
    assert f"(no answer from: {victim})" in out
    out = dvms("vjob", "list", sock=socks["node12"]).stdout
    assert f"(no answer from: {victim})" in out
    members = json.loads(dvms("--json", "members", sock=socks["node5"]).stdout)["members"]
    states = {m["name"]: m["state"] for m in members}
    assert states.pop(victim) == "failed"
    assert set(states.values()) == {"alive"} and len(states) == NODES - 1


@pytest.fixture(scope="module")
def three_big(tmp_path_factory):
    d = tmp_path_factory.mktemp("threebig") / "c"
    up = ("cluster", "up", "--nodes", "3", "--dir", str(d), "--host-cpus", "1024")
    rows = dvms_json(*up, "--host-memory", "1000000", "--timeout", "90")["nodes"]
    try:
        yield {r["name"]: r["socket"] for r in rows}
    finally:
        dvms("cluster", "down", "--dir", str(d), check=False)


def ns(sock: str, line: str) -> dict:
    """One minimega command line in namespace ``big`` (the client keeps the namespace)."""
    return call(sock, "ns", {"words": line.split(), "namespace": "big"}, timeout=300)


def test_a_launch_of_400_vms_in_a_namespace_shows_everywhere_and_clears(three_big):
    socks = three_big
    assert ns(socks["node1"], "vm config memory 1")["ok"]
    out = ns(socks["node1"], "vm launch kvm 400")
    assert out["ok"], out["text"][-500:]
    text = ns(socks["node2"], ".columns name,state,host vm info")["text"]
    assert text.count("BUILDING") == 400, text[-500:]
    hosts = call(socks["node3"], "host")["hosts"]
    assert sum(h["vms"] for h in hosts) == 400 and all(h["vms"] > 100 for h in hosts)
    out = ns(socks["node3"], "clear namespace big")
    assert out["ok"], out["text"][-500:]
    assert sum(h["vms"] for h in call(socks["node1"], "host")["hosts"]) == 0


COLOCATE = """
name = "{name}"
namespace = "q"

[[vms]]
name = "{db}"
memory = 256

[[vms]]
name = "{web}"
memory = 128
colocate = "{target}"
"""


def test_colocate_in_a_vjob_of_a_namespace(three_big, tmp_path):
    socks = three_big
    first = tmp_path / "first.toml"
    first.write_text(COLOCATE.format(name="first", db="db1", web="web[1-3]", target="db1"))
    res = dvms_json("submit", str(first), sock=socks["node2"])
    assert res["ok"], res
    where = {p["name"]: p["host"] for p in res["placed"]}
    assert {where[f"web{i}"] for i in (1, 2, 3)} == {where["db1"]}
    # colocate with a VM an earlier vjob placed in the namespace
    second = tmp_path / "second.toml"
    second.write_text(COLOCATE.format(name="second", db="db2", web="app[1-2]", target="db1"))
    res = dvms_json("submit", str(second), sock=socks["node3"])
    assert res["ok"], res
    placed = {p["name"]: p["host"] for p in res["placed"]}
    assert placed["app1"] == placed["app2"] == where["db1"]
    info = call(socks["node1"], "vm_info", {"namespace": "q"})["vms"]
    assert len(info) == 7 and all(v["namespace"] == "q" for v in info)
