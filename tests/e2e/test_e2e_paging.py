"""A namespace larger than one host reply and one host request, on 3 real daemons.

The daemons run with small limits (``[monitor] reply_rows`` = 40 VMs and
``reply_bytes`` = 1,024 bytes per host reply, ``[partition] state_bytes`` = 1,024 bytes
of a member's host state per message, ``[namespaces.effects] op_batch`` = 30 VMs per
``clear``/``stop`` request, launch events of 25 VMs), so a launch of 300 VMs (100 per
host) needs every paging path that a namespace of thousands uses with the default
limits: each host's VM list comes in 3 pages of ~36 rows (the byte limit binds
before the row limit), a host of more than ~35 VMs reports itself to a partition's leader in pages,
the ``stop`` after the launch and the ``clear`` go to each host in 4 requests. Without
the pages ``vm info`` would list fewer VMs; without the repeated clear 210 would remain.
About 30 s on 2 cores."""

from __future__ import annotations

import pytest

from dvms.runtime.client import call
from dvms.runtime.localcluster import cluster_down, cluster_up

pytest.importorskip("libvirt", reason="libvirt-python not installed (needs libvirt-dev)")

VMS = 300
LIMITS = """
[monitor]
reply_rows = 40
reply_bytes = 1024

[partition]
state_bytes = 1024

[namespaces.effects]
op_batch = 30
launch_batch = 25
"""


@pytest.fixture
def paged(tmp_path):
    toml = tmp_path / "limits.toml"
    toml.write_text(LIMITS)
    d = tmp_path / "c"
    rows = cluster_up(d, 3, host_cpus=1024, host_memory_mib=1_000_000, config_file=str(toml))
    try:
        yield {r["name"]: r["socket"] for r in rows}
    finally:
        cluster_down(d)


def ns(sock: str, line: str) -> dict:
    return call(sock, "ns", {"words": line.split(), "namespace": "paged"}, timeout=300)


def test_a_namespace_over_several_pages_launches_lists_and_clears(paged):
    socks = paged
    assert ns(socks["node1"], "vm config memory 1")["ok"]
    out = ns(socks["node1"], f"vm launch kvm {VMS}")
    assert out["ok"], out["text"][-500:]

    # the host replies come in pages: every VM is listed, from any node, and paused
    text = ns(socks["node2"], ".columns name,state,host vm info")["text"]
    assert text.count("BUILDING") == VMS, text[-500:]
    every = call(socks["node3"], "vm_info", {"namespace": None})
    assert len(every["vms"]) == VMS and not every["truncated"], every["truncated"]
    assert {v["state"] for v in every["vms"]} == {"PAUSED"}
    per_host = {h["name"]: h["vms"] for h in call(socks["node3"], "host")["hosts"]}
    assert sum(per_host.values()) == VMS and min(per_host.values()) > 40, per_host
    # later launch events met hosts whose state took several messages
    pages = [
        call(s, "status")["partition_stats"].get("state_pages_sent", 0) for s in socks.values()
    ]
    assert sum(pages) > 0, pages
    status = ns(socks["node2"], "ns schedule status")
    assert status["ok"] and "completed" in status["text"], status["text"]

    # the clear goes to each host in several bounded requests, until none remain
    out = ns(socks["node3"], "clear namespace paged")
    assert out["ok"], out["text"][-500:]
    assert sum(h["vms"] for h in call(socks["node1"], "host")["hosts"]) == 0
    assert call(socks["node2"], "vm_info", {"namespace": "paged"})["vms"] == []
