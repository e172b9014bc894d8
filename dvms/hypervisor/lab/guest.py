"""A tiny Linux guest built from Debian packages: stock kernel + busybox initramfs.

No image download: ``apt-get download`` fetches the Debian kernel and ``busybox-static``
(neither is installed, only unpacked with ``dpkg-deb -x``), and the initramfs is written
here as a newc cpio archive (no ``cpio`` binary or ``mknod`` needed; the console device
node is an archive entry). Its ``/init`` prints ``GUEST UP`` and then, once a second,
``tick N uptime U`` on ttyS0, so a test can see that a migrated guest kept running.
Boots in ~2 s under TCG with 128 MiB (64 MiB does not boot, measured on this machine).
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DEFAULT_CACHE",
    "LAB_CONTROL_PORT",
    "TinyGuest",
    "build_lab_guest",
    "build_tiny_guest",
    "lab_cmdline",
    "newc_archive",
    "parse_pings",
    "parse_ticks",
]

#: world-traversable, so QEMU running as libvirt-qemu can read the kernel and initrd
DEFAULT_CACHE = Path("/var/cache/dvms/guest")

INIT_SCRIPT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
mkdir -p /proc /sys /tmp
mount -t proc proc /proc
mount -t sysfs sys /sys
echo "GUEST UP"
i=0
while true; do
  i=$((i+1))
  echo "tick $i uptime $(cut -d' ' -f1 /proc/uptime)"
  sleep 1
done
"""

#: kernel command line of the tiny guest
CMDLINE = "console=ttyS0 panic=-1 quiet loglevel=3"


@dataclass(frozen=True, slots=True)
class TinyGuest:
    kernel: Path
    initrd: Path
    cmdline: str = CMDLINE
    kernel_package: str = ""


def _run(cmd: list[str], cwd: Path | None = None) -> str:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def kernel_package() -> str:
    """The concrete kernel package ``linux-image-amd64`` currently points to."""
    out = _run(["apt-cache", "depends", "linux-image-amd64"])
    match = re.search(r"Depends:\s*(linux-image-[\w.+-]+-amd64)", out)
    if not match:
        raise RuntimeError(f"cannot resolve linux-image-amd64: {out.strip()!r}")
    return match.group(1)


def _fetch(package: str, cache: Path) -> Path:
    """``apt-get download`` once into ``cache``; unpacked tree path."""
    tree = cache / package
    if (tree / ".ok").exists():
        return tree
    debs = sorted(cache.glob(f"{package}_*.deb"))
    if not debs:
        _run(["apt-get", "download", "-q", package], cwd=cache)
        debs = sorted(cache.glob(f"{package}_*.deb"))
    shutil.rmtree(tree, ignore_errors=True)
    tree.mkdir()
    # only what the guest needs: the kernel image (not ~400 MB of modules), busybox
    wanted = "./boot" if package.startswith("linux-image") else "./bin"
    tar = subprocess.run(
        f"dpkg-deb --fsys-tarfile '{debs[-1]}' | tar -x -C '{tree}' '{wanted}'",
        shell=True,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if tar.returncode != 0:
        raise RuntimeError(f"unpacking {debs[-1].name} failed: {tar.stderr.strip()}")
    (tree / ".ok").touch()
    return tree


def newc_archive(entries: list[tuple[str, int, bytes, tuple[int, int]]]) -> bytes:
    """A cpio "newc" archive of (path, mode, data, (rdev major, minor)) entries."""
    out = bytearray()

    def pad() -> None:
        out.extend(b"\0" * (-len(out) % 4))

    for ino, (name, mode, data, (major, minor)) in enumerate(
        [*entries, ("TRAILER!!!", 0, b"", (0, 0))], start=1
    ):
        raw = name.encode() + b"\0"
        fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, major, minor, len(raw), 0]
        out += b"070701" + b"".join(b"%08X" % f for f in fields) + raw
        pad()
        out += data
        pad()
    return bytes(out)


def build_tiny_guest(cache: Path = DEFAULT_CACHE) -> TinyGuest:
    """Fetch (once) and assemble the guest; returns paths inside ``cache``."""
    cache.mkdir(parents=True, exist_ok=True)
    for parent in [cache, *cache.parents]:
        if parent == Path("/"):
            break
        os.chmod(parent, os.stat(parent).st_mode | 0o055)  # traversable by libvirt-qemu
    kpkg = kernel_package()
    ktree, btree = _fetch(kpkg, cache), _fetch("busybox-static", cache)
    kernel = next((ktree / "boot").glob("vmlinuz-*"))
    busybox = (btree / "bin" / "busybox").read_bytes()
    archive = newc_archive(
        [
            ("bin", 0o040755, b"", (0, 0)),
            ("dev", 0o040755, b"", (0, 0)),
            ("dev/console", 0o020600, b"", (5, 1)),
            ("bin/busybox", 0o100755, busybox, (0, 0)),
            ("init", 0o100755, INIT_SCRIPT.encode(), (0, 0)),
        ]
    )
    initrd = cache / "initrd-busybox.gz"
    tmp = initrd.with_suffix(".tmp")
    tmp.write_bytes(gzip.compress(archive, compresslevel=1))
    tmp.replace(initrd)
    for path in (kernel, initrd):
        os.chmod(path, 0o644)
    return TinyGuest(kernel, initrd, CMDLINE, kpkg)


_TICK = re.compile(r"tick (\d+) uptime ([\d.]+)")


def parse_ticks(log: str) -> list[tuple[int, float]]:
    """(tick number, guest uptime in s) for every tick line of a serial log."""
    return [(int(n), float(u)) for n, u in _TICK.findall(log)]


# -- the lab guest -------------------------------------------------------------------------

#: Kernel modules the lab guest loads, in dependency order (Debian builds virtio as
#: modules; the order is their ``depends=``):
#: the virtio PCI transport, virtio-net (with its failover helpers) and virtio-blk.
LAB_MODULES = (
    "drivers/virtio/virtio_ring.ko",
    "drivers/virtio/virtio.ko",
    "drivers/virtio/virtio_pci_legacy_dev.ko",
    "drivers/virtio/virtio_pci_modern_dev.ko",
    "drivers/virtio/virtio_pci.ko",
    "net/core/failover.ko",
    "drivers/net/net_failover.ko",
    "drivers/net/virtio_net.ko",
    "drivers/block/virtio_blk.ko",
)

#: TCP port of the lab guest's command server (``burn P``, ``uptime``, ``write``, ``read``).
LAB_CONTROL_PORT = 5000

#: Seconds between two rounds of pings to the peers named on the command line.
LAB_PING_PERIOD_S = 3

LAB_INIT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
mkdir -p /proc /sys /tmp
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
for m in $(cat /lib/modules.order); do insmod "/lib/$m" || echo "module $m: not loaded"; done
arg() { for w in $(cat /proc/cmdline); do case "$w" in "$1="*) echo "${w#*=}";; esac; done; }
NAME=$(arg dvms.name); IP=$(arg dvms.ip); PEERS=$(arg dvms.peers); BURN=$(arg dvms.burn)
ip link set lo up
n=0
while [ -n "$IP" ] && [ ! -e /sys/class/net/eth0 ] && [ $n -lt 20 ]; do sleep 0.5; n=$((n+1)); done
if [ -n "$IP" ]; then
  ip link set eth0 up && ip addr add "$IP" dev eth0 || echo "NIC eth0: not configured"
fi
echo "GUEST UP name=$NAME ip=$IP"
nc -ll -p __PORT__ -e /bin/ctl &
[ -n "$BURN" ] && /bin/burn "$BURN"
if [ -n "$PEERS" ]; then
  (while true; do
     for p in $(echo "$PEERS" | tr , ' '); do
       if ping -c 1 -W 1 "$p" >/dev/null 2>&1; then echo "ping $p ok"; else echo "ping $p fail"; fi
     done
     sleep __PING__
   done) &
fi
i=0
while true; do
  i=$((i+1))
  echo "tick $i uptime $(cut -d' ' -f1 /proc/uptime)"
  sleep 1
done
"""

# ``burn P``: keep P % of the vCPU busy (a spinning shell, stopped and continued by a
# second one every 100 ms); ``burn 0`` stops. Logged on the console with the uptime.
LAB_BURN = """#!/bin/sh
if [ -f /tmp/burn.pids ]; then kill -9 $(cat /tmp/burn.pids) 2>/dev/null; rm -f /tmp/burn.pids; fi
P=${1:-0}
if [ "$P" -gt 0 ] 2>/dev/null; then
  # detached from the caller's stdout (the command server's socket stays closable)
  (while :; do :; done) </dev/null >/dev/null 2>&1 &
  b=$!
  if [ "$P" -lt 100 ]; then
    on=$((P*1000)); off=$(((100-P)*1000))
    (while :; do usleep $on; kill -STOP $b; usleep $off; kill -CONT $b; done) \
      </dev/null >/dev/null 2>&1 &
    echo "$! $b" > /tmp/burn.pids
  else
    echo "$b" > /tmp/burn.pids
  fi
else
  P=0
fi
echo "burn $P uptime $(cut -d' ' -f1 /proc/uptime)" > /dev/console
"""

LAB_CTL = """#!/bin/sh
read cmd arg
case "$cmd" in
  burn) /bin/burn "$arg"; echo "ok burn $arg" ;;
  uptime) cut -d' ' -f1 /proc/uptime ;;
  write) echo "$arg" | dd of=/dev/vda bs=512 count=1 conv=sync 2>/dev/null; sync; echo ok ;;
  read) dd if=/dev/vda bs=512 count=1 2>/dev/null | tr -d '\\000'; echo ;;
  *) echo "unknown command: $cmd" ;;
esac
"""

#: Kernel command line of the lab guest (``lab_cmdline`` adds the per-VM words).
LAB_CMDLINE = "console=ttyS0 panic=-1 quiet loglevel=3"

#: RAM of a lab guest, MiB. 64 MiB does not boot the stock kernel (measured here).
LAB_MEMORY_MIB = 96


def lab_cmdline(name: str, ip: str = "", peers: tuple[str, ...] = (), burn: int = 0) -> str:
    """The lab guest's command line: its name, its address (``10.77.0.1/24``), the
    peers it pings, and an optional CPU burn (percent of its vCPU) from boot."""
    words = [LAB_CMDLINE, f"dvms.name={name}"]
    if ip:
        words.append(f"dvms.ip={ip}")
    if peers:
        words.append("dvms.peers=" + ",".join(peers))
    if burn:
        words.append(f"dvms.burn={burn}")
    return " ".join(words)


def _fetch_modules(package: str, cache: Path) -> Path:
    """The ``LAB_MODULES`` of kernel ``package`` unpacked under ``cache`` (once)."""
    tree = cache / f"{package}-lab-modules"
    if (tree / ".ok").exists():
        return tree
    _fetch(package, cache)  # downloads the .deb if needed
    deb = sorted(cache.glob(f"{package}_*.deb"))[-1]
    version = package.removeprefix("linux-image-")
    paths = " ".join(f"'./lib/modules/{version}/kernel/{m}'" for m in LAB_MODULES)
    shutil.rmtree(tree, ignore_errors=True)
    tree.mkdir()
    tar = subprocess.run(
        f"dpkg-deb --fsys-tarfile '{deb}' | tar -x -C '{tree}' {paths}",
        shell=True,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if tar.returncode != 0:
        raise RuntimeError(f"unpacking modules of {deb.name} failed: {tar.stderr.strip()}")
    (tree / ".ok").touch()
    return tree


def build_lab_guest(cache: Path = DEFAULT_CACHE) -> TinyGuest:
    """The lab guest: the tiny guest plus virtio-net/virtio-blk modules and an init that
    configures ``eth0`` from ``dvms.ip=``, pings ``dvms.peers=``, serves commands on
    ``LAB_CONTROL_PORT`` and burns CPU on request. Its own initrd file
    (``initrd-lab.gz``), so it never replaces the tiny guest's."""
    cache.mkdir(parents=True, exist_ok=True)
    for parent in [cache, *cache.parents]:
        if parent == Path("/"):
            break
        os.chmod(parent, os.stat(parent).st_mode | 0o055)  # traversable by libvirt-qemu
    kpkg = kernel_package()
    ktree, _ = _fetch(kpkg, cache), _fetch("busybox-static", cache)
    kernel = next((ktree / "boot").glob("vmlinuz-*"))
    os.chmod(kernel, 0o644)
    mods = _fetch_modules(kpkg, cache)
    version = kpkg.removeprefix("linux-image-")
    busybox = (cache / "busybox-static" / "bin" / "busybox").read_bytes()
    entries: list[tuple[str, int, bytes, tuple[int, int]]] = [
        ("bin", 0o040755, b"", (0, 0)),
        ("dev", 0o040755, b"", (0, 0)),
        ("lib", 0o040755, b"", (0, 0)),
        ("dev/console", 0o020600, b"", (5, 1)),
        ("bin/busybox", 0o100755, busybox, (0, 0)),
        ("bin/burn", 0o100755, LAB_BURN.encode(), (0, 0)),
        ("bin/ctl", 0o100755, LAB_CTL.encode(), (0, 0)),
        ("lib/modules.order", 0o100644, "\n".join(LAB_MODULES).encode() + b"\n", (0, 0)),
    ]
    dirs: set[str] = set()
    for module in LAB_MODULES:
        parts = f"lib/{module}".split("/")[:-1]
        for i in range(2, len(parts) + 1):
            d = "/".join(parts[:i])
            if d not in dirs:
                dirs.add(d)
                entries.append((d, 0o040755, b"", (0, 0)))
        data = (mods / "lib" / "modules" / version / "kernel" / module).read_bytes()
        entries.append((f"lib/{module}", 0o100644, data, (0, 0)))
    init = LAB_INIT.replace("__PORT__", str(LAB_CONTROL_PORT)).replace(
        "__PING__", str(LAB_PING_PERIOD_S)
    )
    entries.append(("init", 0o100755, init.encode(), (0, 0)))
    initrd = cache / "initrd-lab.gz"
    tmp = cache / f"initrd-lab.{os.getpid()}.tmp"
    tmp.write_bytes(gzip.compress(newc_archive(entries), compresslevel=1))
    os.chmod(tmp, 0o644)
    tmp.replace(initrd)
    return TinyGuest(kernel, initrd, LAB_CMDLINE, kpkg)


_PING = re.compile(r"ping ([\d.]+) (ok|fail)")


def parse_pings(log: str) -> dict[str, bool]:
    """Peer address -> whether its *last* ping in a serial log succeeded."""
    return {ip: result == "ok" for ip, result in _PING.findall(log)}
