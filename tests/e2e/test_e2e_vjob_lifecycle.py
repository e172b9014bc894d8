"""``vjob show|stop|remove`` on real daemons: a vjob is named by its id, a unique prefix
of it or its name (several matches: an error listing them); ``stop`` kills its VMs
wherever they run and keeps it listed as stopped; ``remove`` forgets it everywhere, and
only once it is stopped or failed. Both are entries of the asked node's ``dvms events``."""

from __future__ import annotations

import pytest

from tests.e2e.test_e2e_cluster import dvms, dvms_json

pytest.importorskip("libvirt", reason="libvirt-python not installed (needs libvirt-dev)")


@pytest.fixture(scope="module")
def socks(tmp_path_factory):
    d = tmp_path_factory.mktemp("lifecycle") / "c"
    rows = dvms_json("cluster", "up", "--nodes", "3", "--dir", str(d), "--timeout", "90")["nodes"]
    yield [r["socket"] for r in rows]
    dvms("cluster", "down", "--dir", str(d), check=False)


def submit(tmp_path, sock: str, name: str, vms: str, namespace: str = "") -> str:
    path = tmp_path / f"{name}-{vms}.toml"
    ns = f'namespace = "{namespace}"\n' if namespace else ""
    path.write_text(f'name = "{name}"\n{ns}[[vms]]\nname = "{vms}"\n')
    return dvms_json("submit", str(path), sock=sock)["id"]


def listed(sock: str) -> dict[str, str]:
    return {r["id"]: r["state"] for r in dvms_json("vjob", "list", sock=sock)["vjobs"]}


def test_show_by_prefix_and_name_stop_and_remove(socks, tmp_path):
    a, b, c = socks
    vid = submit(tmp_path, a, "lifecycle", "lc[1-2]", namespace="life")
    assert dvms_json("vjob", "show", vid[:6], sock=b)["id"] == vid
    assert dvms_json("vjob", "show", "lifecycle", sock=c)["id"] == vid
    # a done vjob with VMs is not removed
    refused = dvms("vjob", "remove", "lifecycle", sock=b, check=False)
    assert refused.returncode == 1 and "dvms vjob stop first" in refused.stderr
    stopped = dvms_json("vjob", "stop", vid[:8], sock=c)
    assert stopped["state"] == "stopped" and stopped["killed"] == ["life/lc1", "life/lc2"]
    assert dvms_json("vm", "info", "--namespace", "life", sock=a)["vms"] == []
    assert listed(b)[vid] == "stopped"
    out = dvms("namespace", "life", "vm", "info", sock=a).stdout
    assert "lc1" not in out  # the namespace forgot them too
    assert dvms_json("vjob", "remove", "lifecycle", sock=a)["removed"]
    for sock in socks:
        assert vid not in listed(sock)
    # `dvms events` of the nodes asked shows the stop and the removal
    stops = [e for e in dvms_json("events", sock=c)["events"] if e["subject"] == vid]
    assert [e["message"] for e in stops] == ["vjob lifecycle (2 VMs) stopped: 2 of 2 VMs killed"]
    gone_ev = [e for e in dvms_json("events", sock=a)["events"] if e["subject"] == vid]
    assert gone_ev[-1]["message"] == "vjob lifecycle (2 VMs) removed: was stopped", gone_ev
    gone = dvms("vjob", "show", vid, sock=c, check=False)
    assert gone.returncode == 1 and f"no such vjob: {vid}" in gone.stderr


def test_an_ambiguous_name_lists_the_candidates(socks, tmp_path):
    a, b, _ = socks
    first = submit(tmp_path, a, "twin", "t1")
    second = submit(tmp_path, b, "twin", "t2")
    out = dvms("vjob", "show", "twin", sock=a, check=False)
    assert out.returncode == 1
    assert "twin names 2 vjobs" in out.stderr and first in out.stderr and second in out.stderr
    unknown = dvms("vjob", "stop", "nosuch", sock=b, check=False)
    assert unknown.returncode == 1 and "no such vjob: nosuch" in unknown.stderr
    for vid in (first, second):
        dvms("vjob", "stop", vid, sock=a)
        dvms("vjob", "remove", vid, sock=b)
