"""A lab of real hypervisor hosts on one machine (root): ``dvms lab up|status|down``.

Each lab host is a network namespace with its own libvirtd (its own mount namespace,
``host_uuid``, pidfile, socket and state directories: ``dvms.hypervisor.lab.daemons``)
running QEMU guests, and a dvms daemon whose hypervisor is that libvirtd and whose
network backend is pyroute2 in that namespace. The hosts are joined by an underlay
bridge that lives in a namespace of its own, so no address or link of the lab exists in
the root namespace::

    netns <tag>u:   bridge br0 ── v1 ── v2 ── ... ── vN      (veth ends, no addresses)
    netns <tag>h1:  eth0 10.231.0.1/24   libvirtd (qemu+tcp://10.231.0.1/system)   dvms
    netns <tag>h2:  eth0 10.231.0.2/24   libvirtd ...                              dvms

    DIR/lab.json            what `up` made: namespaces, pids, sockets, URIs (for `down`)
    DIR/cluster.key         one cluster key
    DIR/console/            every guest's serial console, <namespace>:<name>.log
    DIR/hostI/libvirt/      host I's libvirtd state (run, etc, log, varlib, cache)
    DIR/hostI/dvms/         host I's dvms state dir: dvms.sock, node.json, node.log,
                            fencer.sock and fencer.log (its HA fencer, once armed)

``<tag>`` is ``dvl`` plus a hash of DIR, so two labs in two directories never share a
namespace. Inside the lab every daemon reaches every libvirtd over TCP (auth none: the
underlay exists only in these namespaces); from the root namespace each libvirtd is
reachable on its unix socket (``status`` prints the URI: ``virsh -c URI list``).

Every daemon's HA watchdog is the fencer (``watchdog = "process"``): a process the
daemon starts when it first owns an HA guest, in the host's network namespace, which
finds the host's QEMUs there by their command line (libvirtd's pid files are in its
private /run).

``down`` kills every process found in a lab namespace (by pid, from
``/proc/PID/ns/net``: the daemons, their fencers, libvirtd, virtlogd and QEMU), then the pids of
lab.json, deletes the namespaces (which deletes their links) and every file ``up``
made; ``leftovers`` lists what is still there (a test checks it is nothing).
"""

from __future__ import annotations

import contextlib
import grp
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from dvms.hypervisor.lab.daemons import LibvirtdNode, netns_add, netns_del, sh
from dvms.runtime.client import ControlError, call
from dvms.wire.keys import generate_key, write_key

__all__ = [
    "GUEST_SUBNET",
    "PROBE_IP",
    "LabConfig",
    "LabError",
    "console_text",
    "every_pair_pings",
    "guest_command",
    "guest_ip",
    "host_netns",
    "lab_call",
    "lab_down",
    "lab_leftovers",
    "lab_socket",
    "lab_status",
    "lab_tag",
    "lab_up",
    "lab_vjob",
    "pings",
    "probe_attach",
    "settle_then_overload",
    "wait_until",
]

MANIFEST = "lab.json"
#: Tools ``lab up`` needs on the machine (Debian packages: scripts/debian-packages.txt).
TOOLS = ("ip", "unshare", "libvirtd", "virtlogd", "qemu-system-x86_64", "virsh")


class LabError(Exception):
    """The lab could not be started, read or stopped; the message says why."""


@dataclass(frozen=True, slots=True)
class LabConfig:
    """Shape and timing of a lab (ours)."""

    #: Underlay subnet: host I gets ``<subnet>.I/24``.
    subnet: str = "10.231.0"
    #: UDP port of every dvms daemon on its underlay address.
    dvms_port: int = 7400
    #: CPU capacity each host's monitor reports to the partitions, in CPUs (0 = the
    #: machine's CPUs). The lab's hosts share one machine: a small capacity makes a
    #: guest that burns CPU overload its host.
    host_cpus: float = 2.0
    #: TCG translation-block cache of every guest, MiB (keeps a guest's QEMU at ~150 MB).
    tb_cache_mib: int = 16
    #: Wall-clock seconds ``up`` waits for each step (a libvirtd, its QEMU probe, a
    #: daemon, the daemons to see each other).
    start_timeout_s: float = 120.0
    #: ``down``: SIGTERM, then SIGKILL after this long, seconds.
    stop_grace_s: float = 10.0
    #: Daemon log level (the node's ``--log-level``).
    log_level: str = "info"
    #: Partition/overlay profile of the daemons.
    profile: str = "local"
    #: ``[ha]`` keys of every daemon that differ from ``HaConfig``'s defaults (lease,
    #: renewal period, ...): (key, value) pairs.
    ha: tuple[tuple[str, float | int], ...] = ()


def lab_tag(d: Path) -> str:
    """The namespace prefix of the lab in ``d`` (``dvl`` + 5 hex digits of its path)."""
    return "dvl" + hashlib.blake2s(str(d.resolve()).encode(), digest_size=3).hexdigest()[:5]


def _check_machine() -> None:
    if os.geteuid() != 0:
        raise LabError("dvms lab needs root (network and mount namespaces, libvirtd)")
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        raise LabError(f"missing tools: {', '.join(missing)} (install scripts/debian-packages.txt)")


def _kvm_fix() -> dict[str, int] | None:
    """Give /dev/kvm to group kvm, mode 660, as udev would (else libvirt re-probes QEMU
    before every start: ~4 s). Returns the original (gid, mode) if it changed it."""
    dev = "/dev/kvm"
    if not os.path.exists(dev):
        return None
    try:
        gid = grp.getgrnam("kvm").gr_gid
    except KeyError:
        return None
    st = os.stat(dev)
    if st.st_gid == gid and st.st_mode & 0o777 == 0o660:
        return None
    os.chown(dev, -1, gid)
    os.chmod(dev, 0o660)
    return {"gid": st.st_gid, "mode": st.st_mode & 0o7777}


def _write_manifest(d: Path, lab: dict[str, Any]) -> None:
    tmp = d / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(lab, indent=2) + "\n")
    tmp.replace(d / MANIFEST)


def _read_manifest(d: Path) -> dict[str, Any]:
    try:
        data = json.loads((d / MANIFEST).read_text())
    except FileNotFoundError:
        raise LabError(f"no lab in {d} (no {MANIFEST})") from None
    except (json.JSONDecodeError, OSError) as exc:
        raise LabError(f"{d / MANIFEST}: {exc}") from None
    if not isinstance(data, dict) or "hosts" not in data:
        raise LabError(f"{d / MANIFEST}: not a lab manifest")
    return data


def _node_toml(d: Path, i: int, ip: str, cfg: LabConfig) -> str:
    state = d / f"host{i}" / "dvms"
    seeds = [] if i == 1 else [f"{cfg.subnet}.1:{cfg.dvms_port}"]
    lines = [
        f'profile = "{cfg.profile}"',
        f'listen = "{ip}:{cfg.dvms_port}"',
        f"seeds = {json.dumps(seeds)}",
        f'key_file = "{d / "cluster.key"}"',
        f'state_dir = "{state}"',
        f'hostname = "host{i}"',
        f'hypervisor = "qemu+tcp://{ip}/system"',
        'network = "pyroute2"',
        # the fencer stops the host's HA guests when its daemon freezes or dies
        'watchdog = "process"',
        "[monitor]",
        f"capacity_cpus = {float(cfg.host_cpus)}",
        "[guests]",
        f'console_dir = "{d / "console"}"',
        f"tb_cache_mib = {cfg.tb_cache_mib}",
    ]
    if cfg.ha:
        lines += ["[ha]", *(f"{k} = {json.dumps(v)}" for k, v in cfg.ha)]
    return "\n".join(lines) + "\n"


def _wait(pred: Callable[[], Any], timeout: float, what: str, poll: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = pred()
            if last:
                return last
        except (ControlError, OSError, ValueError) as exc:
            last = exc
        time.sleep(poll)
    raise LabError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last})")


def _probe(uri: str, errors: list[str]) -> None:
    """Ask a fresh libvirtd for its capabilities: its first QEMU probe (~12 s) happens
    here, not in the first VM start or migration."""
    try:
        sh("virsh", "-c", uri, "capabilities")
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        errors.append(f"{uri}: {exc}")


def lab_up(d: Path, hosts: int, config: LabConfig | None = None) -> dict[str, Any]:
    """Start a lab of ``hosts`` hosts in ``d``; returns the manifest (``status`` rows).
    On failure everything started so far is taken down again."""
    cfg = config or LabConfig()
    if not 1 <= hosts <= 32:
        raise LabError(f"--hosts must be in 1..32, got {hosts}")
    _check_machine()
    d = d.resolve()
    if (d / MANIFEST).exists():
        raise LabError(f"a lab already exists in {d} (dvms lab down --dir {d})")
    d.mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o755)  # QEMU (user libvirt-qemu) writes the console logs below
    tag = lab_tag(d)
    lab: dict[str, Any] = {
        "tag": tag,
        "dir": str(d),
        "underlay": f"{tag}u",
        "subnet": f"{cfg.subnet}.0/24",
        "host_cpus": cfg.host_cpus,
        "kvm": None,
        "hosts": [],
        "files": [MANIFEST, "cluster.key", "console"],
    }
    _write_manifest(d, lab)
    try:
        _up(d, hosts, cfg, lab)
    except BaseException:
        with contextlib.suppress(Exception):
            lab_down(d, cfg)
        raise
    return lab


def _up(d: Path, hosts: int, cfg: LabConfig, lab: dict[str, Any]) -> None:
    tag, under = lab["tag"], lab["underlay"]
    lab["kvm"] = _kvm_fix()
    console = d / "console"
    console.mkdir(exist_ok=True)
    os.chmod(console, 0o1777)
    write_key(d / "cluster.key", generate_key())
    netns_add(under)
    sh("ip", "-n", under, "link", "add", "br0", "type", "bridge")
    sh("ip", "-n", under, "link", "set", "br0", "up")
    nodes: list[LibvirtdNode] = []
    for i in range(1, hosts + 1):
        ns, ip = f"{tag}h{i}", f"{cfg.subnet}.{i}"
        lab["files"].append(f"host{i}")
        row: dict[str, Any] = {"name": f"host{i}", "netns": ns, "address": ip}
        lab["hosts"].append(row)
        _write_manifest(d, lab)
        netns_add(ns)
        sh("ip", "-n", under, "link", "add", f"v{i}", "type", "veth", "peer", "name", "eth0")
        sh("ip", "-n", under, "link", "set", "eth0", "netns", ns)
        sh("ip", "-n", under, "link", "set", f"v{i}", "master", "br0", "up")
        sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", "eth0")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
        node = LibvirtdNode(f"host{i}", d / f"host{i}" / "libvirt", ns, ip)
        node.start()
        node.wait_ready(cfg.start_timeout_s)
        nodes.append(node)
        row.update(
            libvirtd_pid=node.pid,
            libvirt_uri=node.uri,
            peer_uri=node.peer_uri,
            socket=str(d / f"host{i}" / "dvms" / "dvms.sock"),
            state_dir=str(d / f"host{i}" / "dvms"),
        )
        _write_manifest(d, lab)
    errors: list[str] = []
    probes = [threading.Thread(target=_probe, args=(n.uri, errors)) for n in nodes]
    for t in probes:
        t.start()
    for t in probes:
        t.join()
    if errors:
        raise LabError(f"libvirtd QEMU probe failed: {errors[0]}")
    for node, row in zip(nodes, lab["hosts"], strict=True):
        i = int(row["name"].removeprefix("host"))
        state = Path(row["state_dir"])
        state.mkdir(parents=True, exist_ok=True, mode=0o700)
        (d / f"host{i}" / "node.toml").write_text(_node_toml(d, i, node.ip, cfg))
        row["daemon_pid"] = _start_daemon(d, i, node.netns, cfg)
        _write_manifest(d, lab)
        _wait(
            partial(_started, state),
            cfg.start_timeout_s,
            f"the dvms daemon of host{i} ({state / 'node.log'})",
        )
    for row in lab["hosts"]:
        _wait(
            partial(_sees_all, row["socket"], hosts),
            cfg.start_timeout_s,
            f"{row['name']} to see the other hosts",
        )
    lab["started"] = time.time()
    _write_manifest(d, lab)


def _start_daemon(d: Path, i: int, netns: str, cfg: LabConfig) -> int:
    host = d / f"host{i}"
    cmd = ["ip", "netns", "exec", netns, sys.executable, "-m", "dvms", "node", "run"]
    cmd += ["--config", str(host / "node.toml"), "--log-level", cfg.log_level]
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    with open(host / "dvms" / "node.log", "ab") as log:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )
    return proc.pid  # `ip netns exec` execs the daemon: this pid is the daemon's


def _started(state: Path) -> bool:
    return (state / "node.json").exists() and (state / "dvms.sock").exists()


def _sees_all(sock: str, hosts: int) -> bool:
    peers = call(sock, "peers", timeout=5.0)
    return len(peers) >= hosts - 1 and all(p["name"] for p in peers)


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie is gone for our purposes
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def lab_status(d: Path) -> list[dict[str, Any]]:
    """One row per host: name, netns, address, socket, libvirt URI, what runs."""
    lab = _read_manifest(d.resolve())
    rows = []
    for h in lab["hosts"]:
        row = {
            "name": h["name"],
            "netns": h["netns"],
            "address": h["address"],
            "socket": h.get("socket", ""),
            "libvirt_uri": h.get("libvirt_uri", ""),
            "peer_uri": h.get("peer_uri", ""),
            "libvirtd": _alive(h.get("libvirtd_pid")),
            "daemon": _alive(h.get("daemon_pid")),
            "vms": None,
        }
        if row["daemon"]:
            with contextlib.suppress(ControlError, OSError):
                row["vms"] = call(row["socket"], "status", timeout=5.0)["vms"]
        rows.append(row)
    return rows


def _netns_inode(name: str) -> int | None:
    try:
        return os.stat(f"/run/netns/{name}").st_ino
    except OSError:
        return None


def _pids_in(inodes: set[int]) -> list[int]:
    """Processes whose network namespace is one of ``inodes`` (by /proc/PID/ns/net)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry}/ns/net").st_ino in inodes:
                out.append(int(entry))
        except OSError:
            continue
    return out


def _stop(pids: list[int], grace: float) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in pids:
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + grace
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)


def _lab_pids(lab: dict[str, Any]) -> list[int]:
    inodes = {
        ino
        for ns in [lab["underlay"], *(h["netns"] for h in lab["hosts"])]
        if (ino := _netns_inode(ns)) is not None
    }
    pids = set(_pids_in(inodes)) if inodes else set()
    for h in lab["hosts"]:
        for key in ("daemon_pid", "libvirtd_pid"):
            if _alive(h.get(key)):
                pids.add(int(h[key]))
    return sorted(pids - {os.getpid()})


def lab_down(d: Path, config: LabConfig | None = None) -> list[str]:
    """Stop everything of the lab in ``d`` and remove it; returns the leftovers (none
    when all went well)."""
    cfg = config or LabConfig()
    d = d.resolve()
    lab = _read_manifest(d)
    # daemons first (they stop their partitions), then everything else in the namespaces
    daemons = [int(h["daemon_pid"]) for h in lab["hosts"] if _alive(h.get("daemon_pid"))]
    _stop(daemons, cfg.stop_grace_s)
    _stop(_lab_pids(lab), cfg.stop_grace_s)
    for h in lab["hosts"]:
        netns_del(h["netns"])
    netns_del(lab["underlay"])
    kvm = lab.get("kvm")
    if kvm:
        with contextlib.suppress(OSError):
            os.chown("/dev/kvm", -1, int(kvm["gid"]))
            os.chmod("/dev/kvm", int(kvm["mode"]))
    for name in lab.get("files", []):
        path = d / name
        if path.is_dir() and not path.is_symlink():
            _umount_below(path)
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    with contextlib.suppress(FileNotFoundError):
        (d / (MANIFEST + ".tmp")).unlink()
    return lab_leftovers(d, lab)


def _umount_below(path: Path) -> None:
    """Bind mounts of a lab libvirtd live in its own mount namespace, which dies with it;
    should one have leaked into ours, unmount it before deleting the tree."""
    with open("/proc/self/mounts") as fh:
        targets = [line.split()[1] for line in fh if line.split()[1].startswith(str(path))]
    for target in sorted(targets, reverse=True):
        subprocess.run(["umount", "-l", target], capture_output=True, timeout=30)


def lab_leftovers(d: Path, lab: dict[str, Any]) -> list[str]:
    """What of the lab described by ``lab`` still exists: namespaces, processes (in
    them or recorded), files."""
    out = []
    names = [lab["underlay"], *(h["netns"] for h in lab["hosts"])]
    present = set()
    with contextlib.suppress(OSError):
        present = set(os.listdir("/run/netns"))
    out += [f"netns {n}" for n in names if n in present]
    out += [f"process {p}" for p in _lab_pids(lab)]
    out += [f"file {d / n}" for n in lab.get("files", []) if (d / n).exists()]
    tag = lab["tag"]
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, timeout=30)
    out += [f"link {ln.split(':')[1].strip()}" for ln in links.stdout.splitlines() if tag in ln]
    return out


# -- guests of the lab ---------------------------------------------------------------------

#: Guest network of the lab vjobs: guest I gets ``<GUEST_SUBNET>.I/24``; a probe address
#: on a host's namespace bridge (``probe_attach``) is ``<GUEST_SUBNET>.254``.
GUEST_SUBNET = "10.77.0"
PROBE_IP = f"{GUEST_SUBNET}.254"


def guest_ip(i: int) -> str:
    return f"{GUEST_SUBNET}.{i}"


def lab_vjob(
    kernel: str,
    initrd: str,
    guests: int,
    *,
    name: str = "lab",
    namespace: str = "lab",
    memory_mib: int = 96,
    spread: bool = True,
    disk: str | None = None,
    ha: bool = False,
) -> str:
    """A vjob file (TOML) of ``guests`` lab guests ``g1..gN`` on one network, guest I
    at ``guest_ip(I)`` pinging all the others. ``spread``: g1..g3 on three different
    hosts and g4.. away from g1 (a strict spread of 4 VMs needs 4 hosts). ``ha``: every
    guest is restarted elsewhere when its host fails (``ha = "restart"``)."""
    from dvms.hypervisor.lab.guest import lab_cmdline

    ips = [guest_ip(i) for i in range(1, guests + 1)]
    lines = [f'name = "{name}"', f'namespace = "{namespace}"']
    for i in range(1, guests + 1):
        peers = tuple(ip for ip in ips if ip != guest_ip(i))
        append = lab_cmdline(f"g{i}", f"{guest_ip(i)}/24", peers)
        lines += [
            "[[vms]]",
            f'name = "g{i}"',
            "vcpus = 1",
            f"memory = {memory_mib}",
            f'kernel = "{kernel}"',
            f'initrd = "{initrd}"',
            f'append = "{append}"',
            'networks = ["lan"]',
        ]
        if disk:
            lines.append(f'disk = "{disk}"')
        if ha:
            lines.append('ha = "restart"')
    if spread and guests > 1:
        first = [f"g{i}" for i in range(1, min(guests, 3) + 1)]
        lines += ["[[constraints]]", 'kind = "spread"', f"vms = {json.dumps(first)}"]
        for i in range(4, guests + 1):
            lines += ["[[constraints]]", 'kind = "spread"', f'vms = ["g1", "g{i}"]']
    return "\n".join(lines) + "\n"


def host_netns(d: Path, host: str) -> str:
    """The network namespace of lab host ``host``."""
    for h in _read_manifest(d.resolve())["hosts"]:
        if h["name"] == host:
            return str(h["netns"])
    raise LabError(f"no host {host!r} in the lab in {d}")


def probe_attach(netns: str, namespace: str, ip: str = PROBE_IP) -> None:
    """Give ``namespace``'s VM bridge in ``netns`` the address ``ip``/24: from that lab
    host, a tool can then reach every guest of the namespace (over the mesh)."""
    from dvms.hypervisor.net.naming import bridge_name, namespace_key

    bridge = bridge_name(namespace_key(namespace or "default"))
    sh("ip", "-n", netns, "addr", "replace", f"{ip}/24", "dev", bridge)


def guest_command(netns: str, ip: str, command: str, timeout: float = 10.0) -> str:
    """Send one line to the lab guest at ``ip`` (its command server: ``burn P``,
    ``uptime``, ``write TEXT``, ``read``) from lab host ``netns``; its answer."""
    from dvms.hypervisor.lab.guest import DEFAULT_CACHE, LAB_CONTROL_PORT

    busybox = str(DEFAULT_CACHE / "busybox-static" / "bin" / "busybox")
    try:
        proc = subprocess.run(
            ["ip", "netns", "exec", netns, busybox, "nc", "-w", "3", ip, str(LAB_CONTROL_PORT)],
            input=command + "\n",
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return ""
    return proc.stdout.strip()


# -- scenario helpers (tests, bench/lab.py, make lab) --------------------------------------


def lab_socket(d: Path, host: str) -> str:
    """The control socket of lab host ``host``'s daemon."""
    for h in _read_manifest(d.resolve())["hosts"]:
        if h["name"] == host:
            return str(h["socket"])
    raise LabError(f"no host {host!r} in the lab in {d}")


def lab_call(
    d: Path, host: str, cmd: str, args: dict[str, Any] | None = None, timeout: float = 60.0
) -> Any:
    """One control command on lab host ``host``'s daemon."""
    return call(lab_socket(d, host), cmd, args or {}, timeout=timeout)


def console_text(d: Path, namespace: str, name: str) -> str:
    """Guest ``namespace/name``'s serial console so far ("" before it boots)."""
    path = d / "console" / f"{namespace}:{name}.log" if namespace else d / "console" / f"{name}.log"
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def wait_until(pred: Callable[[], Any], timeout: float, what: str, poll: float = 0.5) -> Any:
    """Poll ``pred`` until it returns something true; ``LabError`` after ``timeout`` s."""
    return _wait(pred, timeout, what, poll)


def pings(d: Path, namespace: str, guests: int) -> dict[str, dict[str, bool]]:
    """Guest gI -> peer address -> whether gI's last ping of it (console) succeeded."""
    from dvms.hypervisor.lab.guest import parse_pings

    return {f"g{i}": parse_pings(console_text(d, namespace, f"g{i}")) for i in range(1, guests + 1)}


def every_pair_pings(d: Path, namespace: str, guests: int) -> bool:
    """Every guest's last ping to every other guest succeeded."""
    seen = pings(d, namespace, guests)
    return all(
        seen[f"g{i}"].get(guest_ip(j)) is True
        for i in range(1, guests + 1)
        for j in range(1, guests + 1)
        if i != j
    )


def settle_then_overload(
    d: Path, host: str, burn: Callable[[], None], *, rise: float = 0.04, timeout: float = 90.0
) -> tuple[float, float, float]:
    """Make lab host ``host`` overloaded by measured demand: read its idle demand (the
    lowest of a few readings: guests that just booted still settle), call ``burn`` (a
    guest starts burning CPU), wait until the measured demand has risen by ``rise`` CPUs,
    then set the host's capacity halfway between the two. How much CPU a burning TCG
    guest gets depends on what else this machine runs (a whole core when idle, 0.1 CPU
    under a load of 15), so the capacity is placed where the burn actually lands.
    Returns (idle demand, burning demand, capacity)."""
    readings = []
    for _ in range(3):
        readings.append(float(lab_call(d, host, "debug_loads")["demand"]))
        time.sleep(3.0)
    idle = min(readings)
    burn()
    burning = float(
        _wait(
            lambda: (v := float(lab_call(d, host, "debug_loads")["demand"])) >= idle + rise and v,
            timeout,
            f"{host}'s measured demand to rise above {idle + rise:.3f} CPUs",
            poll=1.0,
        )
    )
    capacity = round((idle + burning) / 2, 3)
    lab_call(d, host, "debug_capacity", {"cpus": capacity})
    return idle, burning, capacity
