"""A tiny Linux guest built from Debian packages: stock kernel + busybox initramfs.

No image download: ``apt-get download`` fetches the Debian kernel and ``busybox-static``
(neither is installed, only unpacked with ``dpkg-deb -x``), and the initramfs is written
here as a newc cpio archive (no ``cpio`` binary or ``mknod`` needed; the console device
node is an archive entry). Its ``/init`` prints ``GUEST UP`` and then, once a second,
``tick N uptime U`` on ttyS0, so a test can see that a migrated guest kept running.
Boots in ~2 s under TCG with 128 MiB (64 MiB does not boot: real-infra.md §2).
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DEFAULT_CACHE", "TinyGuest", "build_tiny_guest", "newc_archive", "parse_ticks"]

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
