"""Real libvirtd daemons side by side on one machine, each in its own namespaces.

The recipe measured on this machine: every node gets a network namespace (joined to the others
by veth pairs), a private mount namespace in which a private directory is bind-mounted
over ``/run/libvirt``, ``/var/lib/libvirt``, ``/etc/libvirt``, ``/var/log/libvirt`` and
``/var/cache/libvirt``, its own ``host_uuid`` (otherwise libvirt refuses "migrate to the
same host") and its own pidfile (``-p``; the default one lives in ``/run``, shared). The
daemon listens on TCP in its namespace so peers can do peer-to-peer migration
(``qemu+tcp://<ip>/system``); this process talks to it over its private unix socket.

``kvm_group_fix`` applies the ``/dev/kvm`` fix (group kvm, mode 660) for the duration of a
run and restores the original owner and mode: without it libvirt re-probes QEMU (~4 s)
before every start and every migration.

Everything is stopped by PID, never by process name.
"""

from __future__ import annotations

import contextlib
import grp
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from dvms.hypervisor.domxml import DomainConfig
from dvms.hypervisor.libvirt_backend import LibvirtConfig

__all__ = [
    "LibvirtdNode",
    "kvm_group_fix",
    "libvirtd_pair",
    "netns_add",
    "netns_del",
    "veth_between",
]

_BIND = {"run": "/run/libvirt", "varlib": "/var/lib/libvirt", "etc": "/etc/libvirt",
         "log": "/var/log/libvirt", "cache": "/var/cache/libvirt"}  # fmt: skip


def sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=120)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {proc.stderr.strip()}")
    return proc


def netns_add(name: str) -> None:
    sh("ip", "netns", "add", name)
    sh("ip", "-n", name, "link", "set", "lo", "up")


def netns_del(name: str) -> None:
    sh("ip", "netns", "del", name, check=False)


def veth_between(
    ns_a: str, if_a: str, ip_a: str | None, ns_b: str, if_b: str, ip_b: str | None
) -> None:
    """A veth pair with one end in each namespace, up; an end with an ip gets it as /24."""
    sh("ip", "-n", ns_a, "link", "add", if_a, "type", "veth", "peer", "name", if_b, "netns", ns_b)
    for ns, ifname, ip in ((ns_a, if_a, ip_a), (ns_b, if_b, ip_b)):
        if ip is not None:
            sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", ifname)
        sh("ip", "-n", ns, "link", "set", ifname, "up")


@contextlib.contextmanager
def kvm_group_fix(device: str = "/dev/kvm") -> Iterator[str]:
    """chgrp kvm + chmod 660 on /dev/kvm while inside; yields what was done."""
    if not os.path.exists(device):
        yield "no /dev/kvm"
        return
    st = os.stat(device)
    try:
        gid = grp.getgrnam("kvm").gr_gid
    except KeyError:
        yield "no kvm group"
        return
    os.chown(device, -1, gid)
    os.chmod(device, 0o660)
    try:
        yield f"{device}: group kvm, mode 660"
    finally:
        os.chown(device, -1, st.st_gid)
        os.chmod(device, st.st_mode & 0o7777)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_pid(pid: int, timeout: float = 10.0) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _pid_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


@dataclass
class LibvirtdNode:
    """One libvirtd in network namespace ``netns`` with address ``ip``, files under ``root``."""

    name: str
    root: Path
    netns: str
    ip: str
    host_uuid: str = field(default_factory=lambda: str(uuid.uuid4()))
    migration_port: int = 49152
    pid: int | None = None

    @property
    def uri(self) -> str:
        """How this process reaches the daemon (its private unix socket)."""
        return f"qemu+unix:///system?socket={self.root}/run/libvirt-sock"

    @property
    def peer_uri(self) -> str:
        """How another daemon reaches this one for peer-to-peer migration."""
        return f"qemu+tcp://{self.ip}/system"

    @property
    def migration_uri(self) -> str:
        return f"tcp://{self.ip}:{self.migration_port}"

    def hypervisor_config(self, domain: DomainConfig | None = None) -> LibvirtConfig:
        """The ``libvirt`` backend configuration that drives this node."""
        return LibvirtConfig(
            uri=self.uri,
            host=self.name,
            peer_uri=self.peer_uri,
            migration_uri=self.migration_uri,
            domain=domain,
        )

    def _write_config(self) -> None:
        for sub in _BIND:
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        etc = self.root / "etc"
        shutil.copytree("/etc/libvirt", etc, dirs_exist_ok=True, symlinks=True)
        shutil.rmtree(etc / "qemu" / "networks" / "autostart", ignore_errors=True)
        (etc / "libvirtd.conf").write_text(
            f'host_uuid = "{self.host_uuid}"\n'
            "listen_tls = 0\nlisten_tcp = 1\n"
            f'listen_addr = "{self.ip}"\nauth_tcp = "none"\nauth_unix_rw = "none"\n'
            'log_outputs = "3:file:/var/log/libvirt/libvirtd.log"\n'
        )
        # no cgroup controllers: two daemons in one cgroup tree would fight over it;
        # no security driver: AppArmor/SELinux profiles are not set up in a private /etc.
        (etc / "qemu.conf").write_text(
            'cgroup_controllers = [ ]\nsecurity_driver = "none"\n'
            # the address a source is told to send the memory stream to: a daemon that
            # migrates through this one without naming a migration URI reaches it
            f'migration_host = "{self.ip}"\n'
            f"migration_port_min = {self.migration_port}\n"
            f"migration_port_max = {self.migration_port + 15}\n"
        )

    def start(self) -> None:
        """Start virtlogd + libvirtd in fresh mount/UTS namespaces inside ``netns``."""
        self.root.mkdir(parents=True, exist_ok=True)
        self._write_config()
        binds = "; ".join(
            f"mkdir -p {target}; mount --bind {self.root / sub} {target}"
            for sub, target in _BIND.items()
        )
        run = self.root / "run"
        script = (
            "set -e; mount --make-rprivate /; "
            f"{binds}; hostname {self.name}; "
            f"virtlogd -d -p {run}/virtlogd.pid; "
            f"exec libvirtd -d -l -p {run}/libvirtd.pid"
        )
        sh("ip", "netns", "exec", self.netns, "unshare", "--mount", "--uts", "sh", "-c", script)
        self.pid = _read_pid(run / "libvirtd.pid")

    def wait_ready(self, timeout: float = 60.0) -> None:
        sock = self.root / "run" / "libvirt-sock"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.pid = self.pid or _read_pid(self.root / "run" / "libvirtd.pid")
            if sock.exists() and self.pid and _pid_alive(self.pid):
                return
            time.sleep(0.1)
        raise RuntimeError(f"libvirtd {self.name} did not come up: {self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = (self.root / "log" / "libvirtd.log").read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """Kill QEMU children, libvirtd and virtlogd of this node, by PID."""
        run = self.root / "run"
        for pidfile in sorted((run / "qemu").glob("*.pid")):
            if (pid := _read_pid(pidfile)) is not None:
                _kill_pid(pid)
        for name in ("libvirtd.pid", "virtlogd.pid"):
            if (pid := _read_pid(run / name)) is not None:
                _kill_pid(pid)
        self.pid = None


@contextlib.contextmanager
def libvirtd_pair(tag: str, work: Path, subnet: str = "10.233.0") -> Iterator[list[LibvirtdNode]]:
    """Two ready libvirtd nodes (A, B) in namespaces ``<tag>la``/``<tag>lb`` joined by a
    veth pair on ``<subnet>.0/24``, with the /dev/kvm fix; everything undone on exit."""
    ns_a, ns_b = f"{tag}la", f"{tag}lb"
    nodes = [
        LibvirtdNode("nodeA", work / "A", ns_a, f"{subnet}.1"),
        LibvirtdNode("nodeB", work / "B", ns_b, f"{subnet}.2"),
    ]
    try:
        with kvm_group_fix():
            netns_add(ns_a)
            netns_add(ns_b)
            veth_between(ns_a, "eth0", nodes[0].ip, ns_b, "eth0", nodes[1].ip)
            for node in nodes:
                node.start()
            for node in nodes:
                node.wait_ready()
            yield nodes
    finally:
        for node in nodes:
            node.stop()
        netns_del(ns_a)
        netns_del(ns_b)
