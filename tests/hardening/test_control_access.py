"""Who may command a node, on a real daemon: root and the daemon's user always; members
of ``[control] group``; anyone else is refused by the socket's mode, and, should the
mode let them in, by the daemon itself (``SO_PEERCRED``), counted and logged. And every
command that changed something is in the hash-chained audit log, with the caller's uid."""

from __future__ import annotations

import grp
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from dvms.runtime.client import ControlError, call
from dvms.runtime.control import audit
from dvms.runtime.localcluster import cluster_down, cluster_up

pytest.importorskip("libvirt", reason="libvirt-python not installed (needs libvirt-dev)")

pytestmark = pytest.mark.real

NOBODY = 65534
GROUP = "kvm"  # an existing group (Debian: always there) that nobody is not in


@pytest.fixture(scope="module")
def node() -> Iterator[dict[str, str]]:
    if os.geteuid() != 0:
        pytest.skip("needs root (connects as other uids)")
    try:
        gid = grp.getgrnam(GROUP).gr_gid
    except KeyError:
        pytest.skip(f"no group {GROUP} on this machine")
    # under /tmp, reachable by other users (pytest's tmp_path is 0700)
    d = Path(tempfile.mkdtemp(prefix="dvms-access-"))
    d.chmod(0o711)
    (d / "node.toml").write_text(f'[control]\ngroup = "{GROUP}"\n')
    try:
        rows = cluster_up(d / "c", 1, metrics=False, config_file=str(d / "node.toml"))
        (d / "c").chmod(0o711)
        yield {"sock": rows[0]["socket"], "state": rows[0]["state_dir"], "gid": str(gid)}
    finally:
        cluster_down(d / "c")
        shutil.rmtree(d, ignore_errors=True)


def as_user(sock: str, cmd: str, args: dict, *, uid: int, gid: int, groups: list[int]) -> str:
    """Run ``call(sock, cmd, args)`` in a forked child with those credentials; its result
    as JSON, or ``error: TEXT``."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop privileges, call, report, exit
        try:
            os.close(r)
            os.setgroups(groups)
            os.setgid(gid)
            os.setuid(uid)
            try:
                out = json.dumps(call(sock, cmd, args, timeout=20))
            except ControlError as exc:
                out = f"error: {exc}"
            os.write(w, out.encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        text = f.read()
    os.waitpid(pid, 0)
    return text


def test_the_socket_is_0660_with_the_group(node):
    st = os.stat(node["sock"])
    assert stat.S_IMODE(st.st_mode) == 0o660
    assert st.st_gid == int(node["gid"])


def test_a_group_member_is_accepted_and_audited(node):
    gid = int(node["gid"])
    out = as_user(node["sock"], "status", {}, uid=NOBODY, gid=NOBODY, groups=[gid])
    assert not out.startswith("error"), out
    assert json.loads(out)["name"] == "node1"
    # primary group works too
    out = as_user(node["sock"], "debug_capacity", {"cpus": 0}, uid=NOBODY, gid=gid, groups=[])
    assert not out.startswith("error"), out
    lines = audit.tail(Path(node["state"]) / "audit.log", 5)
    mine = [x for x in lines if x["cmd"] == "debug_capacity" and x["uid"] == NOBODY]
    assert mine and mine[-1]["result"] == "ok" and mine[-1]["args"] == {"cpus": 0}


def test_others_are_refused_by_the_mode_and_by_the_daemon(node):
    sock, state = node["sock"], node["state"]
    out = as_user(sock, "status", {}, uid=NOBODY, gid=NOBODY, groups=[])
    assert out.startswith("error") and "Permission denied" in out, out
    # a socket whose mode lets anyone in (a mistake): the daemon still says no
    before = call(sock, "status")["control"]["refused"]
    os.chmod(state, 0o711)
    os.chmod(sock, 0o666)
    try:
        out = as_user(sock, "vm_kill", {"names": "x"}, uid=NOBODY, gid=NOBODY, groups=[])
    finally:
        os.chmod(sock, 0o660)
        os.chmod(state, 0o710)
    assert out == (
        f"error: permission denied: uid {NOBODY} may not command this node "
        f"(only root or the daemon's user or group {GROUP})"
    ), out
    assert call(sock, "status")["control"]["refused"] == before + 1
    log = (Path(state) / "node.log").read_text()
    assert f"refused uid {NOBODY}" in log
    # and nothing it asked was done or written
    assert all(x["uid"] != NOBODY or x["cmd"] != "vm_kill" for x in audit.tail(
        Path(state) / "audit.log", 50))  # fmt: skip


def test_root_commands_are_chained_and_verify(node):
    sock, state = node["sock"], Path(node["state"])
    for i in range(3):
        with pytest.raises(ControlError):
            call(sock, "vm_kill", {"names": ""})
        call(sock, "debug_capacity", {"cpus": i})
    call(sock, "status")  # a read: not written
    res = call(sock, "audit_show", {"count": 100, "verify": True})
    assert res["ok"] and res["problems"] == [], res
    cmds = [x["cmd"] for x in res["lines"]]
    assert "status" not in cmds and cmds.count("vm_kill") >= 3
    kill = next(x for x in res["lines"] if x["cmd"] == "vm_kill")
    assert kill["uid"] == 0 and kill["pid"] == os.getpid()
    assert kill["result"].startswith("error: vm kill needs VM names")
    n, problems = audit.verify(state / "audit.log")
    assert n == len(res["lines"]) and not problems
