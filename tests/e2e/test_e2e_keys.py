"""Key rotation on real daemons over loopback: ``dvms keys install|use|remove`` on a
4-node cluster while one node is down; it rejoins holding only a key still installed,
and once it holds none of the cluster's keys it is refused, and the key id is named."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dvms.runtime.client import call
from dvms.runtime.localcluster import restart_node
from dvms.wire.keys import key_id, load_key
from tests.e2e.test_e2e_cluster import dvms, dvms_json, pid_alive

pytest.importorskip("libvirt", reason="libvirt-python not installed (needs libvirt-dev)")


def stop(pid: int) -> None:
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(pid)


def rows(d: Path) -> dict[str, dict]:
    return {r["name"]: r for r in json.loads((d / "cluster.json").read_text())}


def keys(sock: str, *args: str, ok: bool = True) -> dict:
    out = dvms("--json", "keys", *args, sock=sock, check=False, timeout=90)
    doc = json.loads(out.stdout)
    assert (out.returncode == 0) == ok, (out.returncode, doc, out.stderr)
    return doc


def table(doc: dict) -> dict[str, tuple[int, int]]:
    return {k["key"]: (k["installed"], k["primary"]) for k in doc["keys"]}


def start_on(row: dict, d: Path, seed: str) -> subprocess.Popen:
    """Start a node again on its old address (its peers still try it there)."""
    state = Path(row["state_dir"])
    (state / "node.json").unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "dvms", "node", "run", "--listen", row["address"],
           "--key", str(d / "cluster.key"), "--state-dir", str(state), "--hostname",
           row["name"], "--log-level", "warning", "--seed", seed, *row["extra"]]  # fmt: skip
    with open(state / "node.log", "ab") as log:
        return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip


def wait_for(pred, timeout: float = 30.0, what: str = ""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def cluster(tmp_path):
    d = tmp_path / "c"
    dvms_json("cluster", "up", "--nodes", "4", "--dir", str(d), "--timeout", "90")
    extra: list[subprocess.Popen] = []
    try:
        yield d, extra
    finally:
        for p in extra:
            if p.poll() is None:
                p.kill()
                p.wait()
        dvms("cluster", "down", "--dir", str(d), check=False, timeout=120)


def test_rotation_with_a_node_offline_then_a_node_holding_no_key(cluster, tmp_path):
    d, extra = cluster
    r = rows(d)
    one = r["node1"]["socket"]
    old = key_id(load_key(d / "cluster.key")).hex()
    assert table(keys(one, "list")) == {old: (4, 4)}

    # node4 is down while the cluster installs a new key and makes it primary
    stop(r["node4"]["pid"])
    dvms("keygen", str(tmp_path / "new.key"))
    new = key_id(load_key(tmp_path / "new.key")).hex()
    doc = keys(one, "install", str(tmp_path / "new.key"))
    assert table(doc) == {old: (3, 3), new: (3, 0)}
    # node4 stopped cleanly (it left): not asked, so not named unreachable either
    assert [n["name"] for n in doc["nodes"]] == ["node1", "node2", "node3"], doc
    assert table(keys(one, "use", new)) == {old: (3, 0), new: (3, 3)}
    # the primary is refused, with one line, and nothing changes
    out = dvms("keys", "remove", new, sock=one, check=False)
    assert out.returncode == 1 and f"key {new} is the primary key" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1

    # node4 comes back holding only the old key, still installed: it rejoins
    restart_node(d, "node4")
    four = r["node4"]["socket"]
    members = dvms_json("members", sock=four)["members"]
    assert sorted(m["state"] for m in members) == ["alive"] * 4, members
    doc = keys(one, "list")
    assert table(doc) == {old: (4, 1), new: (3, 3)}
    assert next(k for k in doc["keys"] if k["key"] == new)["missing_on"] == ["node4"]
    # the rotation is finished with node4 in it
    keys(one, "install", str(tmp_path / "new.key"))
    keys(one, "use", new)
    doc = keys(one, "remove", old)
    assert table(doc) == {new: (4, 4)} and not doc["unreachable"], doc
    # the ring survives a restart (the key file still holds the removed old key)
    stop(rows(d)["node3"]["pid"])
    three = restart_node(d, "node3")["socket"]
    assert table(keys(one, "list")) == {new: (4, 4)}
    # file streams follow the ring too (they authenticate with the primary key)
    (tmp_path / "f.bin").write_bytes(bytes(range(256)) * 64)
    dvms("file", "add", str(tmp_path / "f.bin"), "--name", "k/f", sock=one)
    got = dvms_json("file", "get", "k/f", "--wait", sock=three)
    assert Path(got["path"]).read_bytes() == (tmp_path / "f.bin").read_bytes(), got

    # node4 is down again while the cluster moves to a third key and drops the second
    r = rows(d)
    stop(r["node4"]["pid"])
    dvms("keygen", str(tmp_path / "third.key"))
    third = key_id(load_key(tmp_path / "third.key")).hex()
    keys(one, "install", str(tmp_path / "third.key"))
    keys(one, "use", third)
    assert table(keys(one, "remove", new)) == {third: (3, 3)}
    # node4 holds none of the cluster's keys now: refused, and both sides name the key
    extra.append(start_on(r["node4"], d, r["node1"]["address"]))

    def named(path: Path, kid: str) -> bool:
        return f"with key {kid}, which this node does not hold" in path.read_text()

    wait_for(lambda: named(d / "node1" / "node.log", new), what="node1 to name node4's key")
    assert call(one, "status")["dropped"].get("unknown_key", 0) > 0
    wait_for(lambda: named(d / "node4" / "node.log", third), what="node4 to name its lack")
    doc = keys(four, "list")  # node4 alone: the others do not answer it
    assert doc["nodes"][0]["lacking"] == [third] and doc["total"] == 1
    members = dvms_json("members", sock=one)["members"]
    # node4 left cleanly before (SIGTERM) and is not heard from since
    assert {m["state"] for m in members if m["name"] == "node4"} in ({"failed"}, {"left"})
    # the address node4 sends from is listed with the key it signs with (on node4's row,
    # or on a row of its own when node1 knows node4 by an older address)
    assert [m["state"] for m in members if m.get("unknown_key") == new] in (
        ["failed"],
        ["left"],
        ["unknown_key"],
    ), members
    out = dvms("members", sock=one).stdout
    assert f"signs with key {new}, which this node does not hold" in out, out
