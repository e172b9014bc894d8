"""High availability in the lab (``dvms lab``): real daemons, real libvirtd and QEMU,
the fencer as every host's watchdog. A vjob of HA guests booting from images fetched
through ``file:``; then

- one host's daemon is SIGSTOPped (its libvirtd and QEMU run on): its fencer stops its
  HA guests before the guardians restart them elsewhere; after SIGCONT no copy comes
  back on that host;
- another host's daemon AND libvirtd are SIGKILLed: its QEMUs are gone by the end of the
  lease (the fencer, by pid: libvirt cannot answer), and its guests boot again on the
  others within 20 s.

Checked from outside dvms: every host's libvirt (its unix socket from the root
namespace), and /proc for a host whose libvirtd is dead (its QEMUs, by network
namespace and ``-name guest=``). A sampler reads every host every 0.5 s and must never
see one guest running twice. The freeze comes first, while all four hosts are up, so
each phase has a majority of every guest's guardians alive.

One lab of 4 hosts for the module, taken down at the end pass or fail, and checked to
leave nothing (the fencers live in the hosts' network namespaces).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.real.conftest import require_lab

pytestmark = pytest.mark.real

HOSTS = 4
GUESTS = 4
NS = "ha"
#: A TCG guest's boot, on a loaded 2-core machine: seconds.
BOOT_TIMEOUT_S = 300.0
#: The acceptance bound: from the failure to each guest running on one live host.
RESTART_BOUND_S = 20.0
#: The lease (HaConfig's default); the fencer stops the guests before it ends.
LEASE_S = 10.0
#: How long the frozen daemon stays stopped.
FREEZE_S = 30.0
#: The sampler's period, seconds.
SAMPLE_S = 0.5


def _dvms(d: Path, host: str, *args: str, timeout: float = 180.0) -> Any:
    from dvms.runtime.lab import lab_socket

    cmd = [sys.executable, "-m", "dvms", "--socket", lab_socket(d, host), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(args)}: {proc.stderr.strip()}"
    return json.loads(proc.stdout) if "--json" in args else proc.stdout


def _manifest(d: Path) -> dict[str, Any]:
    return dict(json.loads((d / "lab.json").read_text()))


def _netns_inode(netns: str) -> int:
    return os.stat(f"/run/netns/{netns}").st_ino


def _qemus(netns_ino: int) -> dict[str, int]:
    """Guest (libvirt domain name) -> pid of each QEMU alive (not a zombie, not
    stopped) in the network namespace ``netns_ino``, from /proc."""
    out: dict[str, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry}/ns/net").st_ino != netns_ino:
                continue
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state in ("Z", "X", "T"):
            continue
        for flag, value in itertools.pairwise(argv):
            if flag == b"-name" and value.startswith(b"guest="):
                out[value[6:].split(b",", 1)[0].decode()] = int(entry)
    return out


@dataclass
class Sampler:
    """Every ``SAMPLE_S``, the running copies of every guest of the namespace on every
    host: through the host's libvirt, or /proc when its libvirtd is marked dead. With
    ``proc_only``, every host's QEMU processes from /proc: a second sampler that never
    waits for a busy libvirtd (a QEMU counts from its start to its exit)."""

    hosts: dict[str, str]  # host -> libvirt URI (unix socket, root namespace)
    netns: dict[str, int]  # host -> network namespace inode
    proc_only: bool = False
    dead_libvirt: set[str] = field(default_factory=set)
    samples: list[tuple[float, dict[str, list[str]]]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    #: the /proc sampler running beside this one (``doubles`` and ``gaps`` read both)
    twin: Sampler | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def read(self, conns: dict[str, Any]) -> dict[str, list[str]]:
        import libvirt

        where: dict[str, list[str]] = {}
        for host, uri in self.hosts.items():
            names: list[str] = []
            if self.proc_only or host in self.dead_libvirt:
                names = list(_qemus(self.netns[host]))
            else:
                try:
                    if host not in conns:
                        conns[host] = libvirt.open(uri)
                    doms = conns[host].listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)
                    for dom in doms:
                        with contextlib.suppress(libvirt.libvirtError):  # gone meanwhile
                            if dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING:
                                names.append(dom.name())
                except libvirt.libvirtError as exc:
                    conns.pop(host, None)
                    self.errors.append(f"{host}: {exc}")
                    names = list(_qemus(self.netns[host]))  # what runs there anyway
            for n in names:
                if n.startswith(f"{NS}:"):
                    where.setdefault(n.removeprefix(f"{NS}:"), []).append(host)
        return where

    def run(self) -> None:
        import libvirt

        if not self.proc_only:
            libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
        conns: dict[str, Any] = {}
        next_at = time.monotonic()
        while not self._stop.is_set():
            where = self.read(conns)
            self.samples.append((time.monotonic(), where))
            next_at += SAMPLE_S
            self._stop.wait(max(0.0, next_at - time.monotonic()))
        for c in conns.values():
            with contextlib.suppress(Exception):
                c.close()

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30.0)

    def since(self, t0: float) -> list[tuple[float, dict[str, list[str]]]]:
        return [(t, w) for t, w in list(self.samples) if t >= t0]

    def last(self) -> dict[str, list[str]]:
        return self.samples[-1][1] if self.samples else {}

    def doubles(self) -> list[tuple[float, str, list[str]]]:
        mine = [(t, g, hs) for t, w in list(self.samples) for g, hs in w.items() if len(hs) > 1]
        return mine + (self.twin.doubles() if self.twin is not None else [])

    def gaps(self, t0: float) -> str:
        """The largest interval between two samples since ``t0``, of both samplers."""
        text = f"libvirt: {len(self.since(t0))} samples, largest gap {self.max_gap(t0):.2f} s"
        if self.twin is not None:
            twin = self.twin
            text += f"; /proc: {len(twin.since(t0))}, largest gap {twin.max_gap(t0):.2f} s"
        return text

    def timeline(self, t0: float) -> str:
        """Every change of where the guests run from 1 s before ``t0``, seconds after it."""
        lines, last = [], None
        for t, w in self.since(t0 - 1.0):
            now = {g: sorted(hs) for g, hs in sorted(w.items())}
            if now != last:
                lines.append(f"  {t - t0:6.1f} s  {now}")
                last = now
        return "\n".join(lines)

    def max_gap(self, t0: float) -> float:
        ts = [t for t, _ in self.since(t0)]
        return max((b - a for a, b in itertools.pairwise(ts)), default=0.0)


def _wait(pred: Any, timeout: float, what: str, poll: float = 0.1) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if got := pred():
            return got
        time.sleep(poll)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    require_lab()
    from dvms.runtime.lab import LabConfig, lab_down, lab_up

    d = Path(tempfile.mkdtemp(prefix="dvms-halab-"))
    left: list[str] | None = None
    try:
        lab_up(d, HOSTS, LabConfig(host_cpus=2.0))
        yield d
    finally:
        with contextlib.suppress(Exception):
            for h in _manifest(d)["hosts"]:  # a frozen daemon, should a test fail mid-way
                with contextlib.suppress(ProcessLookupError, KeyError):
                    os.kill(int(h["daemon_pid"]), signal.SIGCONT)
        _keep_logs(d, tmp_path_factory.mktemp("halab-logs"))
        with contextlib.suppress(Exception):
            left = lab_down(d)
        shutil.rmtree(d, ignore_errors=True)
    assert left == [], f"lab down left {left}"


def _keep_logs(d: Path, to: Path) -> None:
    """The daemons' and fencers' logs, kept past ``lab down`` (pytest's temporary
    directory): what a failure is read from."""
    for i in range(1, HOSTS + 1):
        for name in ("node.log", "fencer.log"):
            with contextlib.suppress(OSError):
                shutil.copy(d / f"host{i}" / "dvms" / name, to / f"host{i}-{name}")
    print(f"lab logs: {to}")


@pytest.fixture(scope="module")
def guests(lab: Path) -> Iterator[Sampler]:
    """The HA vjob, booted, every host holding its images; the sampler running."""
    from dvms.hypervisor.lab.guest import build_lab_guest
    from dvms.runtime.lab import console_text, lab_status, lab_vjob, wait_until

    g = build_lab_guest()
    for part, path in (("kernel", g.kernel), ("initrd", g.initrd)):
        _dvms(lab, "host1", "--json", "file", "add", str(path), "--name", f"lab/{part}")
    # every host holds the images before anything fails: a restart does not wait for them
    for i in range(2, HOSTS + 1):
        for part in ("kernel", "initrd"):
            _dvms(lab, f"host{i}", "--json", "file", "get", f"lab/{part}", "--wait")
    vjob = lab / "vjob.toml"
    text = lab_vjob(
        "file:lab/kernel", "file:lab/initrd", GUESTS, namespace=NS, spread=False, ha=True
    )
    vjob.write_text(text)
    out = _dvms(lab, "host1", "--json", "submit", str(vjob))
    assert len(out["placed"]) == GUESTS, out
    wait_until(
        lambda: all("GUEST UP" in console_text(lab, NS, f"g{i}") for i in range(1, GUESTS + 1)),
        BOOT_TIMEOUT_S,
        "every guest to print GUEST UP on its console",
        poll=1.0,
    )
    rows = lab_status(lab)
    uris = {r["name"]: r["libvirt_uri"] for r in rows}
    inodes = {r["name"]: _netns_inode(r["netns"]) for r in rows}
    sampler = Sampler(uris, inodes)
    procs = Sampler(uris, inodes, proc_only=True)
    sampler.twin = procs
    sampler.start()
    procs.start()
    try:
        _wait(lambda: len(sampler.samples) >= 2, 30.0, "the first samples")
        where = sampler.last()
        assert sorted(where) == [f"g{i}" for i in range(1, GUESTS + 1)], where
        assert all(len(h) == 1 for h in where.values()), where
        # every guest adopted under a lease: its owner renews with its guardians
        _wait(lambda: _owned(lab) >= GUESTS, 60.0, "every guest to be owned under a lease", 1.0)
        print(f"placed: { {g: h[0] for g, h in sorted(where.items())} }")
        yield sampler
    finally:
        sampler.stop()
        procs.stop()
        if sampler.errors:
            print(f"sampler: {len(sampler.errors)} libvirt errors, first {sampler.errors[0]}")


def _owned(d: Path) -> int:
    from dvms.runtime.lab import lab_call

    n = 0
    for h in _manifest(d)["hosts"]:
        with contextlib.suppress(Exception):
            st = lab_call(d, h["name"], "debug_ha", timeout=10.0)
            n += st.get("owned", 0) - st.get("fenced", 0)
    return n


def _victim(where: dict[str, list[str]], avoid: set[str]) -> tuple[str, list[str]]:
    """The host running the most guests (host1, the files' seed, last)."""
    by_host: dict[str, list[str]] = {}
    for g, hs in where.items():
        by_host.setdefault(hs[0], []).append(g)
    ranked = sorted(by_host.items(), key=lambda kv: (kv[0] in avoid, -len(kv[1]), kv[0]))
    host, names = ranked[0]
    return host, sorted(names)


def _restarts(
    sampler: Sampler, t0: float, names: list[str], origin: str, bound: float
) -> dict[str, tuple[float, str]]:
    """Seconds from ``t0`` until each guest runs on exactly one host other than
    ``origin`` (and not on ``origin``), and that host."""
    done: dict[str, tuple[float, str]] = {}

    def all_moved() -> bool:
        for t, where in sampler.since(t0):
            for g in names:
                hs = where.get(g, [])
                if g not in done and len(hs) == 1 and hs[0] != origin:
                    done[g] = (t - t0, hs[0])
        return len(done) == len(names)

    _wait(all_moved, bound + 30.0, f"{names} to run again off {origin}", poll=0.25)
    return done


def _report(what: str, done: dict[str, tuple[float, str]]) -> None:
    each = ", ".join(f"{g}->{h} {s:.1f} s" for g, (s, h) in sorted(done.items()))
    print(f"{what}: restarted {each}; max {max(s for s, _ in done.values()):.1f} s")


def test_1_a_frozen_daemons_guests_are_stopped_by_its_fencer_before_they_restart(
    lab: Path, guests: Sampler
) -> None:
    sampler = guests
    where = sampler.last()
    host, names = _victim(where, {"host1"})
    row = next(h for h in _manifest(lab)["hosts"] if h["name"] == host)
    pid = int(row["daemon_pid"])
    t0 = time.monotonic()
    os.kill(pid, signal.SIGSTOP)
    try:
        # the fencer stops them through libvirt (which runs on) by the lease's end: their
        # QEMUs exit (the /proc sampler: libvirt's answers lag while it destroys them)
        procs = sampler.twin
        assert procs is not None

        def off_host() -> float | None:
            for t, w in procs.since(t0):
                if not any(host in w.get(g, []) for g in names):
                    return t - t0
            return None

        stopped = _wait(
            off_host,
            LEASE_S + 20.0,
            f"{names} to stop on {host}",
        )
        done = _restarts(sampler, t0, names, host, RESTART_BOUND_S)
        print(f"{host} daemon SIGSTOPped: its {names} stopped by its fencer {stopped:.1f} s after")
        _report(f"{host} frozen", done)
        print(sampler.timeline(t0))
        time.sleep(max(0.0, t0 + FREEZE_S - time.monotonic()))
    finally:
        os.kill(pid, signal.SIGCONT)
    woke = time.monotonic()
    time.sleep(10.0)
    after = sampler.since(woke)
    back = [(t - woke, g) for t, w in after for g in names if host in w.get(g, [])]
    assert not back, f"copies came back on {host} after SIGCONT: {back}"
    # the woken daemon fenced its stale copies too: destroyed by the fencer, undefined now
    defined = _defined(sampler.hosts[host])
    print(f"{host} after SIGCONT: domains defined there {defined}")
    assert not [g for g in names if f"{NS}:{g}" in defined], defined
    assert all(len(after[-1][1].get(g, [])) == 1 for g in names), after[-1]
    fencer_log = (Path(row["state_dir"]) / "fencer.log").read_text()
    assert all(f"fenced {NS}:{g} " in fencer_log for g in names), fencer_log
    assert stopped <= LEASE_S + SAMPLE_S, f"stopped {stopped:.1f} s after the freeze"
    assert all(s <= RESTART_BOUND_S for s, _ in done.values()), done
    assert not sampler.doubles(), sampler.doubles()[:5]
    print(f"sampled since the failure: {sampler.gaps(t0)}")


def test_2_a_killed_daemon_and_libvirtd_their_guests_boot_on_the_others(
    lab: Path, guests: Sampler
) -> None:
    from dvms.runtime.lab import console_text, lab_call, wait_until

    sampler = guests
    # the frozen host of test 1 is back and renews: every guest owned under a lease
    _wait(lambda: _owned(lab) >= GUESTS, 60.0, "every guest to be owned under a lease", 1.0)
    where = sampler.last()
    host, names = _victim(where, {"host1"})
    row = next(h for h in _manifest(lab)["hosts"] if h["name"] == host)
    qemus = {g: p for g, p in _qemus(sampler.netns[host]).items() if g.startswith(f"{NS}:")}
    assert sorted(qemus) == [f"{NS}:{g}" for g in names], (qemus, names)
    boots = {g: console_text(lab, NS, g).count("GUEST UP") for g in names}
    sampler.dead_libvirt.add(host)
    t0 = time.monotonic()
    os.kill(int(row["daemon_pid"]), signal.SIGKILL)
    os.kill(int(row["libvirtd_pid"]), signal.SIGKILL)

    def qemus_gone() -> float | None:
        alive = [p for p in qemus.values() if _alive(p)]
        return None if alive else time.monotonic() - t0

    gone = _wait(qemus_gone, LEASE_S + 20.0, f"{host}'s QEMUs {qemus} to end", poll=0.05)
    done = _restarts(sampler, t0, names, host, RESTART_BOUND_S)
    print(f"{host} daemon + libvirtd SIGKILLed: its QEMUs {sorted(qemus)} gone {gone:.2f} s after")
    _report(f"{host} killed", done)
    for h in sampler.hosts:
        if h != host:
            with contextlib.suppress(Exception):
                print(f"{h} debug_ha: {lab_call(lab, h, 'debug_ha', timeout=10.0)}")
    assert gone <= LEASE_S, f"{host}'s QEMUs ran {gone:.1f} s, past the lease"
    assert all(s <= RESTART_BOUND_S for s, _ in done.values()), done
    fencer_log = (Path(row["state_dir"]) / "fencer.log").read_text()
    assert all(f"fenced {NS}:{g} " in fencer_log for g in names), fencer_log
    # they boot again (kernel and initrd through file: on their new hosts)
    wait_until(
        lambda: all(console_text(lab, NS, g).count("GUEST UP") > boots[g] for g in names),
        BOOT_TIMEOUT_S,
        f"{names} to print GUEST UP again",
        poll=1.0,
    )
    print(f"{names} printed GUEST UP again {time.monotonic() - t0:.1f} s after the kill")
    print(sampler.timeline(t0))
    assert not sampler.doubles(), sampler.doubles()[:5]
    final = sampler.last()
    assert sorted(final) == [f"g{i}" for i in range(1, GUESTS + 1)], final
    assert all(len(hs) == 1 and hs[0] != host for hs in final.values()), final
    print(f"sampled since the failure: {sampler.gaps(t0)}")


def _defined(uri: str) -> list[str]:
    """Every domain the libvirtd at ``uri`` knows, running or not (virsh)."""
    out = subprocess.run(
        ["virsh", "-c", uri, "list", "--all", "--name"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return [n for n in out.stdout.split() if n]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")
