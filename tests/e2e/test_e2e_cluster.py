"""End to end on real processes: `dvms cluster up --nodes 3`, a vjob submitted to node2,
`vm info` and `vm kill` from other nodes, `partitions`, `cluster down`; and a node killed
with SIGKILL does not break `vm info` on the others."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

pytest.importorskip("libvirt", reason="libvirt-python not installed (needs libvirt-dev)")

VJOB = """
name = "shop"
namespace = "shop"

[[vms]]
name = "vm[1-4]"
vcpus = 2
memory = 1024
coschedule = 2

[[vms]]
name = "db[1-3]"
memory = 2048

[[constraints]]
kind = "spread"
vms = "db[1-3]"
"""

#: no coschedule limits: the two survivors of a crash have room for more
SPREAD = """
name = "spread"

[[vms]]
name = "db[1-3]"

[[constraints]]
kind = "spread"
vms = "db[1-3]"
"""

#: spread of four VMs over three hosts: no placement exists
IMPOSSIBLE = """
name = "toomany"

[[vms]]
name = "x[1-4]"

[[constraints]]
kind = "spread"
vms = "x[1-4]"
"""


def dvms(*args: str, sock: str | None = None, check: bool = True, timeout: float = 60):
    cmd = [sys.executable, "-m", "dvms"]
    if sock:
        cmd += ["--socket", sock]
    out = subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=timeout)
    if check and out.returncode != 0:
        raise AssertionError(f"dvms {' '.join(args)} -> {out.returncode}: {out.stderr}")
    return out


def dvms_json(*args: str, sock: str | None = None):
    return json.loads(dvms("--json", *args, sock=sock).stdout)


def pid_alive(pid: int) -> bool:
    try:
        return bool(Path(f"/proc/{pid}/cmdline").read_bytes())  # empty for a zombie
    except OSError:
        return False


@pytest.fixture
def cluster(tmp_path):
    d = tmp_path / "c"
    rows = dvms_json("cluster", "up", "--nodes", "3", "--dir", str(d))["nodes"]
    socks = {r["name"]: r["socket"] for r in rows}
    try:
        yield d, socks, rows
    finally:
        if (d / "cluster.json").exists():
            dvms("cluster", "down", "--dir", str(d), check=False)


def check_constraints(vms: list[dict]) -> None:
    hosts = {v["name"]: v["host"] for v in vms}
    dbs = [hosts[n] for n in hosts if n.startswith("db")]
    assert len(set(dbs)) == len(dbs), f"spread broken: {hosts}"
    per_host = Counter(hosts.values())
    for name, host in hosts.items():
        if name.startswith("vm"):  # coschedule 2: at most two other VMs on its host
            assert per_host[host] - 1 <= 2, f"coschedule broken for {name}: {hosts}"


def test_submit_info_kill_partitions_down(cluster, tmp_path):
    d, socks, rows = cluster
    assert [r["name"] for r in rows] == ["node1", "node2", "node3"]
    status = dvms_json("cluster", "status", "--dir", str(d))["nodes"]
    assert [s["state"] for s in status] == ["up"] * 3
    assert all(s["peers"] == 2 for s in status)

    job = tmp_path / "shop.toml"
    job.write_text(VJOB)
    result = dvms_json("submit", str(job), sock=socks["node2"])
    assert result["ok"], result
    placed = {p["name"]: p["host"] for p in result["placed"]}
    assert set(placed) == {"vm1", "vm2", "vm3", "vm4", "db1", "db2", "db3"}
    assert set(placed.values()) <= {"node1", "node2", "node3"}

    # node3 lists every VM, on the host the partition chose, constraints satisfied
    info = dvms_json("vm", "info", "--all", sock=socks["node3"])
    assert info["unreachable"] == []
    assert {v["name"]: v["host"] for v in info["vms"]} == placed
    assert {(v["state"], v["namespace"]) for v in info["vms"]} == {("RUNNING", "shop")}
    check_constraints(info["vms"])

    # a refused vjob: exit 1 with the reason, nothing created
    bad = tmp_path / "bad.toml"
    bad.write_text(IMPOSSIBLE)
    out = dvms("submit", str(bad), sock=socks["node1"], check=False)
    assert out.returncode == 1 and "refused" in out.stderr, out.stderr
    assert len(dvms_json("vm", "info", "--all", sock=socks["node1"])["vms"]) == 7

    # kill vm1 and vm2 from a node hosting neither
    outsider = sorted({"node1", "node2", "node3"} - {placed["vm1"], placed["vm2"]})[0]
    killed = dvms_json("vm", "kill", "--all", "vm[1-2]", sock=socks[outsider])
    assert sorted((k["name"], k["host"]) for k in killed["killed"]) == [
        ("vm1", placed["vm1"]),
        ("vm2", placed["vm2"]),
    ]
    assert killed["not_found"] == []
    left = dvms_json("vm", "info", "--all", sock=socks["node1"])["vms"]
    assert sorted(v["name"] for v in left) == ["db1", "db2", "db3", "vm3", "vm4"]
    out = dvms("vm", "kill", "--all", "vm1", sock=socks["node1"], check=False)
    assert out.returncode == 1 and "vm not found: vm1" in out.stderr

    # the launch partition, as the entry node saw it
    parts = dvms_json("partitions", sock=socks["node2"])["partitions"]
    launch = [p for p in parts if f"launch:{result['event_id']}" in p["events"]]
    assert len(launch) == 1, parts
    assert launch[0]["state"] == "ended" and launch[0]["outcome"] == "solved", launch
    assert "node2" in launch[0]["members"]
    everyone = dvms_json("partitions", "--all", sock=socks["node1"])["partitions"]
    merged = [p for p in everyone if p["pid"] == launch[0]["pid"]]
    assert [(p["outcome"], p["actions"]) for p in merged] == [("solved", 7)]  # 7 creations
    # the refused vjob's partitions ended too (two laps, then dissolved)
    assert all(p["state"] == "ended" for p in everyone), everyone

    # rtt by host name
    rtt = dvms_json("rtt", "node3", sock=socks["node1"])
    assert rtt["host"] == "node3" and rtt["measured_ms"] is not None

    pids = [r["pid"] for r in rows]
    down = dvms("cluster", "down", "--dir", str(d)).stdout
    assert not any(pid_alive(p) for p in pids)
    # only the node logs stay, and the command says where
    assert f"node logs kept in {d / 'logs'}/" in down
    assert sorted(p.name for p in d.iterdir()) == ["logs"]
    assert sorted(p.name for p in (d / "logs").iterdir()) == [f"node{i}.log" for i in (1, 2, 3)]
    out = dvms("cluster", "status", "--dir", str(d), check=False)
    assert out.returncode == 1 and "no cluster" in out.stderr


def test_kill9_of_a_node_leaves_vm_info_working(cluster, tmp_path):
    d, socks, rows = cluster
    job = tmp_path / "spread.toml"
    job.write_text(SPREAD)
    placed = {
        p["name"]: p["host"] for p in dvms_json("submit", str(job), sock=socks["node1"])["placed"]
    }
    os.kill(rows[2]["pid"], signal.SIGKILL)  # node3: not the entry node
    t0 = time.monotonic()
    for name in ("node1", "node2"):
        info = dvms_json("vm", "info", "--all", sock=socks[name])
        assert info["unreachable"] == ["node3"]
        expected = {n: h for n, h in placed.items() if h != "node3"}
        assert {v["name"]: v["host"] for v in info["vms"]} == expected
    assert time.monotonic() - t0 < 30
    out = dvms("--json", "cluster", "status", "--dir", str(d), check=False)
    assert out.returncode == 1  # not every node is up
    status = {s["name"]: s["state"] for s in json.loads(out.stdout)["nodes"]}
    assert status == {"node1": "up", "node2": "up", "node3": "dead"}
    # the survivors still place a new vjob between them
    small = tmp_path / "small.toml"
    small.write_text('name = "s"\n[[vms]]\nname = "s[1-2]"\n')
    result = dvms_json("submit", str(small), sock=socks["node2"])
    assert result["ok"] and {p["host"] for p in result["placed"]} <= {"node1", "node2"}


def test_minimega_vm_launch_goes_through_a_partition(cluster):
    socks = cluster[1]
    node2 = socks["node2"]
    assert dvms("ns", "hosts", sock=node2).stdout.strip() == "node[1-3]"
    dvms("vm", "config", "coschedule", "0", sock=node2)
    dvms("vm", "launch", "kvm", "a[1-3]", sock=node2)
    info = dvms_json("vm", "info", "--all", sock=socks["node3"])["vms"]
    assert sorted((v["name"], v["namespace"]) for v in info) == [
        ("a1", "minimega"),
        ("a2", "minimega"),
        ("a3", "minimega"),
    ]
    assert len({v["host"] for v in info}) == 3  # coschedule 0: one VM per host
    # no room left under coschedule 0: refused with the interpreter's text, nothing created
    out = dvms("vm", "launch", "kvm", "a4", sock=node2, check=False)
    assert out.returncode == 1 and out.stdout.startswith("E: "), out.stdout
    assert len(dvms_json("vm", "info", "--all", sock=socks["node1"])["vms"]) == 3
    status = dvms("ns", "schedule", "status", sock=node2).stdout
    assert "completed" in status
