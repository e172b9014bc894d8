"""Revoking one node on real daemons over loopback: ``dvms node revoke`` with an
operator key every node's config lists. Its traffic is dropped and counted everywhere,
it leaves the routing tables (so no partition recruits it), a node that was down
learns the revocation when it joins, and a revocation signed by another key is refused."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from dvms.runtime.client import call
from dvms.runtime.localcluster import cluster_up
from tests.e2e.test_e2e_cluster import dvms, dvms_json
from tests.e2e.test_e2e_keys import start_on, stop, wait_for

pytest.importorskip("libvirt", reason="libvirt-python not installed (needs libvirt-dev)")

VJOB = 'name = "r"\nnamespace = "r"\n[[vms]]\nname = "x[1-3]"\nmemory = 512\n\n' \
    '[[constraints]]\nkind = "spread"\nvms = "x[1-3]"\n'  # fmt: skip


@pytest.fixture
def cluster(tmp_path):
    dvms("keygen", "--operator", str(tmp_path / "op.key"))
    public = (tmp_path / "op.key.pub").read_text().strip()
    (tmp_path / "node.toml").write_text(f'operator_keys = ["{public}"]\n')
    d = tmp_path / "c"
    rows = cluster_up(d, 4, config_file=str(tmp_path / "node.toml"))
    try:
        yield d, {r["name"]: r for r in rows}
    finally:
        dvms("cluster", "down", "--dir", str(d), check=False, timeout=120)


def revoked_drops(sock: str) -> int:
    return call(sock, "status")["dropped"].get("revoked", 0)


def test_a_revoked_node_is_dropped_everywhere_and_left_out(cluster, tmp_path: Path):
    d, rows = cluster
    one, four = rows["node1"]["socket"], rows["node4"]["socket"]
    four_id = rows["node4"]["node_id"]

    # a revocation signed by a key no node lists is refused, and changes nothing
    dvms("keygen", "--operator", str(tmp_path / "rogue.key"))
    out = dvms("node", "revoke", "node4", "--operator-key", str(tmp_path / "rogue.key"),
               sock=one, check=False)  # fmt: skip
    assert out.returncode == 1 and "operator_keys do not list" in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert four_id in {p["node_id"] for p in dvms_json("peers", sock=one)["peers"]}

    doc = dvms_json("node", "revoke", "node4", "--operator-key", str(tmp_path / "op.key"),
                    sock=one)  # fmt: skip
    assert doc["node_id"] == four_id and doc["told"] >= 3 and not doc["refused"], doc
    assert doc["stored"] >= 1

    # every other node drops node4's traffic (counted) and has it out of its table
    for name in ("node1", "node2", "node3"):
        sock = rows[name]["socket"]
        wait_for(lambda sock=sock: revoked_drops(sock) > 0, what=f"{name} to drop node4")
        assert four_id not in {p["node_id"] for p in dvms_json("peers", sock=sock)["peers"]}
    states = {m["node_id"]: m["state"] for m in dvms_json("members", sock=one)["members"]}
    assert states.get(four_id) in (None, "revoked", "failed"), states

    # partitions leave it out: a vjob spread over 3 hosts is placed on the other three
    (tmp_path / "r.toml").write_text(VJOB)
    placed = dvms_json("submit", str(tmp_path / "r.toml"), sock=one)
    assert placed["ok"], placed
    assert {p["host"] for p in placed["placed"]} == {"node1", "node2", "node3"}
    parts = dvms_json("partitions", "--all", sock=one)["partitions"]
    assert parts and all("node4" not in p["members"] for p in parts), parts
    # node4 itself hears nothing from the others any more
    before = call(four, "status")["accepted"]
    time.sleep(3)
    assert call(four, "status")["accepted"] - before < 3

    # node3 forgets it (its kept file gone), restarts, and learns it again on joining
    stop(rows["node3"]["pid"])
    (d / "node3" / "revoked").unlink()
    log = d / "node3" / "node.log"
    log.write_text("")
    proc = start_on(rows["node3"], d, rows["node1"]["address"])
    try:
        wait_for(lambda: "is revoked" in log.read_text(), what="node3 to learn it")
        three = rows["node3"]["socket"]
        wait_for(lambda: four_id not in {
            p["node_id"] for p in dvms_json("peers", sock=three)["peers"]
        }, what="node3 to drop node4")  # fmt: skip
    finally:
        proc.terminate()
        proc.wait(timeout=30)
