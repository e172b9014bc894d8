"""Shared guards for the real-infrastructure tests: they skip with the reason, never pass."""

from __future__ import annotations

import os
import shutil

import pytest


def require_root(what: str) -> None:
    if os.geteuid() != 0:
        pytest.skip(f"needs root ({what})")


def require_tools(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"missing tools: {', '.join(missing)} (scripts/debian-packages.txt)")


@pytest.fixture
def run_tag() -> str:
    """A short per-run prefix for namespaces and links, so parallel runs never collide."""
    return f"dv{os.getpid() % 100000:05d}"


def require_lab() -> None:
    """What ``dvms lab up`` needs: root, libvirtd and QEMU, the Debian tools that fetch
    the guest, libvirt-python, pyroute2 and VXLAN in the kernel."""
    require_root("network + mount namespaces, libvirtd")
    require_tools("libvirtd", "virtlogd", "virsh", "qemu-system-x86_64", "ip", "unshare", "apt-get")
    pytest.importorskip("libvirt", reason="libvirt-python not installed")
    pytest.importorskip("pyroute2", reason="pyroute2 not installed")
    from dvms.hypervisor.net.pyroute2_backend import missing_tunnel_support

    why = missing_tunnel_support("vxlan")
    if why:
        pytest.skip(why)
