"""The fencing watchdog against a real libvirtd and real QEMU guests.

One lab host (a libvirtd in its own network and mount namespaces,
``dvms.hypervisor.lab.daemons``) per test; HA guests are defined directly through
libvirt with dvms' ``<dvms:ha fence= generation=>`` metadata. The guests have no disk
(QEMU runs its firmware, looking for a boot device): fencing needs a running QEMU, not
a booted guest. Checked from outside the fencer: libvirt's domain states and
``/proc/PID/stat`` of each QEMU.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.real.conftest import require_root, require_tools

pytestmark = pytest.mark.real

#: Starting a TCG QEMU on a loaded 2-core machine, seconds.
START_TIMEOUT_S = 60.0
#: Seconds the fencer is armed for.
ARM_S = 2.0

NS = "https://dvms.invalid/xmlns/vm/1"


def _requirements() -> None:
    require_root("network + mount namespaces, libvirtd")
    require_tools("libvirtd", "virtlogd", "qemu-system-x86_64", "ip", "unshare")
    pytest.importorskip("libvirt", reason="libvirt-python not installed")


@pytest.fixture
def host(run_tag: str) -> Iterator[Any]:
    _requirements()
    from dvms.hypervisor.lab.daemons import LibvirtdNode, kvm_group_fix, netns_add, netns_del, sh

    work = Path(tempfile.mkdtemp(prefix="dvms-fencer-"))
    netns = f"{run_tag}fe"
    node = LibvirtdNode("fhost", work / "host", netns, "10.234.0.1")
    try:
        with kvm_group_fix():
            netns_add(netns)
            # libvirtd listens on the host's address: loopback holds it
            sh("ip", "-n", netns, "addr", "add", f"{node.ip}/32", "dev", "lo")
            node.start()
            node.wait_ready()
            yield node
    finally:
        node.stop()
        netns_del(netns)
        shutil.rmtree(work, ignore_errors=True)


def _domain_xml(name: str, fence: str, generation: int) -> str:
    return f"""<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>32</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64'>hvm</type></os>
  <metadata>
    <dvms:vm xmlns:dvms='{NS}' namespace='ft'>
      <dvms:ha generation='{generation}' fence='{fence}'/>
    </dvms:vm>
  </metadata>
  <devices><emulator>/usr/bin/qemu-system-x86_64</emulator></devices>
</domain>"""


def _start(node: Any, guests: dict[str, str]) -> dict[str, int]:
    """Start transient guests ``name -> fence``; their QEMU pids."""
    import libvirt

    conn = libvirt.open(node.uri)
    try:
        for i, (name, fence) in enumerate(guests.items()):
            conn.createXML(_domain_xml(name, fence, i + 1), 0)
    finally:
        conn.close()
    return {name: _qemu_pid(node, name) for name in guests}


def _qemu_pid(node: Any, name: str) -> int:
    return int((node.root / "run" / "qemu" / f"{name}.pid").read_text())


def _proc_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def _states(node: Any) -> dict[str, int]:
    import libvirt

    conn = libvirt.open(node.uri)
    out = {}
    try:
        for d in conn.listAllDomains():
            with contextlib.suppress(libvirt.libvirtError):  # gone since the listing
                out[d.name()] = d.state()[0]
    finally:
        conn.close()
    return out


def _wait(pred: Callable[[], Any], timeout: float, what: str, log: Path | None = None) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if got := pred():
            return got
        time.sleep(0.05)
    text = log.read_text() if log is not None and log.exists() else ""
    pytest.fail(f"timed out waiting for {what}\n{text}")


def _kill(*pids: int | None) -> None:
    for pid in pids:
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                os.kill(pid, signal.SIGCONT)


def _paused(node: Any, pid: int) -> bool:
    """Paused by libvirt, or its QEMU stopped by the fencer (libvirt did not answer in
    time: libvirt still says running then)."""
    import libvirt

    return _states(node).get("ft:b") == libvirt.VIR_DOMAIN_PAUSED or _proc_state(pid) == "T"


def _destroyed(how: str, pid: int) -> bool:
    """Whether a fence event says the guest was destroyed: libvirt's destroy (SIGTERM,
    a wait, SIGKILL, then its own cleanup) may outlast ``libvirt_timeout_s`` on a loaded
    machine; the fencer then finds the QEMU gone or kills it itself."""
    late = "libvirt did not answer within "
    return how == "destroyed through libvirt" or (
        how.startswith(late)
        and how.endswith((f"; its QEMU (pid {pid}) has exited", f"; SIGKILL pid {pid}"))
    )


async def _armed_and_known(wd: Any, names: set[str]) -> None:
    """Wait until the fencer read every guest's pid and metadata through libvirt."""
    import trio

    with trio.fail_after(30.0):
        while True:
            st = await wd.status()
            if st and {g for g, k in st["known"].items() if k["pid"]} >= names:
                return
            await trio.sleep(0.1)


async def test_a_fencer_that_is_not_rearmed_destroys_and_pauses_through_libvirt(
    host: Any, tmp_path: Path
) -> None:
    import libvirt
    import trio

    from dvms.runtime.fencer import FencerConfig, ProcessWatchdog

    pids = _start(host, {"ft:a": "destroy", "ft:b": "pause"})
    wd = ProcessWatchdog(tmp_path / "state", host.uri, FencerConfig(refresh_s=0.5))
    try:
        t0 = time.monotonic()
        await wd.arm(ARM_S, tuple(pids))
        assert wd.last_error is None, wd.last_error
        await _armed_and_known(wd, set(pids))
        st = await wd.status()
        assert st is not None
        assert st["known"]["ft:b"]["fence"] == "pause" and st["known"]["ft:b"]["generation"] == 2
        running = libvirt.VIR_DOMAIN_RUNNING
        assert _states(host) == {"ft:a": running, "ft:b": running}
        # the fence starts libvirt_timeout_s before the moment asked
        early = ARM_S - wd.config.libvirt_timeout_s
        await trio.sleep(max(0.0, t0 + early - time.monotonic() - 0.3))
        assert _states(host)["ft:a"] == libvirt.VIR_DOMAIN_RUNNING  # not before the deadline
        log = tmp_path / "state" / "fencer.log"
        gone = ("gone", "Z")
        _wait(lambda: _proc_state(pids["ft:a"]) in gone, 10.0, "ft:a's QEMU to exit", log)
        qemu_gone_s = time.monotonic() - t0
        _wait(lambda: "ft:a" not in _states(host), 10.0, "ft:a destroyed", log)
        _wait(lambda: _paused(host, pids["ft:b"]), 10.0, "ft:b paused", log)
        assert _proc_state(pids["ft:a"]) in ("gone", "Z")
        st = await wd.status()
        assert st is not None
        hows = {e["guest"]: e["how"] for e in st["events"]}
        # libvirt's destroy (SIGTERM, wait, SIGKILL) may outlast libvirt_timeout_s on a
        # loaded machine: the fencer then finds the QEMU gone or kills it itself
        assert _destroyed(hows["ft:a"], pids["ft:a"]), hows
        assert hows["ft:b"] in (
            "paused through libvirt",
            f"libvirt did not answer within 0.5 s; SIGSTOP pid {pids['ft:b']}",
        ), hows
        after = {e["guest"]: e["after_deadline_s"] for e in st["events"]}
        print(f"armed for {ARM_S} s, not renewed: {qemu_gone_s:.2f} s to ft:a's QEMU exit")
        print(f"fence events {after} s after the fencer's deadline: {hows}")
    finally:
        _kill(wd.pid, *pids.values())
        await wd.aclose()


@pytest.mark.parametrize("how", ["SIGKILL", "SIGSTOP"])
async def test_with_libvirtd_killed_or_hung_the_fencer_kills_or_stops_qemu_by_pid(
    host: Any, tmp_path: Path, how: str
) -> None:
    import trio

    from dvms.runtime.fencer import FencerConfig, ProcessWatchdog

    pids = _start(host, {"ft:c": "destroy", "ft:d": "pause"})
    wd = ProcessWatchdog(tmp_path / "state", host.uri, FencerConfig(refresh_s=0.5))
    try:
        await wd.arm(30.0, tuple(pids))
        await _armed_and_known(wd, set(pids))
        os.kill(host.pid, getattr(signal, how))  # libvirtd; QEMU runs on
        down = ("T",) if how == "SIGSTOP" else ("gone", "Z")
        _wait(lambda: _proc_state(host.pid) in down, 10.0, f"libvirtd to get {how}")
        assert all(_proc_state(p) in ("S", "R") for p in pids.values())
        t0 = time.monotonic()
        await wd.arm(ARM_S, tuple(pids))
        _wait(lambda: _proc_state(pids["ft:c"]) in ("gone", "Z"), 10.0, "ft:c's QEMU killed")
        _wait(lambda: _proc_state(pids["ft:d"]) == "T", 10.0, "ft:d's QEMU stopped")
        print(f"libvirtd {how}: QEMU killed/stopped {time.monotonic() - t0:.2f} s after arming")
        st = await wd.status()
        assert st is not None
        hows = {e["guest"]: e["how"] for e in st["events"]}
        assert hows["ft:c"].endswith(f"SIGKILL pid {pids['ft:c']}"), hows
        assert hows["ft:d"].endswith(f"SIGSTOP pid {pids['ft:d']}"), hows
        await trio.sleep(0.5)
        assert _proc_state(pids["ft:d"]) == "T"  # paused, not killed
    finally:
        _kill(wd.pid, *pids.values())
        with contextlib.suppress(ProcessLookupError):
            os.kill(host.pid, signal.SIGCONT)
        await wd.aclose()


DAEMON = """
import sys, trio
from dvms.runtime.fencer import FencerConfig, ProcessWatchdog

async def main():
    wd = ProcessWatchdog(sys.argv[1], sys.argv[2], FencerConfig(refresh_s=0.5))
    await wd.arm(30.0, tuple(sys.argv[4:]))
    while not (st := await wd.status())["known"] or not all(
        k["pid"] for k in st["known"].values()
    ):
        await trio.sleep(0.1)
    await wd.arm(float(sys.argv[3]), tuple(sys.argv[4:]))
    print(wd.pid, flush=True)
    await trio.sleep(120)

trio.run(main)
"""


@pytest.mark.parametrize("how", ["SIGSTOP", "SIGKILL"])
def test_the_fencer_keeps_working_when_its_daemon_is_frozen_or_killed(
    host: Any, tmp_path: Path, how: str
) -> None:
    pids = _start(host, {"ft:e": "destroy"})
    daemon = subprocess.Popen(
        [sys.executable, "-c", DAEMON, str(tmp_path / "state"), host.uri, str(ARM_S), "ft:e"],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
        start_new_session=True,
    )
    fencer = 0
    try:
        assert daemon.stdout is not None
        fencer = int(daemon.stdout.readline())
        t0 = time.monotonic()
        os.killpg(daemon.pid, getattr(signal, how))  # the daemon's whole process group
        gone = ("gone", "Z")
        _wait(lambda: _proc_state(pids["ft:e"]) in gone, 10.0, "ft:e's QEMU to exit")
        exited_s = time.monotonic() - t0
        print(
            f"daemon {how}, {ARM_S} s before the moment asked: QEMU exited {exited_s:.2f} s after"
        )
        _wait(lambda: "ft:e" not in _states(host), 10.0, "ft:e destroyed")
        log = (tmp_path / "state" / "fencer.log").read_text()
        line = next(x for x in log.splitlines() if "fenced ft:e (destroy, generation 1) " in x)
        assert _destroyed(line.split("deadline: ", 1)[1], pids["ft:e"]), log
        print(line)
        if how == "SIGKILL":
            _wait(lambda: _proc_state(fencer) in ("gone", "Z"), 10.0, "the fencer to exit")
        else:
            assert _proc_state(fencer) in ("S", "R")
    finally:
        _kill(daemon.pid, fencer, *pids.values())
        daemon.wait()


def test_a_lab_style_host_fences_by_pid_found_in_its_network_namespace(
    host: Any, tmp_path: Path
) -> None:
    """Like a lab host: the daemon (and so its fencer) runs in the host's network
    namespace and reaches libvirtd over ``qemu+tcp``; libvirtd's /run is private, so
    there is no pid file where the fencer looks. It finds QEMU by its command line in
    its own network namespace and kills it by pid once libvirtd is dead."""
    pids = _start(host, {"ft:f": "destroy"})
    uri = f"qemu+tcp://{host.ip}/system"
    in_netns = ["ip", "netns", "exec", host.netns, sys.executable]
    daemon = subprocess.Popen(
        [*in_netns, "-c", DAEMON, str(tmp_path / "state"), uri, "30", "ft:f"],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
        start_new_session=True,
    )
    fencer = 0
    try:
        assert daemon.stdout is not None
        fencer = int(daemon.stdout.readline())  # it knows ft:f's pid now
        os.kill(host.pid, signal.SIGKILL)
        _wait(lambda: _proc_state(host.pid) in ("gone", "Z"), 10.0, "libvirtd to die")
        os.kill(daemon.pid, signal.SIGKILL)  # the daemon too; the fencer holds 30 s
        # a new daemon of the host takes the fencer over and arms it for 1 s
        again = subprocess.run(
            [*in_netns, "-c", REARM, str(tmp_path / "state"), uri, "1.0", "ft:f"],
            env={**os.environ, "PYTHONPATH": os.getcwd()},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert again.returncode == 0, again.stderr
        _wait(lambda: _proc_state(pids["ft:f"]) in ("gone", "Z"), 10.0, "ft:f's QEMU killed")
        log = (tmp_path / "state" / "fencer.log").read_text()
        assert f"SIGKILL pid {pids['ft:f']}" in log, log
        _wait(lambda: _proc_state(fencer) in ("gone", "Z"), 10.0, "the fencer to exit")
    finally:
        _kill(daemon.pid, fencer, *pids.values())
        daemon.wait()


REARM = """
import sys, trio
from dvms.runtime.fencer import FencerConfig, ProcessWatchdog

async def main():
    wd = ProcessWatchdog(sys.argv[1], sys.argv[2], FencerConfig(refresh_s=0.5))
    await wd.arm(float(sys.argv[3]), tuple(sys.argv[4:]))
    assert wd.last_error is None, wd.last_error
    await wd.aclose()

trio.run(main)
"""
