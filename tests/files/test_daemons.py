"""File sharing between real daemons on loopback (``dvms node run`` processes): a file
added on one node reaches seven others intact; a provider killed mid-transfer and a
fetcher killed and restarted mid-transfer; a peer serving corrupt chunks is banned; a
republished name; a store too small for the file.

Chunks are 1 MiB (4 MiB by default) so a 64 MiB file has 64 of them, and each node's
uploads are limited to 48 MiB/s (``[files] upload_bytes_s``) so that a transfer lasts
long enough to kill a node in the middle of it, as on a real link."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dvms.placement.vjob import vjob_from_dict
from dvms.runtime.client import ControlError, call, submit_body
from dvms.runtime.localcluster import cluster_down, cluster_up, restart_node

pytest.importorskip("libvirt", reason="libvirt-python not installed (needs libvirt-dev)")
pytestmark = pytest.mark.slow

MIB = 1024 * 1024
NODES = 8
CONFIG = """
[files]
chunk_bytes = 1048576
reserve_bytes = 0
sync_chunks = false
upload_bytes_s = 50331648.0
find_period_s = 0.5
stream_timeout_s = 10.0
pin_check_s = 0.2
pin_grace_s = 1.0
"""
WAIT_S = 120.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, dict[str, Any]]]:
    d = tmp_path_factory.mktemp("files")
    (d / "node.toml").write_text(CONFIG)
    rows = cluster_up(d / "c", NODES, config_file=str(d / "node.toml"))
    try:
        yield {r["name"]: r for r in rows}
    finally:
        cluster_down(d / "c")


def _call(node: dict[str, Any], cmd: str, **args: Any) -> Any:
    return call(node["socket"], cmd, args, timeout=WAIT_S + 30)


def _dir(cluster: dict[str, dict[str, Any]]) -> Path:
    return Path(cluster["node1"]["state_dir"]).parent


def _random_file(path: Path, size: int) -> str:
    data = os.urandom(size)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def _sha(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(MIB):
            h.update(block)
    return h.hexdigest()


def _transfer(node: dict[str, Any], root: str) -> dict[str, Any] | None:
    for t in _call(node, "file_status")["transfers"]:
        if t["root"] == root:
            return t
    return None


def _wait_chunks(node: dict[str, Any], root: str, at_least: int) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        t = _transfer(node, root)
        if t is not None and (t["chunks_done"] >= at_least or t["state"] in ("done", "failed")):
            return t
        time.sleep(0.02)
    raise AssertionError(f"{node['name']}: no {at_least} chunks of {root} in time")


def test_a_file_added_on_one_node_is_fetched_by_seven_others(
    cluster: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    digest = _random_file(tmp_path / "img", 64 * MIB)
    added = _call(cluster["node1"], "file_add", path=str(tmp_path / "img"), name="big")
    assert added["size"] == 64 * MIB and added["chunks"] == 64
    results: dict[str, Any] = {}

    def get(name: str) -> None:
        try:
            results[name] = _call(cluster[name], "file_get", ref="big", wait=True)
        except ControlError as exc:
            results[name] = exc

    threads = [threading.Thread(target=get, args=(f"node{i}",)) for i in range(2, NODES + 1)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert all(isinstance(r, dict) for r in results.values()), results
    assert {_sha(r["path"]) for r in results.values()} == {digest}
    assert all(r["root"] == added["root"] and r["bad_chunks"] == 0 for r in results.values())
    # a swarm: fetchers took chunks from each other, not only from node1
    assert max(r["peers"] for r in results.values()) >= 2
    served = [_call(cluster[f"node{i}"], "file_status")["served_chunks"] for i in range(2, 9)]
    assert sum(served) > 0
    providers = _call(cluster["node3"], "file_providers", ref="big")["providers"]
    assert len(providers) == NODES and all(p["complete"] for p in providers)


def test_a_republished_name_resolves_to_the_new_root_and_the_old_root_still_downloads(
    cluster: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    first = _random_file(tmp_path / "v1", 3 * MIB)
    second = _random_file(tmp_path / "v2", 2 * MIB + 7)
    cli = [sys.executable, "-m", "dvms", "--socket", cluster["node1"]["socket"], "file"]
    added = subprocess.run(
        [*cli, "add", str(tmp_path / "v1"), "--name", "os/base", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    v1 = json.loads(added.stdout)
    assert (v1["name"], v1["size"]) == ("os/base", 3 * MIB)
    v2 = _call(cluster["node2"], "file_add", path=str(tmp_path / "v2"), name="os/base")
    assert v1["root"] != v2["root"] and v2["version"] > v1["version"]
    new = _call(cluster["node5"], "file_get", ref="os/base", wait=True)
    assert new["root"] == v2["root"] and _sha(new["path"]) == second
    cli5 = [sys.executable, "-m", "dvms", "--socket", cluster["node5"]["socket"], "file"]
    text = subprocess.run(
        [*cli5, "get", "os/base", "--wait"], capture_output=True, text=True, check=True
    ).stdout.split()
    assert text == [new["path"], v2["root"]]  # its local path and root
    old = _call(cluster["node5"], "file_get", ref=v1["root"], wait=True)
    assert _sha(old["path"]) == first
    with pytest.raises(ControlError, match="no such file: os/none"):
        _call(cluster["node5"], "file_get", ref="os/none", wait=True)


def test_a_peer_serving_corrupt_chunks_is_banned_and_the_file_completes(
    cluster: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    digest = _random_file(tmp_path / "c", 48 * MIB)
    added = _call(cluster["node1"], "file_add", path=str(tmp_path / "c"), name="corrupt-me")
    _call(cluster["node2"], "file_get", ref="corrupt-me", wait=True)
    # node2's copy rots on disk: every chunk it serves now fails its hash
    path = Path(cluster["node2"]["state_dir"]) / "files" / "objects" / added["root"]
    with open(path, "r+b") as f:
        for i in range(48):
            f.seek(i * MIB + 100)
            f.write(b"\xde\xad\xbe\xef")
    got = _call(cluster["node3"], "file_get", ref="corrupt-me", wait=True)
    assert _sha(got["path"]) == digest
    assert got["banned"] == 1 and got["bad_chunks"] >= 3


def test_a_vjob_whose_disk_is_a_file_lands_on_a_host_that_fetches_it_first(
    cluster: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    digest = _random_file(tmp_path / "disk", 5 * MIB)
    added = _call(cluster["node1"], "file_add", path=str(tmp_path / "disk"), name="img/web")
    vjob = vjob_from_dict(
        {
            "name": "web",
            "namespace": "files",
            "vms": [{"name": "web1", "disk": "file:img/web", "schedule": "node7"}],
        },
        where="test",
    )
    done = _call(cluster["node2"], "submit", **submit_body(vjob, wait=True))
    assert done["ok"], done
    assert done["placed"] == [{"name": "web1", "namespace": "files", "host": "node7"}]
    held = {e["root"]: e for e in _call(cluster["node7"], "file_list")["files"]}
    entry = held[added["root"]]
    assert entry["complete"] and entry["pinned"] == ["files:web1"]
    assert _sha(entry["path"]) == digest
    with pytest.raises(ControlError, match="pinned by files:web1"):
        _call(cluster["node7"], "file_delete", ref="img/web")
    # the VM is destroyed: its pin goes, and the file may be deleted
    killed = _call(cluster["node3"], "vm_kill", names="web1", namespace="files")
    assert killed["killed"] == [{"name": "web1", "host": "node7"}]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        held = {e["root"]: e for e in _call(cluster["node7"], "file_list")["files"]}
        if not held[added["root"]]["pinned"]:
            break
        time.sleep(0.1)
    assert _call(cluster["node7"], "file_delete", ref="img/web")["root"] == added["root"]
    # withdrawn at once: the others no longer list node7 as a provider
    providers = _call(cluster["node3"], "file_providers", ref="img/web")["providers"]
    node7_id = cluster["node7"]["node_id"]
    assert node7_id not in {p["node_id"] for p in providers}
    assert cluster["node1"]["node_id"] in {p["node_id"] for p in providers}
    # a VM naming a file nobody added is refused on its host, with the reason
    missing = vjob_from_dict(
        {"name": "bad", "vms": [{"name": "bad1", "disk": "file:img/none", "schedule": "node7"}]},
        where="test",
    )
    refused = _call(cluster["node2"], "submit", **submit_body(missing, wait=True))
    assert not refused["ok"] and "disk file:img/none: no such file" in refused["reason"]


def test_a_cdrom_file_travels_with_vm_config_and_with_a_vjob(
    cluster: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    digest = _random_file(tmp_path / "boot.iso", 3 * MIB)
    added = _call(cluster["node1"], "file_add", path=str(tmp_path / "boot.iso"), name="img/iso")

    def ns(node: str, line: str) -> dict[str, Any]:
        out = _call(cluster[node], "ns", words=line.split(), namespace="cd")
        assert out["ok"], out
        return dict(out)

    # minimega's way: vm config cdrom file:NAME, then vm launch from another node
    ns("node2", "vm config cdrom file:img/iso")
    ns("node2", "vm config schedule node6")
    ns("node3", "vm launch kvm cd1")
    held = {e["root"]: e for e in _call(cluster["node6"], "file_list")["files"]}
    assert held[added["root"]]["complete"] and held[added["root"]]["pinned"] == ["cd:cd1"]
    assert _sha(held[added["root"]]["path"]) == digest
    # a vjob's cdrom key travels the same way
    vjob = vjob_from_dict(
        {"name": "iso", "vms": [{"name": "cd2", "cdrom": "file:img/iso", "schedule": "node5"}]},
        where="test",
    )
    done = _call(cluster["node4"], "submit", **submit_body(vjob, wait=True))
    assert done["ok"], done
    held = {e["root"]: e for e in _call(cluster["node5"], "file_list")["files"]}
    assert held[added["root"]]["complete"] and held[added["root"]]["pinned"] == ["cd2"]
    missing = vjob_from_dict(
        {"name": "noiso", "vms": [{"name": "cd3", "cdrom": "file:img/nope", "schedule": "node5"}]},
        where="test",
    )
    refused = _call(cluster["node4"], "submit", **submit_body(missing, wait=True))
    assert not refused["ok"] and "cdrom file:img/nope: no such file" in refused["reason"]


def test_vjob_show_shows_the_fetch_a_launch_waits_for(
    cluster: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    size = 160 * MIB  # ~3 s from one provider at the test's 48 MiB/s upload limit
    _random_file(tmp_path / "big", size)
    added = _call(cluster["node1"], "file_add", path=str(tmp_path / "big"), name="img/big")
    vjob = vjob_from_dict(
        {"name": "slow", "vms": [{"name": "slow1", "disk": "file:img/big", "schedule": "node4"}]},
        where="test",
    )
    started = _call(cluster["node2"], "submit", **submit_body(vjob, wait=False))
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        shown = _call(cluster["node3"], "vjob_show", id=started["id"])
        if shown["state"] not in ("accepted", "placing"):
            break
        seen += shown["fetches"]
        time.sleep(0.05)
    assert shown["state"] == "done" and shown["fetches"] == [], shown
    fetching = [f for f in seen if f["state"] == "fetching"]
    assert fetching, seen
    row = fetching[0]
    assert (row["name"], row["host"], row["file"]) == ("slow1", "node4", "disk file:img/big")
    assert row["root"] == added["root"] and row["total_bytes"] == size
    done = [f["done_bytes"] for f in fetching]
    assert done == sorted(done) and any(0 < d < size for d in done), done


def test_a_qcow2_file_is_fetched_with_its_backing_file(
    cluster: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    from test_store import qcow2_with_backing

    base_digest = _random_file(tmp_path / "base.img", 3 * MIB)
    qcow2_with_backing(tmp_path / "overlay.qcow2", "base.img", size=2 * MIB)
    added = _call(cluster["node1"], "file_add", path=str(tmp_path / "overlay.qcow2"), name="ov")
    got = _call(cluster["node8"], "file_get", ref="ov", wait=True)
    assert got["root"] == added["root"]
    # the backing file came too, and sits where qemu looks for it
    link = Path(got["path"]).parent / "base.img"
    assert _sha(str(link)) == base_digest


def test_a_store_too_small_is_a_clear_error_and_no_complete_file(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (mounts a small tmpfs)")
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mnt)], check=True)
    try:
        (tmp_path / "node.toml").write_text(CONFIG)
        rows = cluster_up(mnt / "c", 2, config_file=str(tmp_path / "node.toml"))
        try:
            _random_file(tmp_path / "f", 14 * MIB)
            _call(rows[0], "file_add", path=str(tmp_path / "f"), name="toobig")
            with pytest.raises(ControlError, match="not enough disk space"):
                _call(rows[1], "file_get", ref="toobig", wait=True)
            files = Path(rows[1]["state_dir"]) / "files"
            assert [p.name for p in (files / "objects").iterdir()] == []
            assert [p.name for p in (files / "partial").iterdir()] == []
        finally:
            cluster_down(mnt / "c")
    finally:
        # the daemons have exited (cluster_down waits); lazily if a file is still open
        if subprocess.run(["umount", str(mnt)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_provider_killed_mid_transfer_the_others_finish_it(
    cluster: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    digest = _random_file(tmp_path / "k", 64 * MIB)
    added = _call(cluster["node1"], "file_add", path=str(tmp_path / "k"), name="kill-provider")
    for name in ("node2", "node3"):
        _call(cluster[name], "file_get", ref="kill-provider", wait=True)
    _call(cluster["node4"], "file_get", ref="kill-provider", wait=False)
    t = _wait_chunks(cluster["node4"], added["root"], 8)
    assert t["state"] == "fetching" and t["chunks_done"] < 64
    os.kill(cluster["node2"]["pid"], signal.SIGKILL)
    try:
        got = _call(cluster["node4"], "file_get", ref="kill-provider", wait=True)
        assert _sha(got["path"]) == digest
    finally:
        cluster["node2"].update(restart_node(_dir(cluster), "node2"))


def test_a_fetcher_killed_and_restarted_resumes_without_refetching(
    cluster: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    digest = _random_file(tmp_path / "r", 64 * MIB)
    added = _call(cluster["node1"], "file_add", path=str(tmp_path / "r"), name="resume-me")
    root = added["root"]
    _call(cluster["node6"], "file_get", ref="resume-me", wait=False)
    t = _wait_chunks(cluster["node6"], root, 16)
    assert t["state"] == "fetching" and t["chunks_done"] < 64
    os.kill(cluster["node6"]["pid"], signal.SIGKILL)
    time.sleep(0.2)
    bits = Path(cluster["node6"]["state_dir"]) / "files" / "partial" / f"{root}.bits"
    held = sum(bin(b).count("1") for b in bits.read_bytes())
    assert 16 <= held < 64
    cluster["node6"].update(restart_node(_dir(cluster), "node6"))
    # the restarted node resumes its transfer by root on its own; asking for the name
    # right away works even when the restarted node is the arbiter of the name's record
    # (it fetches the record from the replicas before answering)
    got = _call(cluster["node6"], "file_get", ref="resume-me", wait=True)
    assert _sha(got["path"]) == digest
    # every chunk held before the kill was kept: only the others were fetched again
    assert got["resumed"] == held and got["fetched"] == 64 - held
