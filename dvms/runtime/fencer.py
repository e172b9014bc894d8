"""The per-host fencing watchdog: a small process that stops the host's HA guests when
the daemon stops arming it.

A daemon that is frozen (SIGSTOP, a wedged event loop) or killed does not stop QEMU, so
its HA guests would run on beside the copies the guardians restart elsewhere. The HA
core emits ``ArmWatchdog(until)`` every time the host's earliest lease moves; the
daemon passes it here (``ProcessWatchdog.arm``). The fencer process holds the deadline
and, if it passes without a newer arming, fences every armed guest:

```
 daemon (trio)                              fencer process (own session, stdlib only)
 ProcessWatchdog.arm(remaining_s, guests)
   deadline := clock() + remaining_s
               - libvirt_timeout_s
   {"op": "arm", "deadline", "guests"} --->  unix socket <state>/fencer.sock (0600)
                                       <---  {"ok": true}
                                             every refresh_s while armed, libvirt (a
                                             worker thread): per guest the <dvms:ha fence
                                             generation> metadata, QEMU's pid (libvirt's
                                             pid file, else a /proc scan of this network
                                             namespace) and the pid's start time
                                             clock() >= deadline:
                                               libvirt destroy / suspend, each guest,
                                               within libvirt_timeout_s; else
                                               SIGKILL / SIGSTOP of the remembered QEMU
                                               pid (still that guest's QEMU: same start
                                               time, cmdline names the guest)
                                             nothing armed and the daemon gone: exit
```

The deadline is on the host's boot clock (``clock()``: CLOCK_BOOTTIME, one clock for
every process of the host, which unlike CLOCK_MONOTONIC also runs while the machine is
suspended), so the daemon converts "seconds from now" once and the message's own delay
does not move it. The process imports only the standard library (libvirt lazily,
in its worker thread), so it starts in a fraction of a second and does not depend on
anything the daemon holds. Its own session keeps it alive through a kill of the
daemon's process group. Requests are JSON lines of at most ``MAX_LINE`` bytes from the
same user (the socket is 0600 and the peer's uid is checked); anything else is dropped
and counted, never a crash.

Run as ``python -m dvms.runtime.fencer --state-dir DIR --uri URI --owner PID``; the
daemon's ``ProcessWatchdog`` starts it and starts it again if it died.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import os
import re
import selectors
import signal
import socket
import struct
import sys
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeGuard

__all__ = [
    "DESTROY",
    "METADATA_NS",
    "PAUSE",
    "Fencer",
    "FencerConfig",
    "GuestInfo",
    "Hypervisor",
    "LibvirtHost",
    "ProcessWatchdog",
    "clock",
    "main",
    "parse_ha_metadata",
    "run_dir_for",
    "scan_qemus",
    "watchdog_factory",
]

#: dvms' domain metadata namespace (``dvms.hypervisor.domxml.METADATA_NS``; repeated
#: here so the fencer imports nothing of dvms; a test keeps the two equal).
METADATA_NS = "https://dvms.invalid/xmlns/vm/1"
PROTOCOL = 1
DESTROY = "destroy"
PAUSE = "pause"
#: One request line, bytes: 4,096 names of 200 characters fit.
MAX_LINE = 1 << 20
#: Guests per arming.
MAX_GUESTS = 4096
#: An arming further ahead than this is refused, seconds.
MAX_ARM_S = 86400.0
#: Connected clients at once (the daemon needs one; tests and tools a few more).
MAX_CLIENTS = 8
#: libvirt calls at once when fencing (each guest's destroy or suspend).
FENCE_THREADS = 16
#: Fence events kept for ``status``.
MAX_EVENTS = 256
#: libvirt domain names the fencer accepts: ``namespace:name`` of dvms, no commas (QEMU's
#: ``-name guest=...`` escapes them) and nothing a shell or XML would interpret.
_GUEST_RE = re.compile(r"[A-Za-z0-9_.:-]{1,200}")


@dataclass(frozen=True, slots=True)
class FencerConfig:
    """The fencing watchdog process and its client. Times in seconds (all ours)."""

    #: One connect + request + answer from the daemon to the fencer; ``arm`` gives up
    #: after this (and after ``spawn_timeout_s`` when it must start the process).
    request_timeout_s: float = 1.0
    #: Starting the fencer process until its socket answers.
    spawn_timeout_s: float = 5.0
    #: At the deadline, libvirt gets this long to destroy or pause each guest before the
    #: fencer signals the QEMU process itself.
    libvirt_timeout_s: float = 0.5
    #: While armed, the fencer reads each guest's metadata and QEMU pid this often.
    refresh_s: float = 2.0
    #: The fencer checks this often whether the daemon that started it is alive.
    owner_poll_s: float = 1.0


# -- what the fencer knows of a guest ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class GuestInfo:
    """A guest as last seen through libvirt: the fence action and generation of its
    ``<dvms:ha>`` metadata, its QEMU pid and that process's start time (clock ticks
    since boot, field 22 of ``/proc/PID/stat``; tells a reused pid apart)."""

    fence: str = DESTROY
    generation: int | None = None
    pid: int | None = None
    start: int | None = None


def clock() -> float:
    """Seconds on the host's boot clock (CLOCK_BOOTTIME: one clock for every process of
    the host, like CLOCK_MONOTONIC, but it also runs while the machine is suspended, as
    the guardians' leases do). Deadlines between the daemon and its fencer are on it."""
    return time.clock_gettime(_CLOCK)


_CLOCK = getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC)


def parse_ha_metadata(xml: str) -> tuple[str, int | None]:
    """(fence action, generation) of ``<metadata><dvms:vm><dvms:ha fence= generation=>``;
    (destroy, None) when absent or unreadable."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return DESTROY, None
    ha = root.find(f"metadata/{{{METADATA_NS}}}vm/{{{METADATA_NS}}}ha")
    if ha is None:
        return DESTROY, None
    fence = PAUSE if ha.get("fence") == PAUSE else DESTROY
    try:
        generation: int | None = int(ha.get("generation", ""))
    except ValueError:
        generation = None
    return fence, generation


def run_dir_for(uri: str) -> Path:
    """libvirt's run directory for ``uri``: the directory of its ``socket=`` when given
    (a private libvirtd), else ``/run/libvirt``. QEMU pid files are ``qemu/NAME.pid``
    under it."""
    m = re.search(r"[?&]socket=([^&]+)", uri)
    if m:
        return Path(m.group(1)).parent
    if "/session" in uri:
        return Path(os.environ.get("XDG_RUNTIME_DIR", f"/run/user/{os.getuid()}")) / "libvirt"
    return Path("/run/libvirt")


def proc_start(pid: int) -> int | None:
    """Start time of ``pid`` (field 22 of /proc/PID/stat), None when it is gone or a
    zombie (exited, not yet reaped)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return None if fields[0] in ("Z", "X") else int(fields[19])
    except (OSError, ValueError, IndexError):
        return None


def proc_names_guest(pid: int, name: str) -> bool:
    """Whether ``pid``'s command line is QEMU's for guest ``name`` (``-name guest=NAME``)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    want = f"guest={name}".encode()
    return any(a == want or a.startswith(want + b",") for a in argv)


def qemu_pid(run_dir: Path, name: str) -> tuple[int, int] | None:
    """(pid, start) of guest ``name``'s QEMU from libvirt's pid file, if that process is
    alive and names the guest."""
    try:
        pid = int((run_dir / "qemu" / f"{name}.pid").read_text().strip())
    except (OSError, ValueError):
        return None
    start = proc_start(pid)
    if pid <= 1 or start is None or not proc_names_guest(pid, name):
        return None
    return pid, start


def _guest_of(argv: list[bytes]) -> str | None:
    """The guest name of QEMU's ``-name guest=NAME[,...]`` in ``argv``, if any."""
    for flag, value in itertools.pairwise(argv):
        if flag == b"-name" and value.startswith(b"guest="):
            return value[6:].split(b",", 1)[0].decode(errors="replace")
    return None


def scan_qemus(names: set[str]) -> dict[str, tuple[int, int]]:
    """(pid, start) of each guest in ``names`` whose QEMU (``-name guest=NAME``) runs in
    this process's network namespace, found through /proc: the fallback when libvirt's
    pid file is not where the fencer looks (a libvirtd with a private /run). A name
    matched by two processes is left out: the fencer never signals a guess."""
    try:
        own = os.stat("/proc/self/ns/net").st_ino
        entries = os.listdir("/proc")
    except OSError:
        return {}
    found: dict[str, list[int]] = {}
    for entry in entries:
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            if os.stat(f"/proc/{entry}/ns/net").st_ino != own:
                continue
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        guest = _guest_of(argv)
        if guest in names:
            found.setdefault(guest, []).append(int(entry))
    out = {}
    for guest, pids in found.items():
        if len(pids) == 1 and (start := proc_start(pids[0])) is not None:
            out[guest] = (pids[0], start)
    return out


def find_qemu(run_dir: Path, name: str) -> tuple[int, int] | None:
    """The guest's QEMU: libvirt's pid file, else a /proc scan of this network namespace."""
    return qemu_pid(run_dir, name) or scan_qemus({name}).get(name)


def signal_guest(name: str, info: GuestInfo, run_dir: Path, action: str) -> str:
    """SIGKILL (destroy) or SIGSTOP (pause) the guest's QEMU: the remembered pid if it is
    still the same process naming the guest, else the one ``find_qemu`` finds."""
    target: tuple[int, int] | None = None
    exited = False
    if info.pid is not None and info.start is not None:
        if proc_start(info.pid) != info.start:
            exited = True
        elif proc_names_guest(info.pid, name):
            target = (info.pid, info.start)
    if target is None:
        target = find_qemu(run_dir, name)
    if target is None:
        return f"its QEMU (pid {info.pid}) has exited" if exited else "no QEMU process found"
    sig = signal.SIGSTOP if action == PAUSE else signal.SIGKILL
    try:
        os.kill(target[0], sig)
    except OSError as exc:
        return f"signal to pid {target[0]} failed: {exc}"
    return f"{sig.name} pid {target[0]}"


# -- the hypervisor side -----------------------------------------------------------------


class Hypervisor(Protocol):
    """What the fencer needs of the host. ``refresh`` and ``fence`` may block (they run
    in worker threads). ``fence`` stops one guest through the hypervisor and says how
    (or raises); ``fallback`` signals its process when ``fence`` failed or hung."""

    def refresh(self, names: tuple[str, ...]) -> dict[str, GuestInfo]: ...

    def fence(self, name: str, info: GuestInfo) -> str: ...

    def fallback(self, name: str, info: GuestInfo) -> str: ...


class LibvirtHost:
    """The host's libvirt (``uri``), with QEMU pids from ``run_dir`` for the fallback."""

    def __init__(self, uri: str, run_dir: Path) -> None:
        self.uri = uri
        self.run_dir = run_dir
        self._conn: Any = None
        self._lock = threading.Lock()

    def _connect(self) -> Any:
        import libvirt  # type: ignore[import-untyped]  # libvirt-python ships no types

        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
        with self._lock:
            if self._conn is None or not self._conn.isAlive():
                self._conn = libvirt.open(self.uri)
            return self._conn

    def _drop(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def refresh(self, names: tuple[str, ...]) -> dict[str, GuestInfo]:
        out: dict[str, GuestInfo] = {}
        try:
            conn = self._connect()
        except Exception:
            return out
        running: set[str] = set()
        for name in names:
            try:
                dom = conn.lookupByName(name)
                fence, generation = parse_ha_metadata(dom.XMLDesc(0))
            except Exception:
                if not conn.isAlive():
                    self._drop()
                    break
                continue
            found = qemu_pid(self.run_dir, name)
            pid, start = found if found else (None, None)
            out[name] = GuestInfo(fence, generation, pid, start)
            if found is None:
                with contextlib.suppress(Exception):
                    if dom.isActive():
                        running.add(name)
        if running:  # no pid file where we look: one /proc scan for all of them
            for name, (pid, start) in scan_qemus(running).items():
                out[name] = GuestInfo(out[name].fence, out[name].generation, pid, start)
        return out

    def fence(self, name: str, info: GuestInfo) -> str:
        import libvirt

        conn = self._connect()
        try:
            dom = conn.lookupByName(name)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return "not defined here"
            raise
        if not dom.isActive():
            return "not running"
        if info.fence == PAUSE:
            if dom.state()[0] != libvirt.VIR_DOMAIN_PAUSED:
                dom.suspend()
            return "paused through libvirt"
        dom.destroy()
        return "destroyed through libvirt"

    def fallback(self, name: str, info: GuestInfo) -> str:
        return signal_guest(name, info, self.run_dir, info.fence)


# -- the fencer process ------------------------------------------------------------------


@dataclass
class _Client:
    sock: socket.socket
    active: float
    buf: bytearray = field(default_factory=bytearray)


class Fencer:
    """The fencer's state and event loop: one thread serving the socket and the deadline,
    worker threads for libvirt (a hung libvirtd never delays a fence past
    ``libvirt_timeout_s``)."""

    def __init__(
        self,
        sock_path: Path,
        hv: Hypervisor,
        config: FencerConfig = FencerConfig(),
        *,
        owner: int | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.sock_path = sock_path
        self.hv = hv
        self.config = config
        self.deadline: float | None = None
        self.guests: tuple[str, ...] = ()
        self.info: dict[str, GuestInfo] = {}
        self.events: list[dict[str, Any]] = []
        self.dropped = 0
        self._log = log or (lambda line: None)
        self._owner: tuple[int, int | None] | None = None
        self._refreshed = -math.inf
        self._refreshing = False
        self._info_lock = threading.Lock()
        self._stop = threading.Event()
        self._sel = selectors.DefaultSelector()
        self._listener: socket.socket | None = None
        self.set_owner(owner)

    # -- state ---------------------------------------------------------------------------

    def set_owner(self, pid: int | None) -> None:
        self._owner = None if pid is None else (pid, proc_start(pid))

    def owner_alive(self) -> bool:
        if self._owner is None:
            return False
        pid, start = self._owner
        return proc_start(pid) == start and start is not None

    def log(self, line: str) -> None:
        self._log(line)

    def arm(self, deadline: float | None, guests: tuple[str, ...]) -> None:
        if deadline is None:
            if self.deadline is not None:
                self.log(f"disarmed ({len(self.guests)} guests)")
            self.deadline, self.guests = None, ()
            return
        if guests != self.guests:
            self._refreshed = -math.inf  # read the new guests' pids now
            with self._info_lock:
                self.info = {g: i for g, i in self.info.items() if g in guests}
        self.deadline, self.guests = deadline, guests

    def _refresh_worker(self, names: tuple[str, ...]) -> None:
        try:
            got = self.hv.refresh(names)
            with self._info_lock:
                self.info.update(got)
        except Exception as exc:  # a driver bug must not take the fencer down
            self.log(f"refresh failed: {exc!r}")
        finally:
            self._refreshing = False

    def maybe_refresh(self, now: float) -> None:
        if self.deadline is None or self._refreshing:
            return
        if now - self._refreshed < self.config.refresh_s:
            return
        self._refreshed, self._refreshing = now, True
        threading.Thread(target=self._refresh_worker, args=(self.guests,), daemon=True).start()

    def expire(self) -> None:
        """The deadline passed: fence every armed guest, then nothing is armed."""
        guests, deadline = self.guests, self.deadline or clock()
        late = clock() - deadline
        self.deadline, self.guests = None, ()
        self.log(f"deadline passed ({late * 1000:.0f} ms ago): fencing {len(guests)} guests")
        with self._info_lock:
            infos = {g: self.info.get(g, GuestInfo()) for g in guests}
        results: dict[str, tuple[bool, str]] = {}
        gave_up: set[str] = set()
        lock = threading.Lock()
        todo = list(guests)

        def work() -> None:
            while True:
                with lock:
                    if not todo:
                        return
                    g = todo.pop()
                self._fence_one(g, infos[g], results, gave_up, lock)

        threads = [
            threading.Thread(target=work, daemon=True)
            for _ in range(min(len(guests), FENCE_THREADS))
        ]
        for t in threads:
            t.start()
        end = time.monotonic() + self.config.libvirt_timeout_s
        for t in threads:
            t.join(max(0.0, end - time.monotonic()))
        for g in guests:
            info = infos[g]
            with lock:
                ok, how = results.get(g, (False, ""))
                if not how:
                    gave_up.add(g)
                    how = f"libvirt did not answer within {self.config.libvirt_timeout_s} s"
            if not ok:
                try:
                    how += "; " + self.hv.fallback(g, info)
                except Exception as exc:
                    how += f"; fallback failed: {exc!r}"
            done_s = clock() - deadline
            event: dict[str, Any] = {"guest": g, "fence": info.fence, "generation": info.generation}
            event |= {"how": how, "after_deadline_s": round(done_s, 3)}
            self.events = [*self.events[-(MAX_EVENTS - 1) :], event]
            self.log(
                f"fenced {g} ({info.fence}, generation {info.generation}) "
                f"{done_s:.3f} s after the deadline: {how}"
            )

    def _fence_one(
        self,
        name: str,
        info: GuestInfo,
        results: dict[str, tuple[bool, str]],
        gave_up: set[str],
        lock: threading.Lock,
    ) -> None:
        try:
            ok, how = True, self.hv.fence(name, info)
        except Exception as exc:  # the fallback signals the process
            ok, how = False, f"libvirt failed ({str(exc)[:120]})"
        with lock:
            if name not in gave_up:
                results[name] = (ok, how)
                return
        self.log(f"libvirt answered late for {name}: {how}")

    # -- requests ------------------------------------------------------------------------

    def handle(self, line: bytes) -> dict[str, Any]:
        """One request line -> the answer; a bad request is counted and answered with
        an error, never raised."""
        try:
            req = json.loads(line)
            if not isinstance(req, dict) or req.get("v") != PROTOCOL:
                raise ValueError(f"expected an object with v={PROTOCOL}")
            op = req.get("op")
            if op == "arm":
                deadline, guests = _check_arm(req, clock())
                owner = req.get("owner")
                if _is_pid(owner) and (self._owner is None or self._owner[0] != owner):
                    self.set_owner(owner)  # the daemon that arms is the one to watch
                self.arm(deadline, guests)
                return {"ok": True}
            if op == "hello":
                owner = req.get("owner")
                if not _is_pid(owner):
                    raise ValueError("hello: owner must be a pid")
                self.set_owner(owner)
                return {"ok": True, "pid": os.getpid()}
            if op == "bye":
                self._owner = None
                return {"ok": True}
            if op == "status":
                return self.status()
            raise ValueError(f"unknown op {op!r}")
        except (ValueError, TypeError, RecursionError) as exc:
            self.dropped += 1
            self.log(f"dropped a request: {exc}")
            return {"ok": False, "error": str(exc)[:200]}

    def status(self) -> dict[str, Any]:
        now = clock()
        return {
            "ok": True,
            "pid": os.getpid(),
            "armed": self.deadline is not None,
            "remaining_s": None if self.deadline is None else self.deadline - now,
            "guests": list(self.guests),
            "known": {
                g: {"fence": i.fence, "generation": i.generation, "pid": i.pid}
                for g, i in self.info.items()
                if g in self.guests
            },
            "events": self.events,
            "dropped": self.dropped,
            "owner_alive": self.owner_alive(),
        }

    # -- the loop ------------------------------------------------------------------------

    def listen(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.sock_path.unlink()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            listener.bind(str(self.sock_path))
        finally:
            os.umask(old)
        listener.listen(MAX_CLIENTS)
        listener.setblocking(False)
        self._listener = listener
        self._sel.register(listener, selectors.EVENT_READ, None)

    def leave(self) -> None:
        """As if the daemon were gone: exit now when nothing is armed, else fence at the
        deadline first (SIGTERM; a unit stop sends it to every process of the unit)."""
        self._owner = None

    def stop(self) -> None:
        self._stop.set()

    def serve(self) -> None:
        """Run until stopped, or until nothing is armed and the owner is gone."""
        if self._listener is None:
            self.listen()
        next_owner_check = 0.0
        try:
            while not self._stop.is_set():
                now = clock()
                if self.deadline is not None and now >= self.deadline:
                    self.expire()
                    continue
                self.maybe_refresh(now)
                if self.deadline is None and now >= next_owner_check:
                    next_owner_check = now + self.config.owner_poll_s
                    if not self.owner_alive():
                        self.log("nothing armed and the daemon is gone: exiting")
                        return
                wait = min(self.config.owner_poll_s, self.config.refresh_s, 0.5)
                if self.deadline is not None:
                    wait = min(wait, max(0.0, self.deadline - now))
                for key, _ in self._sel.select(wait):
                    if key.data is None:
                        self._accept()
                    else:
                        self._read(key.data)
        finally:
            self._close()

    def _accept(self) -> None:
        assert self._listener is not None
        try:
            conn, _ = self._listener.accept()
        except OSError:
            return
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _pid, uid, _gid = struct.unpack("3i", creds)
        if uid not in (os.getuid(), 0):
            self.dropped += 1
            self.log(f"refused a connection from uid {uid}")
            conn.close()
            return
        clients = [k.data for k in self._sel.get_map().values() if k.data is not None]
        if len(clients) >= MAX_CLIENTS:  # the daemon must get in: drop the idlest
            self.dropped += 1
            self.log(f"{len(clients)} connections: closing the one idle longest")
            self._drop(min(clients, key=lambda c: c.active))
        conn.setblocking(False)
        self._sel.register(conn, selectors.EVENT_READ, _Client(conn, time.monotonic()))

    def _read(self, client: _Client) -> None:
        try:
            data = client.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(client)
            return
        client.buf += data
        client.active = time.monotonic()
        while (nl := client.buf.find(b"\n")) >= 0:
            line = bytes(client.buf[:nl])
            del client.buf[: nl + 1]
            answer = self.handle(line) if len(line) <= MAX_LINE else self._too_long()
            try:
                client.sock.settimeout(0.1)  # a client that does not read is dropped
                client.sock.sendall(json.dumps(answer).encode() + b"\n")
                client.sock.setblocking(False)
            except OSError:
                self._drop(client)
                return
        if len(client.buf) > MAX_LINE:
            self._too_long()
            self._drop(client)

    def _too_long(self) -> dict[str, Any]:
        self.dropped += 1
        self.log(f"dropped a request over {MAX_LINE} bytes")
        return {"ok": False, "error": "request too long"}

    def _drop(self, client: _Client) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self._sel.unregister(client.sock)
        client.sock.close()

    def _close(self) -> None:
        for key in list(self._sel.get_map().values()):
            with contextlib.suppress(OSError):
                key.fileobj.close()  # type: ignore[union-attr]
        self._sel.close()
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self.sock_path.unlink()


def _is_pid(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and 1 < value < 1 << 22


def _check_arm(req: dict[str, Any], now: float) -> tuple[float | None, tuple[str, ...]]:
    deadline = req.get("deadline")
    guests = req.get("guests")
    if deadline is None:
        return None, ()
    if not isinstance(deadline, int | float) or isinstance(deadline, bool):
        raise ValueError("arm: deadline must be a number or null")
    if not math.isfinite(deadline) or deadline - now > MAX_ARM_S:
        raise ValueError(f"arm: deadline must be finite and within {MAX_ARM_S:.0f} s")
    if not isinstance(guests, list) or len(guests) > MAX_GUESTS:
        raise ValueError(f"arm: guests must be a list of at most {MAX_GUESTS} names")
    for g in guests:
        if not isinstance(g, str) or not _GUEST_RE.fullmatch(g):
            raise ValueError(f"arm: bad guest name {str(g)[:80]!r}")
    return float(deadline), tuple(dict.fromkeys(guests))


# -- the daemon's side -------------------------------------------------------------------


class ProcessWatchdog:
    """The daemon's handle on its host's fencer process (the runtime ``Watchdog``).

    ``arm(remaining_s, guests)`` asks for ``guests`` to be stopped ``remaining_s`` from
    now; the fencer's deadline is ``libvirt_timeout_s`` earlier, so a fence that falls
    back to signalling QEMU is done in time too (None disarms). ``arm`` starts the
    process when no fencer answers on ``<state_dir>/fencer.sock`` (again when it died),
    and gives up after ``request_timeout_s`` (``spawn_timeout_s`` more when it started
    the process): it never holds the daemon longer. A failed arming is logged and kept
    in ``last_error``; the next ``arm`` tries again. ``aclose`` tells the fencer the
    daemon is leaving: an armed fencer still fences at its deadline, then exits.
    """

    def __init__(
        self,
        state_dir: Path | str,
        uri: str,
        config: FencerConfig = FencerConfig(),
        *,
        run_dir: Path | None = None,
        python: str = sys.executable,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.uri = uri
        self.config = config
        self.run_dir = run_dir
        self.python = python
        self.sock_path = self.state_dir / "fencer.sock"
        self.last_error: str | None = None
        self.pid: int | None = None
        self._log = log or _warn
        self._info = log or _info
        self._stream: Any = None
        self._buf = bytearray()
        self._proc: Any = None
        self._lock: Any = None

    def command(self) -> list[str]:
        """The fencer process's command line."""
        cmd = [self.python, "-m", "dvms.runtime.fencer", "--state-dir", str(self.state_dir)]
        cmd += ["--uri", self.uri, "--owner", str(os.getpid())]
        if self.run_dir is not None:
            cmd += ["--run-dir", str(self.run_dir)]
        c = self.config
        cmd += ["--libvirt-timeout", str(c.libvirt_timeout_s), "--refresh", str(c.refresh_s)]
        return [*cmd, "--owner-poll", str(c.owner_poll_s)]

    async def arm(self, remaining_s: float | None, guests: tuple[str, ...]) -> None:
        # libvirt may take libvirt_timeout_s before the fencer signals QEMU itself: the
        # fence starts that much earlier, so the guests are stopped by the moment asked
        lead = self.config.libvirt_timeout_s
        deadline = None if remaining_s is None else clock() + remaining_s - lead
        req = {"v": PROTOCOL, "op": "arm", "deadline": deadline, "guests": list(guests)}
        req["owner"] = os.getpid()
        try:
            answer = await self._request(req, spawn=deadline is not None)
        except Exception as exc:
            self.last_error = f"fencer: arm failed: {exc!r}"
            self._log(self.last_error)
            return
        if answer is not None and not answer.get("ok"):
            self.last_error = f"fencer: arm refused: {answer.get('error')}"
            self._log(self.last_error)
        elif answer is not None:
            self.last_error = None

    async def status(self) -> dict[str, Any] | None:
        """The fencer's state (None when no fencer runs)."""
        return await self._request({"v": PROTOCOL, "op": "status"}, spawn=False)

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):
            await self._request({"v": PROTOCOL, "op": "bye"}, spawn=False)
        await self._disconnect()
        if self._proc is not None:
            self._proc.poll()  # reap it if it already exited

    async def _request(self, req: dict[str, Any], *, spawn: bool) -> dict[str, Any] | None:
        import trio

        if self._lock is None:
            self._lock = trio.Lock()
        c = self.config
        # the whole exchange, a start of the process and one retry included, is bounded
        with trio.fail_after(3 * c.request_timeout_s + c.spawn_timeout_s):
            try:
                return await self._exchange(req, spawn)
            except trio.TooSlowError:
                await self._disconnect()
                raise

    async def _exchange(self, req: dict[str, Any], spawn: bool) -> dict[str, Any] | None:
        import trio

        async with self._lock:
            if self._stream is None and not await self._connect(spawn):
                return None
            line = json.dumps(req).encode() + b"\n"
            try:
                with trio.fail_after(self.config.request_timeout_s):
                    await self._stream.send_all(line)
                    return await self._answer()
            except (trio.TooSlowError, OSError, trio.BrokenResourceError, ValueError):
                await self._disconnect()
            # the fencer died or hangs: once more, starting it again if need be
            if not await self._connect(spawn):
                return None
            with trio.fail_after(self.config.request_timeout_s):
                await self._stream.send_all(line)
                return await self._answer()

    async def _answer(self) -> dict[str, Any]:
        while (nl := self._buf.find(b"\n")) < 0:
            data = await self._stream.receive_some(65536)
            if not data:
                raise OSError("the fencer closed the connection")
            self._buf += data
            if len(self._buf) > MAX_LINE:
                raise ValueError("the fencer's answer is too long")
        line = bytes(self._buf[:nl])
        del self._buf[: nl + 1]
        answer = json.loads(line)
        if not isinstance(answer, dict):
            raise ValueError("the fencer's answer is not an object")
        return answer

    async def _try_connect(self) -> bool:
        import trio

        try:
            with trio.fail_after(self.config.request_timeout_s):
                self._stream = await trio.open_unix_socket(str(self.sock_path))
                self._buf.clear()
                await self._stream.send_all(
                    json.dumps({"v": PROTOCOL, "op": "hello", "owner": os.getpid()}).encode()
                    + b"\n"
                )
                answer = await self._answer()
        except (OSError, trio.TooSlowError, ValueError, trio.BrokenResourceError):
            await self._disconnect()
            return False
        self.pid = answer.get("pid") if isinstance(answer.get("pid"), int) else None
        return bool(answer.get("ok"))

    async def _connect(self, spawn: bool) -> bool:
        import subprocess

        import trio

        if await self._try_connect():
            return True
        if not spawn:
            return False
        if self._proc is not None:
            self._proc.poll()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self.state_dir / "fencer.log", "ab") as logf:
            self._proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=logf,
                start_new_session=True,
                close_fds=True,
            )
        self._info(f"fencer: started pid {self._proc.pid}")
        end = trio.current_time() + self.config.spawn_timeout_s
        while trio.current_time() < end:
            exited = self._proc.poll() is not None
            if self.sock_path.exists() and await self._try_connect():
                return True
            if exited:  # 3: another fencer holds the lock but does not answer
                raise OSError(f"the fencer exited with {self._proc.returncode} (fencer.log)")
            await trio.sleep(0.02)
        raise OSError(f"the fencer did not answer within {self.config.spawn_timeout_s} s")

    async def _disconnect(self) -> None:
        stream, self._stream = self._stream, None
        self._buf.clear()
        if stream is not None:
            with contextlib.suppress(Exception):
                await stream.aclose()


def _warn(line: str) -> None:
    import logging  # the daemon's logging; the fencer process does without

    logging.getLogger("dvms.runtime.fencer").warning("%s", line)


def _info(line: str) -> None:
    import logging

    logging.getLogger("dvms.runtime.fencer").info("%s", line)


def watchdog_factory(
    config: FencerConfig = FencerConfig(),
) -> Callable[[str, Path], ProcessWatchdog]:
    """A watchdog backend for the daemon's registry ((hypervisor URI, the daemon's state
    directory) -> watchdog): the fencer of the host at that URI, its socket, lock and
    log in the state directory."""
    return lambda uri, state_dir: ProcessWatchdog(state_dir, uri, config)


# -- the process's entry point -----------------------------------------------------------


def _file_log(path: Path) -> Callable[[str], None]:
    def log(line: str) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
        with contextlib.suppress(OSError), open(path, "a") as f:
            f.write(f"{stamp} fencer[{os.getpid()}] {line}\n")

    return log


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m dvms.runtime.fencer", description=__doc__)
    p.add_argument("--state-dir", required=True, type=Path)
    p.add_argument("--uri", required=True, help="the host's libvirt URI")
    p.add_argument("--owner", type=int, help="the daemon's pid")
    p.add_argument("--run-dir", type=Path, help="libvirt's run directory (default: from --uri)")
    d = FencerConfig()
    p.add_argument("--libvirt-timeout", type=float, default=d.libvirt_timeout_s)
    p.add_argument("--refresh", type=float, default=d.refresh_s)
    p.add_argument("--owner-poll", type=float, default=d.owner_poll_s)
    args = p.parse_args(argv)
    import fcntl

    state: Path = args.state_dir
    state.mkdir(parents=True, exist_ok=True)
    log = _file_log(state / "fencer.log")
    lock = open(state / "fencer.lock", "a")  # noqa: SIM115 - held for the process's life
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        print("another fencer runs for this state directory", file=sys.stderr)
        return 3
    config = FencerConfig(
        libvirt_timeout_s=args.libvirt_timeout,
        refresh_s=args.refresh,
        owner_poll_s=args.owner_poll,
    )
    hv = LibvirtHost(args.uri, args.run_dir or run_dir_for(args.uri))
    fencer = Fencer(state / "fencer.sock", hv, config, owner=args.owner, log=log)
    # SIGTERM (systemd sends it to the whole unit when the daemon stops or dies): an
    # armed fencer keeps its deadline, fences, then exits; SIGKILL ends it at once
    signal.signal(signal.SIGTERM, lambda *_: fencer.leave())
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    fencer.listen()
    log(f"listening for daemon {args.owner} ({args.uri})")
    fencer.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
