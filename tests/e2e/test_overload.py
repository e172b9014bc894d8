"""End to end on `dvms cluster up --nodes 3`: an overload set with `dvms debug load` (the
synthetic CPU load of test hosts) is relieved by a DVMS partition's migration, and no
constraint is broken on the way.

The hot VMs are pinned to node1 (`schedule`) in two submits: a launch counts a new VM's
demand as its vCPUs, so one launch never puts more vCPUs than CPUs on a host; the second
one sees the first's VMs at their measured demand (0 on a test host). node1 then holds
12 vCPUs on 8 CPUs, and 3 CPUs of synthetic load on each hot VM (9 > 8) overload it.
`lone1` (coschedule 0) must stay alone on its host, so the only valid destination of a
hot VM is the third host: a relief that ignored coschedule would pick lone1's host half
of the time."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from tests.e2e.test_e2e_cluster import dvms, dvms_json

pytest.importorskip("libvirt", reason="libvirt-python not installed (needs libvirt-dev)")

BASE = """
name = "base"

[[vms]]
name = "hot[1-2]"
vcpus = 4
memory = 1024
schedule = "node1"

[[vms]]
name = "lone1"
memory = 512
coschedule = 0
"""

#: Launched second: node1's hot VMs now count at their measured demand (0), so hot3 and
#: one db fit there; lone1 keeps its host to itself.
MORE = """
name = "more"

[[vms]]
name = "hot3"
vcpus = 4
memory = 1024
schedule = "node1"

[[vms]]
name = "db[1-2]"
memory = 512

[[constraints]]
kind = "spread"
vms = "db[1-2]"
"""

#: Synthetic load per hot VM, CPUs (three of them on node1's 8 CPUs: 9 > 8).
LOAD = 3.0
#: How long the relief may take: the overload check runs every second, then a partition
#: of two or three nodes forms, solves and migrates (seconds on a loaded 2-core machine).
RELIEF_TIMEOUT_S = 25.0


@pytest.fixture
def cluster(tmp_path):
    d = tmp_path / "c"
    rows = dvms_json("cluster", "up", "--nodes", "3", "--dir", str(d))["nodes"]
    try:
        yield d, {r["name"]: r["socket"] for r in rows}
    finally:
        if (d / "cluster.json").exists():
            dvms("cluster", "down", "--dir", str(d), check=False)


def check_constraints(vms: list[dict]) -> None:
    host = {v["name"]: v["host"] for v in vms}
    assert sorted(host) == ["db1", "db2", "hot1", "hot2", "hot3", "lone1"], vms
    assert {v["state"] for v in vms} == {"RUNNING"}, vms
    assert host["db1"] != host["db2"], f"spread broken: {host}"
    per_host = Counter(host.values())
    assert per_host[host["lone1"]] == 1, f"coschedule 0 broken: {host}"


def loads(d) -> dict[str, dict]:
    return {h["host"]: h for h in dvms_json("debug", "loads", "--dir", str(d))["hosts"]}


def test_synthetic_overload_is_relieved_by_a_migration(cluster, tmp_path):
    d, socks = cluster
    for name, text, entry in (("base", BASE, "node2"), ("more", MORE, "node3")):
        job = tmp_path / f"{name}.toml"
        job.write_text(text)
        result = dvms_json("submit", str(job), sock=socks[entry])
        assert result["ok"], result
    before = dvms_json("vm", "info", "--all", sock=socks["node2"])["vms"]
    check_constraints(before)
    assert {v["name"] for v in before if v["host"] == "node1"} >= {"hot1", "hot2", "hot3"}
    assert not any(h["overloaded"] for h in loads(d).values())

    # bad input: a clear error naming the problem, nothing changed
    out = dvms("debug", "load", "hot1", str(LOAD), sock=socks["node2"], check=False)
    assert out.returncode == 1 and "does not run on node2" in out.stderr, out.stderr
    out = dvms("debug", "load", "--dir", str(d), "hot1", "4.5", check=False)
    assert out.returncode == 1 and "has 4 vCPUs" in out.stderr, out.stderr
    out = dvms("debug", "load", "--dir", str(d), "hot1", "lots", check=False)
    assert out.returncode == 1 and "CPUS must be a number" in out.stderr, out.stderr
    out = dvms("debug", "load", "--dir", str(d), "nosuchvm", "1", check=False)
    assert out.returncode == 1 and "no vm nosuchvm" in out.stderr, out.stderr
    assert all(h["vms"] == [] and h["demand"] == 0 for h in loads(d).values())

    for vm in ("hot1", "hot2", "hot3"):
        dvms("debug", "load", "--dir", str(d), vm, str(LOAD))
    # node1 may already be relieving itself: it was overloaded at once, or has moved on
    deadline = time.monotonic() + RELIEF_TIMEOUT_S
    while True:
        after = dvms_json("vm", "info", "--all", sock=socks["node3"])["vms"]
        hosts = loads(d)
        moved = [v for v in after if v["name"].startswith("hot") and v["host"] != "node1"]
        if moved and not any(h["overloaded"] for h in hosts.values()):
            break
        assert time.monotonic() < deadline, f"not relieved: {after} {hosts}"
        time.sleep(0.5)

    check_constraints(after)
    host = {v["name"]: v["host"] for v in after}
    # one hot VM left node1 for the only host where coschedule allows it; its load went
    # with it (set on every node), and no host is above its CPUs
    assert len(moved) == 1, after
    assert moved[0]["host"] not in ("node1", host["lone1"]), after
    assert hosts["node1"]["demand"] == 2 * LOAD
    assert hosts[moved[0]["host"]]["demand"] == LOAD
    assert all(h["demand"] <= h["capacity"] for h in hosts.values()), hosts

    # the partition that did it, as every node saw it
    parts = dvms_json("partitions", "--all", sock=socks["node2"])["partitions"]
    relief = [p for p in parts if any(e.startswith("overload:") for e in p["events"])]
    solved = [p for p in relief if p["outcome"] == "solved" and p["migrations"] >= 1]
    assert solved, parts
    assert solved[0]["leader"] in solved[0]["members"] and "node1" in solved[0]["members"]
