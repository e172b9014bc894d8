"""High availability on real daemons (loopback, test:/// hosts inside each daemon, so a
host's guests die with its daemon): a vjob of 20 HA VMs over 6 nodes survives a node
frozen by SIGSTOP and a node killed with SIGKILL, and no VM ever runs on two hosts.

The leases are short here ([ha] below: a 4 s lease renewed every 0.5 s instead of
10 s / 2 s), so a test takes seconds, not minutes. The fencing margin is kept at 1.5 s,
not scaled down: an owner fences on its own timer, and a daemon starved of CPU on a
loaded test machine runs that timer late (with 0.5 s, copies of two generations were
seen at once under a load average of 20 on 2 cores; that lag is what a host's watchdog
covers, and test hosts have none). The frozen node stays stopped until every one of its VMs runs
elsewhere (about two leases on a quiet machine), at most ``STOP_S`` = 30 s, then wakes.

"Runs" is read from each host's hypervisor (``debug_domains``), not from dvms' records.
A stopped daemon cannot answer, and its in-process test host runs nothing while the
process is stopped: its domains are read again once it wakes."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from dvms.runtime.client import ControlError, call
from dvms.runtime.localcluster import cluster_down, cluster_up
from tests.e2e.test_e2e_cluster import dvms, pid_alive

pytest.importorskip("libvirt", reason="libvirt-python not installed (needs libvirt-dev)")

HA_TOML = """[ha]
renew_period_s = 0.5
lease_s = 4.0
fence_margin_s = 1.5
propose_stagger_s = 0.3
propose_retry_s = 0.5
batch_window_s = 0.2
replace_after_s = 2.0
promise_s = 20.0
"""
VMS = [f"ha{i}" for i in range(1, 21)]
#: three VMs that must stay on three different hosts, through every restart
SPREAD = ["ha1", "ha2", "ha3"]
VJOB = f"""name = "hajob"
[[vms]]
name = "ha[1-20]"
memory = 256
ha = "restart"
[[constraints]]
kind = "spread"
vms = "{",".join(SPREAD)}"
"""
STOP_S = 30.0
#: ``renew_period_s`` of HA_TOML
RENEW_S = 0.5
SAMPLE_S = 0.5


@pytest.fixture(scope="module")
def ha_cluster(tmp_path_factory):
    d = tmp_path_factory.mktemp("ha")
    (d / "ha.toml").write_text(HA_TOML)
    rows = cluster_up(d / "c", 6, config_file=str(d / "ha.toml"), metrics=False)
    nodes = {r["name"]: (r["socket"], r["pid"]) for r in rows}
    try:
        (d / "job.toml").write_text(VJOB)
        dvms("submit", str(d / "job.toml"), sock=nodes["node1"][0], timeout=120)
        _wait_adopted(nodes["node1"][0])
        yield nodes
    finally:
        cluster_down(d / "c")


def _wait_adopted(sock: str, timeout: float = 30.0) -> None:
    """Every VM's owner has adopted it (``ha`` = ok), then two renewal rounds, so its
    guardians hold its record: a node frozen before that has nothing to be restarted
    from (its VMs' guardians never heard of them), which is not what is tested here."""
    t0 = time.monotonic()
    rows: list[dict] = []
    while time.monotonic() - t0 < timeout:
        rows = call(sock, "vm_info", {}, timeout=30)["vms"]
        if sorted(r["name"] for r in rows if r["ha"] == "ok") == sorted(VMS):
            time.sleep(2 * RENEW_S)
            return
        time.sleep(SAMPLE_S)
    raise AssertionError(f"not every VM adopted in {timeout} s: {rows}")


def _domains(sock: str, timeout: float = 2.0) -> list[dict] | None:
    try:
        return call(sock, "debug_domains", {}, timeout=timeout)["domains"]
    except (ControlError, OSError, TimeoutError):
        return None


def _running(nodes: dict, skip: set[str]) -> dict[str, list[str]]:
    """VM -> the hosts whose hypervisor runs it now (every node but ``skip``), each as
    ``host/gGENERATION`` (a double run says whether the copies are of one generation)."""
    where: dict[str, list[str]] = {}
    for name, (sock, _pid) in nodes.items():
        if name in skip:
            continue
        for d in _domains(sock) or []:
            if d["state"] == "running":
                vm = d["name"].rpartition(":")[2]
                where.setdefault(vm, []).append(f"{name}/g{d['generation']}")
    return where


def _twice(where: dict[str, list[str]]) -> dict[str, list[str]]:
    return {vm: hosts for vm, hosts in where.items() if len(hosts) > 1}


def _hosts_of(sock: str) -> dict[str, str]:
    return {v["name"]: v["host"] for v in call(sock, "vm_info", {}, timeout=30)["vms"]}


def _busiest(nodes: dict, avoid: set[str]) -> str:
    where = _running(nodes, avoid)
    hosts = [h.partition("/")[0] for hs in where.values() for h in hs]
    count = {n: hosts.count(n) for n in nodes if n not in avoid}
    return max(sorted(count), key=lambda n: count[n])


def test_a_frozen_node_is_replaced_and_fences_its_copies_when_it_wakes(ha_cluster):
    nodes = ha_cluster
    where = _running(nodes, set())
    assert sorted(where) == sorted(VMS) and not _twice(where), where
    victim = _busiest(nodes, {"node1"})
    sock, pid = nodes[victim]
    mine = sorted(vm for vm, hs in where.items() if any(h.startswith(f"{victim}/") for h in hs))
    assert mine, where
    os.kill(pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        seen = _running(nodes, {victim})
        while time.monotonic() - t0 < STOP_S and sorted(seen) != sorted(VMS):
            time.sleep(SAMPLE_S)
            seen = _running(nodes, {victim})
            assert not _twice(seen), f"run twice at {time.monotonic() - t0:.1f} s: {seen}"
        assert sorted(seen) == sorted(VMS), f"not restarted in {STOP_S} s: {seen}"
    finally:
        os.kill(pid, signal.SIGCONT)
    woke = time.monotonic()
    while True:
        doms = _domains(sock, timeout=5.0)
        if doms is not None:
            break
    took = time.monotonic() - woke
    left = [d["name"] for d in doms if d["state"] == "running"]
    assert not left and took <= 1.0, f"{victim} after {took:.2f} s still runs {left}"
    seen = _running(nodes, set())
    assert sorted(seen) == sorted(VMS) and not _twice(seen), seen
    gens = {v["name"]: v["generation"] for v in call(sock, "vm_info", {})["vms"]}
    assert all(gens[vm] >= 2 for vm in mine), gens


def test_the_vms_of_a_killed_node_run_again_on_exactly_one_live_node(ha_cluster):
    nodes = ha_cluster
    victim = _busiest(nodes, {"node1"})
    pid = nodes[victim][1]
    before = _hosts_of(nodes["node1"][0])
    lost = sorted(vm for vm, h in before.items() if h == victim)
    assert lost, before
    os.kill(pid, signal.SIGKILL)
    t0 = time.monotonic()
    while pid_alive(pid) and time.monotonic() - t0 < 5:
        time.sleep(0.05)
    live = {n: v for n, v in nodes.items() if n != victim}
    ok, seen = False, {}
    restarting: set[str] = set()  # listed by their guardians while no host runs them
    while time.monotonic() - t0 < 20.0 and not ok:
        time.sleep(SAMPLE_S)
        seen = _running(live, set())
        assert not _twice(seen), seen
        rows = call(nodes["node1"][0], "vm_info", {}, timeout=30)["vms"]
        # a guardian lists a restart without a host until a host runs the new copy (on
        # the guardian's own host, that copy reads "restarting" until it is adopted)
        listed = [r for r in rows if r["ha"] == "restarting"]
        assert all(r["name"] in lost for r in listed), (lost, listed)
        assert all(r["host"] or r["state"] == "RESTARTING" for r in listed), listed
        restarting |= {r["name"] for r in listed}
        running = [r for r in rows if r["state"] == "RUNNING"]
        hosts = {r["name"]: r["host"] for r in running}
        ok = (
            sorted(hosts) == sorted(VMS)
            and len(running) == len(VMS)
            and victim not in hosts.values()
            and sorted(seen) == sorted(VMS)
        )
    took = time.monotonic() - t0
    assert ok, f"after {took:.1f} s: {hosts} / hypervisors: {seen}"
    assert sorted(seen) == sorted(VMS), seen
    assert len({hosts[vm] for vm in SPREAD}) == len(SPREAD), {vm: hosts[vm] for vm in SPREAD}
    print(
        json.dumps(
            {
                "lost": len(lost),
                "all_running_after_s": round(took, 2),
                "seen_restarting_in_vm_info": len(restarting),
            }
        )
    )
