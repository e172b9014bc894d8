"""vm show and host show: one VM or host described from any node, with the events every
node recorded about it."""

from __future__ import annotations

import pytest

from tests.e2e.test_e2e_cluster import dvms, dvms_json

pytest.importorskip("libvirt", reason="libvirt-python not installed (needs libvirt-dev)")


def test_vm_and_host_show_describe_with_recent_events(tmp_path):
    d = tmp_path / "c"
    rows = dvms_json("cluster", "up", "--nodes", "3", "--dir", str(d), "--timeout", "90")["nodes"]
    socks = {r["name"]: r["socket"] for r in rows}
    try:
        job = tmp_path / "v.toml"
        job.write_text('name = "sv"\nnamespace = "sv"\n[[vms]]\nname = "s[1-2]"\n'
                       "memory = 512\n")  # fmt: skip
        placed = {
            p["name"]: p["host"]
            for p in dvms_json("submit", str(job), sock=socks["node1"])["placed"]
        }

        # asked of a node that runs neither VM, or of any node
        vm = dvms_json("vm", "show", "s1", sock=socks["node3"])
        assert vm["vm"]["host"] == placed["s1"] and vm["vm"]["state"] == "RUNNING"
        assert any(e["type"] == "boot" and e["subject"] == "sv/s1" for e in vm["events"])
        text = dvms("vm", "show", "s1", sock=socks["node2"]).stdout
        assert f"Host:               {placed['s1']}" in text
        assert "create sv/s1 on" in text

        host = dvms_json("host", "show", placed["s2"], sock=socks["node1"])
        assert host["host"]["name"] == placed["s2"]
        assert "s2" in {v["name"] for v in host["vms"]}
        assert all(e["host"] == placed["s2"] for e in host["events"])

        missing = dvms("vm", "show", "nope", sock=socks["node1"], check=False)
        assert missing.returncode == 1 and "no VM nope" in missing.stderr
        bad = dvms("host", "show", "node9", sock=socks["node1"], check=False)
        assert bad.returncode == 1 and "no host node9" in bad.stderr and "node1" in bad.stderr
    finally:
        dvms("cluster", "down", "--dir", str(d), check=False)
