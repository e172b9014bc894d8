"""The fencing watchdog (``dvms.runtime.fencer``) with a fake hypervisor and fake QEMU
processes: arming, re-arming, disarming, expiry, bad input, a fencer that died, the pid
fallback, and a fencer that outlives a frozen or killed daemon. The same with libvirt
and real QEMU guests is in ``tests/real/test_real_fencer.py``."""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from dvms.runtime.fencer import (
    DESTROY,
    MAX_LINE,
    PAUSE,
    Fencer,
    FencerConfig,
    GuestInfo,
    ProcessWatchdog,
    clock,
    parse_ha_metadata,
    proc_start,
    run_dir_for,
)

FAST = FencerConfig(libvirt_timeout_s=0.3, refresh_s=0.1, owner_poll_s=0.1)


class FakeHv:
    """Guests by name: what ``refresh`` reports; ``fence``/``fallback`` calls recorded."""

    def __init__(self, guests: dict[str, GuestInfo], *, hang: bool = False) -> None:
        self.guests = guests
        self.hang = hang
        self.fenced: list[tuple[str, str, str, float]] = []
        self.refreshes = 0

    def refresh(self, names: tuple[str, ...]) -> dict[str, GuestInfo]:
        self.refreshes += 1
        return {n: self.guests[n] for n in names if n in self.guests}

    def fence(self, name: str, info: GuestInfo) -> str:
        if self.hang:
            time.sleep(5.0)  # a frozen libvirtd
        self.fenced.append((name, info.fence, "libvirt", time.monotonic()))
        return "done"

    def fallback(self, name: str, info: GuestInfo) -> str:
        self.fenced.append((name, info.fence, "pid", time.monotonic()))
        return "signalled"


@contextlib.contextmanager
def serving(tmp_path: Path, hv: FakeHv) -> Iterator[Fencer]:
    """A fencer in a thread of this process, owned by this process."""
    fencer = Fencer(tmp_path / "fencer.sock", hv, FAST, owner=os.getpid())
    fencer.listen()
    t = threading.Thread(target=fencer.serve, daemon=True)
    t.start()
    try:
        yield fencer
    finally:
        fencer.stop()
        t.join(5.0)
        assert not t.is_alive()


def client(tmp_path: Path) -> ProcessWatchdog:
    # a python that cannot start a fencer: these tests serve one in a thread
    return ProcessWatchdog(tmp_path, "test:///default", FAST, python="/nonexistent/python")


GUESTS = {
    "ns:a": GuestInfo(DESTROY, 3, None, None),
    "ns:b": GuestInfo(PAUSE, 1, None, None),
}


# -- metadata and paths --------------------------------------------------------------------


def test_metadata_namespace_is_the_domain_xml_one() -> None:
    from dvms.hypervisor.domxml import METADATA_NS as DOMXML_NS
    from dvms.runtime.fencer import METADATA_NS

    assert METADATA_NS == DOMXML_NS


@pytest.mark.parametrize(
    ("ha", "want"),
    [
        ('<dvms:ha generation="4" fence="pause"/>', (PAUSE, 4)),
        ('<dvms:ha generation="7" fence="destroy"/>', (DESTROY, 7)),
        ('<dvms:ha fence="kill" generation="x"/>', (DESTROY, None)),
        ("", (DESTROY, None)),
    ],
)
def test_ha_metadata_is_read_with_destroy_by_default(ha: str, want: tuple[str, int]) -> None:
    xml = (
        "<domain><name>ns:a</name><metadata>"
        f'<dvms:vm xmlns:dvms="https://dvms.invalid/xmlns/vm/1" namespace="ns">{ha}</dvms:vm>'
        "</metadata></domain>"
    )
    assert parse_ha_metadata(xml) == want
    assert parse_ha_metadata("<domain><oops") == (DESTROY, None)


def test_run_dir_follows_the_uri_socket() -> None:
    assert run_dir_for("qemu+unix:///system?socket=/x/run/libvirt-sock") == Path("/x/run")
    assert run_dir_for("qemu:///system") == Path("/run/libvirt")


# -- the protocol against a fencer in a thread ---------------------------------------------


async def test_an_arming_that_is_not_renewed_fences_every_guest_with_its_action(
    tmp_path: Path,
) -> None:
    hv = FakeHv(GUESTS)
    with serving(tmp_path, hv) as fencer:
        wd = client(tmp_path)
        t0 = time.monotonic()
        await wd.arm(1.0, ("ns:a", "ns:b"))
        assert wd.last_error is None
        assert wd.pid == os.getpid()
        await trio.sleep(0.5)
        assert hv.fenced == []
        assert hv.refreshes >= 1
        await trio.sleep(0.7)
        assert sorted(f[:3] for f in hv.fenced) == [
            ("ns:a", DESTROY, "libvirt"),
            ("ns:b", PAUSE, "libvirt"),
        ]
        # the fence starts libvirt_timeout_s early, so that a fallback is done in time
        early = 1.0 - FAST.libvirt_timeout_s
        assert all(early <= f[3] - t0 < early + 0.3 for f in hv.fenced), hv.fenced
        st = await wd.status()
        assert st is not None and not st["armed"]
        assert [(e["guest"], e["generation"]) for e in st["events"]] == [("ns:a", 3), ("ns:b", 1)]
        assert fencer.deadline is None
        await wd.aclose()


async def test_rearming_moves_the_deadline_and_disarming_cancels(tmp_path: Path) -> None:
    hv = FakeHv(GUESTS)
    with serving(tmp_path, hv):
        wd = client(tmp_path)
        for _ in range(10):  # 1 s of renewals, each 0.6 s ahead
            await wd.arm(0.6, ("ns:a",))
            await trio.sleep(0.1)
        assert hv.fenced == []
        await wd.arm(None, ())
        await trio.sleep(0.5)
        assert hv.fenced == []
        # a re-arming with fewer guests fences only those
        await wd.arm(0.5, ("ns:a", "ns:b"))
        await wd.arm(0.5, ("ns:b",))
        await trio.sleep(0.6)
        assert [f[0] for f in hv.fenced] == ["ns:b"]
        await wd.aclose()


async def test_a_hung_libvirt_gives_way_to_the_pid_fallback(tmp_path: Path) -> None:
    hv = FakeHv(GUESTS, hang=True)
    with serving(tmp_path, hv):
        wd = client(tmp_path)
        t0 = time.monotonic()
        await wd.arm(0.5, ("ns:a", "ns:b"))
        await trio.sleep(0.5 + 0.3)
        assert sorted(f[:3] for f in hv.fenced) == [
            ("ns:a", DESTROY, "pid"),
            ("ns:b", PAUSE, "pid"),
        ]
        # libvirt hangs: the processes are signalled by the moment asked
        assert all(f[3] - t0 < 0.5 + 0.1 for f in hv.fenced), hv.fenced
        await wd.aclose()


async def test_many_guests_with_a_hung_libvirt_are_all_fenced_in_time(tmp_path: Path) -> None:
    names = tuple(f"ns:g{i}" for i in range(200))
    hv = FakeHv({n: GuestInfo() for n in names}, hang=True)
    with serving(tmp_path, hv):
        wd = client(tmp_path)
        t0 = time.monotonic()
        await wd.arm(0.5, names)
        await trio.sleep(0.9)
        assert sorted(f[0] for f in hv.fenced if f[2] == "pid") == sorted(names)
        assert max(f[3] for f in hv.fenced) - t0 < 0.5 + 0.2
        await wd.aclose()


def _ask(sock: socket.socket, line: bytes) -> dict[str, object]:
    sock.sendall(line + b"\n")
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = sock.recv(65536)
        assert chunk, "the fencer closed the connection"
        buf += chunk
    answer = json.loads(buf)
    assert isinstance(answer, dict)
    return answer


def test_bad_requests_are_answered_with_an_error_and_change_nothing(tmp_path: Path) -> None:
    hv = FakeHv(GUESTS)
    with serving(tmp_path, hv) as fencer:
        s = socket.socket(socket.AF_UNIX)
        s.connect(str(tmp_path / "fencer.sock"))
        s.settimeout(5.0)
        soon = clock() + 0.2
        bad = [
            b"not json",
            b"[1, 2]",
            b'{"v": 2, "op": "arm"}',
            b'{"v": 1, "op": "launch"}',
            b'{"v": 1, "op": "arm", "deadline": "soon", "guests": []}',
            b'{"v": 1, "op": "arm", "deadline": NaN, "guests": []}',
            b'{"v": 1, "op": "arm", "deadline": 1e300, "guests": []}',
            b'{"v": 1, "op": "arm", "deadline": true, "guests": []}',
            json.dumps({"v": 1, "op": "arm", "deadline": soon, "guests": "ns:a"}).encode(),
            json.dumps({"v": 1, "op": "arm", "deadline": soon, "guests": ["a;rm -rf /"]}).encode(),
            json.dumps({"v": 1, "op": "arm", "deadline": soon, "guests": ["x"] * 5000}).encode(),
            json.dumps({"v": 1, "op": "hello", "owner": "me"}).encode(),
            b"[" * 100000 + b"]" * 100000,
        ]
        for line in bad:
            answer = _ask(s, line)
            assert answer["ok"] is False and answer["error"], (line[:60], answer)
        assert fencer.dropped == len(bad)
        assert fencer.deadline is None
        # an over-long line is refused and the connection closed; the fencer serves on
        s.sendall(b"x" * (MAX_LINE + 10))
        with contextlib.suppress(OSError):
            assert _ask(s, b"")["ok"] is False
        s.close()
        s2 = socket.socket(socket.AF_UNIX)
        s2.connect(str(tmp_path / "fencer.sock"))
        s2.settimeout(5.0)
        assert _ask(s2, json.dumps({"v": 1, "op": "status"}).encode())["ok"] is True
        ok = {"v": 1, "op": "arm", "deadline": clock() + 0.1, "guests": ["ns:a"]}
        assert _ask(s2, json.dumps(ok).encode())["ok"] is True
        s2.close()
        time.sleep(0.4)
        assert [f[0] for f in hv.fenced] == ["ns:a"]
        assert math.isfinite(fencer.dropped)


def test_idle_connections_cannot_lock_the_daemon_out(tmp_path: Path) -> None:
    from dvms.runtime.fencer import MAX_CLIENTS

    with serving(tmp_path, FakeHv({})) as fencer:
        idle = []
        for _ in range(MAX_CLIENTS + 3):
            s = socket.socket(socket.AF_UNIX)
            s.connect(str(tmp_path / "fencer.sock"))
            idle.append(s)
        s = socket.socket(socket.AF_UNIX)
        s.connect(str(tmp_path / "fencer.sock"))
        s.settimeout(5.0)
        assert _ask(s, json.dumps({"v": 1, "op": "status"}).encode())["ok"] is True
        assert fencer.dropped >= 3
        for c in [*idle, s]:
            c.close()


def test_the_registry_factory_makes_a_fencer_client_per_host_uri(tmp_path: Path) -> None:
    from dvms.runtime.fencer import watchdog_factory

    wd = watchdog_factory(FAST)("qemu:///system", tmp_path)
    assert isinstance(wd, ProcessWatchdog)
    assert wd.sock_path == tmp_path / "fencer.sock" and wd.uri == "qemu:///system"
    assert wd.config == FAST


def test_the_socket_is_private_to_its_user(tmp_path: Path) -> None:
    with serving(tmp_path, FakeHv({})):
        assert (tmp_path / "fencer.sock").stat().st_mode & 0o777 == 0o600


# -- the real process ----------------------------------------------------------------------


def _fake_qemu(
    run_dir: Path, name: str, *, names_guest: bool = True, pid_file: bool = True
) -> subprocess.Popen[bytes]:
    """A process whose command line is QEMU's for ``name`` and libvirt's pid file for it."""
    arg = f"guest={name},debug-threads=on" if names_guest else "guest=other"
    p = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)", "-name", arg],
        start_new_session=True,
    )
    (run_dir / "qemu").mkdir(parents=True, exist_ok=True)
    if pid_file:
        (run_dir / "qemu" / f"{name}.pid").write_text(f"{p.pid}\n")
    return p


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def _wait(pred: object, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():  # type: ignore[operator]
            return
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


def _kill(*pids: int | None) -> None:
    for pid in pids:
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _uri(run_dir: Path) -> str:
    # a libvirtd that is not there: the fencer must fall back to the pid files
    return f"qemu+unix:///system?socket={run_dir}/libvirt-sock"


async def test_the_process_starts_in_its_own_session_and_is_started_again_when_it_died(
    tmp_path: Path,
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    wd = ProcessWatchdog(tmp_path / "state", _uri(run), FAST)
    pids: list[int] = []
    try:
        await wd.arm(30.0, ("ns:a",))
        assert wd.last_error is None, wd.last_error
        assert wd.pid is not None
        pids.append(wd.pid)
        assert os.getsid(wd.pid) != os.getsid(0)  # a kill of our group does not reach it
        st = await wd.status()
        assert st is not None and st["armed"] and st["guests"] == ["ns:a"]
        assert 25.0 < st["remaining_s"] <= 30.0 - FAST.libvirt_timeout_s  # less the start
        os.kill(wd.pid, signal.SIGKILL)
        _wait(lambda: _state(pids[0]) in ("gone", "Z"), 5.0, "the fencer to die")
        await wd.arm(30.0, ("ns:a",))
        assert wd.last_error is None, wd.last_error
        assert wd.pid is not None and wd.pid != pids[0]
        pids.append(wd.pid)
        await wd.arm(None, ())
        await wd.aclose()  # nothing armed, the daemon leaves: the fencer exits
        _wait(lambda: _state(pids[1]) in ("gone", "Z"), 5.0, "the fencer to exit")
        log = (tmp_path / "state" / "fencer.log").read_text()
        assert "nothing armed and the daemon is gone" in log
    finally:
        _kill(*pids)
        await wd.aclose()


async def test_without_libvirt_the_process_kills_or_stops_qemu_by_pid(tmp_path: Path) -> None:
    run = tmp_path / "run"
    a = _fake_qemu(run, "ns:a")
    decoy = _fake_qemu(run, "ns:c", names_guest=False)  # the pid file names another process
    b = _fake_qemu(run, "ns:b", pid_file=False)  # found by its command line
    twins = [_fake_qemu(run, "ns:d", pid_file=False) for _ in range(2)]  # ambiguous
    wd = ProcessWatchdog(tmp_path / "state", _uri(run), FAST)
    try:
        await wd.arm(0.5, ("ns:a", "ns:b", "ns:c", "ns:d", "ns:missing"))
        assert wd.last_error is None, wd.last_error
        await trio.sleep(0.5 + FAST.libvirt_timeout_s + 0.5)
        assert a.poll() == -signal.SIGKILL
        assert b.poll() == -signal.SIGKILL
        assert decoy.poll() is None  # not the guest's QEMU: left alone
        assert all(t.poll() is None for t in twins)  # two candidates: no guess
        st = await wd.status()
        assert st is not None
        hows = {e["guest"]: e["how"] for e in st["events"]}
        assert f"SIGKILL pid {a.pid}" in hows["ns:a"]
        assert "no QEMU process found" in hows["ns:c"]
        assert "no QEMU process found" in hows["ns:d"]
        assert f"SIGKILL pid {b.pid}" in hows["ns:b"]
        assert "no QEMU process found" in hows["ns:missing"]
    finally:
        _kill(wd.pid, *(p.pid for p in (a, b, decoy, *twins)))
        await wd.aclose()
        for p in (a, b, decoy, *twins):
            p.wait()


async def test_a_hung_fencer_holds_arm_a_bounded_time_and_is_reported(tmp_path: Path) -> None:
    run = tmp_path / "run"
    cfg = FencerConfig(request_timeout_s=0.5, spawn_timeout_s=3.0, owner_poll_s=0.1)
    wd = ProcessWatchdog(tmp_path / "state", _uri(run), cfg)
    pid = None
    try:
        await wd.arm(30.0, ("ns:a",))
        pid = wd.pid
        assert pid is not None and wd.last_error is None
        os.kill(pid, signal.SIGSTOP)  # alive, holds the lock and the socket, answers nothing
        t0 = time.monotonic()
        await wd.arm(30.0, ("ns:a",))
        took = time.monotonic() - t0
        assert took < 3 * cfg.request_timeout_s + cfg.spawn_timeout_s + 0.5, took
        assert wd.last_error is not None and "arm failed" in wd.last_error
        os.kill(pid, signal.SIGCONT)
        await wd.arm(30.0, ("ns:a",))
        assert wd.last_error is None and wd.pid == pid  # the same fencer, answering again
        await wd.arm(None, ())
    finally:
        if pid:
            os.kill(pid, signal.SIGCONT)
        _kill(wd.pid, pid)
        await wd.aclose()


async def test_sigterm_leaves_after_the_armed_fence_not_before(tmp_path: Path) -> None:
    run = tmp_path / "run"
    a = _fake_qemu(run, "ns:a")
    wd = ProcessWatchdog(tmp_path / "state", _uri(run), FAST)
    try:
        await wd.arm(30.0, ("ns:a",))  # starts it (up to a second on a loaded machine)
        await wd.arm(2.0, ("ns:a",))
        assert wd.pid is not None
        pid, started = wd.pid, proc_start(wd.pid)
        os.kill(pid, signal.SIGTERM)  # what a systemd unit stop sends every process
        await trio.sleep(0.5)
        assert proc_start(pid) == started and a.poll() is None  # still armed, waiting
        _wait(lambda: a.poll() is not None, 5.0, "the guest's QEMU to be killed")
        _wait(lambda: proc_start(pid) != started, 5.0, "the fencer to exit after it")
    finally:
        _kill(wd.pid, a.pid)
        await wd.aclose()
        a.wait()


async def test_a_restarted_daemon_takes_the_running_fencer_over_with_its_deadline(
    tmp_path: Path,
) -> None:
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    daemon = subprocess.Popen(
        [sys.executable, "-c", DAEMON, str(tmp_path / "state"), _uri(run), "30", "ns:a"],
        stdout=subprocess.PIPE,
        env=env,
        start_new_session=True,
    )
    fencer_pid = 0
    wd = ProcessWatchdog(tmp_path / "state", _uri(run), FAST)
    try:
        assert daemon.stdout is not None
        fencer_pid = int(daemon.stdout.readline())
        daemon.kill()
        daemon.wait()
        await trio.sleep(3 * FAST.owner_poll_s)
        st = await wd.status()  # the new daemon finds it: no second fencer
        assert st is not None and st["pid"] == fencer_pid
        assert st["armed"] and st["guests"] == ["ns:a"] and st["remaining_s"] > 20
        assert st["owner_alive"]  # we are its daemon now
        await wd.arm(None, ())
        await wd.aclose()
        _wait(lambda: _state(fencer_pid) in ("gone", "Z"), 5.0, "the fencer to exit")
    finally:
        _kill(daemon.pid, fencer_pid)
        daemon.wait()
        await wd.aclose()


DAEMON = textwrap.dedent(
    """
    import sys, trio
    from dvms.runtime.fencer import FencerConfig, ProcessWatchdog

    async def main():
        cfg = FencerConfig(libvirt_timeout_s=0.3, refresh_s=0.1, owner_poll_s=0.1)
        wd = ProcessWatchdog(sys.argv[1], sys.argv[2], cfg)
        await wd.arm(float(sys.argv[3]), tuple(sys.argv[4:]))
        print(wd.pid, flush=True)
        await trio.sleep(120)

    trio.run(main)
    """
)


@pytest.mark.parametrize("how", ["SIGSTOP", "SIGKILL"])
def test_the_fencer_fences_when_its_daemon_is_frozen_or_killed(tmp_path: Path, how: str) -> None:
    run = tmp_path / "run"
    a = _fake_qemu(run, "ns:a")
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    daemon = subprocess.Popen(
        [sys.executable, "-c", DAEMON, str(tmp_path / "state"), _uri(run), "1.5", "ns:a"],
        stdout=subprocess.PIPE,
        env=env,
        start_new_session=True,
    )
    fencer_pid = 0
    try:
        assert daemon.stdout is not None
        fencer_pid = int(daemon.stdout.readline())
        started = proc_start(fencer_pid)
        os.killpg(daemon.pid, getattr(signal, how))  # the whole group of the daemon
        t0 = time.monotonic()
        _wait(lambda: a.poll() is not None, 5.0, "the fencer to kill the guest's QEMU")
        print(f"daemon {how}: guest killed {time.monotonic() - t0:.2f} s after")
        assert a.returncode == -signal.SIGKILL
        if how == "SIGKILL":  # nothing armed, daemon gone: the fencer leaves
            _wait(lambda: proc_start(fencer_pid) != started, 5.0, "the fencer to exit")
        else:
            assert proc_start(fencer_pid) == started  # the daemon may wake and arm again
    finally:
        _kill(daemon.pid, fencer_pid, a.pid)
        daemon.wait()
        a.wait()
