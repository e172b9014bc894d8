"""``submit`` and the namespace commands share one model of a namespace's VMs, on real
daemons: a vjob's VMs join its namespace's table (``namespace`` lists it, ``vm info``
shows them, ``vm launch`` refuses their names, ``clear namespace`` removes them), and a
vjob naming VMs the namespace holds or queues is refused, naming them. Every command
goes to another node than the one before."""

from __future__ import annotations

import shlex

import pytest

from dvms.runtime.client import call
from tests.e2e.test_e2e_cluster import dvms, dvms_json

pytest.importorskip("libvirt", reason="libvirt-python not installed (needs libvirt-dev)")


@pytest.fixture(scope="module")
def socks(tmp_path_factory):
    d = tmp_path_factory.mktemp("vjns") / "c"
    rows = dvms_json("cluster", "up", "--nodes", "3", "--dir", str(d), "--timeout", "90")["nodes"]
    yield [r["socket"] for r in rows]
    dvms("cluster", "down", "--dir", str(d), check=False)


def ns(sock: str, line: str) -> dict:
    return call(sock, "ns", {"words": shlex.split(line)}, timeout=120)


def vjob(tmp_path, name: str, namespace: str, vms: str) -> str:
    path = tmp_path / f"{name}.toml"
    path.write_text(f'name = "{name}"\nnamespace = "{namespace}"\n[[vms]]\nname = "{vms}"\n')
    return str(path)


def table(sock: str, namespace: str) -> dict[str, str]:
    """name -> host of the namespace's ``vm info``."""
    out = ns(sock, f".columns name,host namespace {namespace} vm info")
    assert out["ok"], out
    return {r[0]: r[1] for r in out["rows"]}


def cluster_vms(sock: str, namespace: str) -> set[str]:
    rows = dvms_json("vm", "info", "--namespace", namespace, sock=sock)["vms"]
    return {r["name"] for r in rows}


def test_submit_then_vm_launch_then_clear(socks, tmp_path):
    a, b, c = socks
    dvms("submit", vjob(tmp_path, "first", "q1", "s[1-2]"), sock=a)
    assert set(table(c, "q1")) == {"s1", "s2"}
    assert "q1" in ns(b, "namespace")["text"]
    refused = ns(a, "namespace q1 vm launch kvm s1")
    assert not refused["ok"] and "s1" in refused["error"]
    assert ns(b, "namespace q1 vm launch kvm l1")["ok"]
    assert set(table(c, "q1")) == {"s1", "s2", "l1"}
    out = ns(a, "clear namespace q1")
    assert out["ok"], out
    assert "q1" not in ns(b, "namespace")["text"]
    assert cluster_vms(c, "q1") == set()


def test_vm_launch_then_submit_then_clear(socks, tmp_path):
    a, b, c = socks
    assert ns(a, "namespace q2 vm launch kvm l[1-2]")["ok"]
    same = dvms("submit", vjob(tmp_path, "clash", "q2", "l[2-3]"), sock=b, check=False)
    assert same.returncode == 1
    assert "namespace q2 already has VM l2" in same.stderr
    assert cluster_vms(a, "q2") == {"l1", "l2"}  # nothing of the refused vjob was created
    dvms("submit", vjob(tmp_path, "more", "q2", "s[1-2]"), sock=c)
    assert set(table(a, "q2")) == {"l1", "l2", "s1", "s2"}
    assert set(table(b, "q2")) == {"l1", "l2", "s1", "s2"}
    assert ns(c, "namespace q2 vm kill s1")["ok"]
    assert ns(a, "namespace q2 vm flush")["ok"]
    assert set(table(b, "q2")) == {"l1", "l2", "s2"}
    out = ns(b, "clear namespace q2")
    assert out["ok"], out
    assert cluster_vms(c, "q2") == set()


def test_queued_names_are_refused_to_submit(socks, tmp_path):
    a, b, c = socks
    assert ns(a, "namespace q3 ns queueing true")["ok"]
    assert ns(b, "namespace q3 vm launch kvm k1")["ok"]  # queued, not created
    same = dvms("submit", vjob(tmp_path, "queued", "q3", "k1"), sock=c, check=False)
    assert same.returncode == 1 and "namespace q3 already has VM k1" in same.stderr
    assert ns(a, "clear namespace q3")["ok"]


def test_partly_failed_launch_then_submit_then_clear(socks, tmp_path):
    """A launch whose first event fails (50 VMs pinned to node1, whose CPU capacity is
    set to 0.01 CPU by ``debug capacity``: the namespace scheduler plans by vCPUs, the
    partition by the CPU capacity its host reports) keeps what its other event created;
    VMs a vjob places next to them join the table; ``clear namespace`` takes all of
    them."""
    a, b, c = socks
    queue = ["ns queueing true", "vm config memory 16", "vm config schedule node1"]
    queue += ["vm launch kvm 50", "vm config schedule node3", "vm launch kvm p[1-3]"]
    for line in queue:
        assert ns(a, f"namespace q4 {line}")["ok"], line
    call(a, "debug_capacity", {"cpus": 0.01})
    try:
        out = ns(b, "namespace q4 vm launch")
    finally:
        call(a, "debug_capacity", {"cpus": 0})
    assert not out["ok"] and "node1" in out["error"], out
    assert table(c, "q4") == {"p1": "node3", "p2": "node3", "p3": "node3"}
    status = ns(a, ".columns launched,failures namespace q4 ns schedule status")["rows"]
    assert status == [["3", "50"]], status
    dvms("submit", vjob(tmp_path, "next", "q4", "s[1-2]"), sock=c)
    ids = ns(a, ".columns name,id namespace q4 vm info")["rows"]
    assert sorted(n for n, _ in ids) == ["p1", "p2", "p3", "s1", "s2"], ids
    assert len({i for _, i in ids}) == 5, ids
    out = ns(b, "clear namespace q4")
    assert out["ok"], out
    assert cluster_vms(a, "q4") == set()
