"""A lab of real hypervisor hosts (``dvms lab``): real guests placed, tunnelled and
live-migrated by DVMS partitions, checked from outside dvms (consoles, ``virsh``,
``ip link`` inside each host's namespace).

One 3-host lab serves the tests in file order (each cleans its namespace; the daemon
kill comes last) and is taken down at the end, pass or fail; ``lab down`` of a lab of
its own is checked to leave nothing. TCG guests on a machine shared with other work
boot slowly, hence the generous timeouts.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.real.conftest import require_lab, require_tools

pytestmark = pytest.mark.real

HOSTS = 3
GUESTS = 4
NS = "lab"
#: A TCG guest's boot, on a loaded 2-core machine: seconds.
BOOT_TIMEOUT_S = 300.0
#: The bound from "overloaded" to "a VM moved away" (30 s), with room for a
#: loaded machine.
OVERLOAD_TIMEOUT_S = 60.0


@pytest.fixture(scope="module")
def lab() -> Iterator[Path]:
    require_lab()
    from dvms.runtime.lab import LabConfig, lab_down, lab_up

    d = Path(tempfile.mkdtemp(prefix="dvms-lab-"))
    try:
        lab_up(d, HOSTS, LabConfig(host_cpus=2.0))
        yield d
    finally:
        with contextlib.suppress(Exception):
            lab_down(d)
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def guests(lab: Path) -> Path:
    """The vjob of 4 lab guests in namespace ``lab``, submitted once, booted. Their
    kernel and initrd are files host1 added (``file:lab/kernel``, ``file:lab/initrd``):
    every other host fetches them from its peers before it creates a guest."""
    from dvms.hypervisor.lab.guest import build_lab_guest
    from dvms.runtime.lab import console_text, lab_vjob, wait_until

    g = build_lab_guest()
    for part, path in (("kernel", g.kernel), ("initrd", g.initrd)):
        _dvms(lab, "host1", "--json", "file", "add", str(path), "--name", f"lab/{part}")
    vjob = lab / "vjob.toml"
    vjob.write_text(lab_vjob("file:lab/kernel", "file:lab/initrd", GUESTS, namespace=NS))
    t0 = time.monotonic()
    out = _dvms(lab, "host1", "--json", "submit", str(vjob))
    assert len(out["placed"]) == GUESTS, out
    submitted = time.monotonic() - t0
    print(f"submit -> {GUESTS} VMs created: {submitted:.1f} s")
    wait_until(
        lambda: all("GUEST UP" in console_text(lab, NS, f"g{i}") for i in range(1, GUESTS + 1)),
        BOOT_TIMEOUT_S,
        "every guest to print GUEST UP on its console",
        poll=1.0,
    )
    return lab


def _dvms(d: Path, host: str, *args: str, timeout: float = 120.0) -> Any:
    import json
    import sys

    from dvms.runtime.lab import lab_socket

    cmd = [sys.executable, "-m", "dvms", "--socket", lab_socket(d, host), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(args)}: {proc.stderr.strip()}"
    return json.loads(proc.stdout) if "--json" in args else proc.stdout


def _where(d: Path) -> dict[str, str]:
    """Guest name -> host, as every host reports it (``vm info --all``)."""
    from dvms.runtime.lab import lab_call

    rows = lab_call(d, "host1", "vm_info", {"namespace": NS})["vms"]
    return {r["name"]: r["host"] for r in rows}


def _virsh_names(d: Path, host: str) -> list[str]:
    from dvms.runtime.lab import lab_status

    uri = next(r["libvirt_uri"] for r in lab_status(d) if r["name"] == host)
    out = subprocess.run(
        ["virsh", "-c", uri, "list", "--all", "--name"], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return [n for n in out.stdout.split() if n]


def _dv_links(d: Path, host: str) -> list[str]:
    """Bridges and tunnels dvms made in lab host ``host``'s namespace."""
    from dvms.runtime.lab import host_netns

    out = subprocess.run(
        ["ip", "-n", host_netns(d, host), "-o", "link"], capture_output=True, text=True
    )
    names = [line.split(":")[1].strip().split("@")[0] for line in out.stdout.splitlines()]
    return [n for n in names if n.startswith(("dvb", "dvx", "dvg"))]


# -- 1 -------------------------------------------------------------------------------------


def test_1_spread_vjob_runs_and_every_guest_pings_every_other(guests: Path) -> None:
    from dvms.runtime.lab import every_pair_pings, lab_call, pings, wait_until

    rows = lab_call(guests, "host1", "vm_info", {"namespace": NS})["vms"]
    assert sorted(r["name"] for r in rows) == [f"g{i}" for i in range(1, GUESTS + 1)]
    assert all(r["state"] == "RUNNING" for r in rows), rows
    where = {r["name"]: r["host"] for r in rows}
    assert len({where["g1"], where["g2"], where["g3"]}) == 3, where  # spread(g1, g2, g3)
    assert where["g4"] != where["g1"], where  # spread(g1, g4)
    assert len(set(where.values())) == HOSTS  # every host runs guests
    try:
        wait_until(
            lambda: every_pair_pings(guests, NS, GUESTS), 120.0, "every pair to ping", poll=1.0
        )
    except Exception:
        pytest.fail(f"pings: {pings(guests, NS, GUESTS)}")
    # the mesh spans exactly the hosts running the namespace: all three here
    for h in {f"host{i}" for i in range(1, HOSTS + 1)}:
        assert len(_dv_links(guests, h)) == 2, (h, _dv_links(guests, h))
    # the guests booted from images fetched through `file:`: every host holds both
    # files complete, pinned by its guests
    roots = {
        e["root"]
        for e in _dvms(guests, "host1", "--json", "file", "list")["files"]
        if set(e["names"]) & {"lab/kernel", "lab/initrd"}
    }
    assert len(roots) == 2, roots
    for h in {f"host{i}" for i in range(2, HOSTS + 1)}:
        held = {e["root"]: e for e in _dvms(guests, h, "--json", "file", "list")["files"]}
        assert roots <= set(held), (h, sorted(held))
        assert all(held[r]["complete"] and held[r]["pinned"] for r in roots), (h, held)


# -- 2 -------------------------------------------------------------------------------------


def test_2_a_burning_guest_overloads_its_host_and_a_partition_migrates_a_vm_away(
    guests: Path,
) -> None:
    from dvms.hypervisor.lab.guest import parse_ticks
    from dvms.runtime.lab import (
        console_text,
        guest_command,
        guest_ip,
        host_netns,
        lab_call,
        probe_attach,
        settle_then_overload,
        wait_until,
    )

    where = _where(guests)
    src = where["g4"]  # g4 shares its host with g2 or g3
    others = sorted(n for n, h in where.items() if h == src)
    assert len(others) == 2, where
    probe_host = where["g1"]
    probe_ns = host_netns(guests, probe_host)
    probe_attach(probe_ns, NS)
    wait_until(
        lambda: len(lab_call(guests, src, "debug_loads")["measured"]) == len(others),
        30.0,
        "the source host to measure its guests",
    )
    ticks_before = {n: parse_ticks(console_text(guests, NS, n)) for n in others}

    def burn() -> None:
        answer = guest_command(probe_ns, guest_ip(4), "burn 100")
        assert "ok burn 100" in answer, answer

    idle, burning, capacity = settle_then_overload(guests, src, burn)
    print(f"{src}: demand {idle} idle, {burning} with g4 burning; capacity {capacity}")
    t0 = time.monotonic()
    moved = wait_until(
        lambda: [n for n, h in _where(guests).items() if n in others and h != src],
        OVERLOAD_TIMEOUT_S,
        f"a partition to move g2/g3/g4 away from {src} (capacity {capacity} CPUs)",
        poll=1.0,
    )
    moved_s = time.monotonic() - t0
    name = moved[0]
    relieved = wait_until(
        lambda: (r := lab_call(guests, src, "debug_loads"))["demand"] <= capacity and r,
        60.0,
        f"{src}'s measured demand to fall under its capacity {capacity}",
    )
    relieved_s = time.monotonic() - t0
    print(f"overload -> {name} moved off {src}: {moved_s:.1f} s; relieved {relieved_s:.1f} s")
    print(f"{src} demand {relieved['demand']} of {capacity} after the move")
    guest_command(probe_ns, guest_ip(4), "burn 0")
    # the migrated guest kept running: one boot, its uptime counter goes on
    last = ticks_before[name][-1]
    wait_until(
        lambda: parse_ticks(console_text(guests, NS, name))[-1][0] > last[0] + 2,
        60.0,
        f"{name} to tick on after the migration",
    )
    # the vjob's spread constraints travel with the running guests: the relief kept them
    after = _where(guests)
    assert len({after["g1"], after["g2"], after["g3"]}) == 3, after
    assert after["g4"] != after["g1"], after
    text = console_text(guests, NS, name)
    assert text.count("GUEST UP") == 1, f"{name} booted again"
    uptimes = [u for _, u in parse_ticks(text)]
    assert uptimes == sorted(uptimes), "uptime went backwards: the guest rebooted"
    # the partition that did it, as `partitions --all` shows it: the overload raised an
    # event; the relief is the plan of a partition holding the source host, which may be
    # that event's partition or an underload partition that took the source host in (a
    # leader relieves every overloaded member it holds, whatever event it serves)
    rows = lab_call(guests, "host1", "partitions", {"all": True})["partitions"]
    shown = json.dumps(rows, indent=1)
    assert any(
        e.startswith("overload:") for r in rows if src in r["members"] for e in r["events"]
    ), shown
    assert any(
        src in r["members"] and r["outcome"] == "solved" and r["migrations"] >= 1 for r in rows
    ), shown
    lab_call(guests, src, "debug_capacity", {"cpus": 0.0})


# -- 3 -------------------------------------------------------------------------------------


def test_3_vm_kill_leaves_no_domain_bridge_or_tunnel(guests: Path) -> None:
    """Checked through virsh and ip link in each host's namespace, not through dvms
    (a kill's answer can be lost to a retransmission on a loaded machine: the state is
    what counts). ``clear namespace`` is checked in test 5."""
    from dvms.runtime.lab import lab_call, wait_until

    where = _where(guests)
    host_g1 = where["g1"]
    out = lab_call(guests, "host1", "vm_kill", {"names": "g1", "namespace": NS})
    assert not out["errors"], out
    wait_until(lambda: f"{NS}:g1" not in _virsh_names(guests, host_g1), 30.0, "g1 gone from virsh")
    assert len(_where(guests)) == GUESTS - 1
    hosts = [f"host{i}" for i in range(1, HOSTS + 1)]

    def lab_domains() -> list[str]:
        return [n for h in hosts for n in _virsh_names(guests, h) if n.startswith(f"{NS}:")]

    out = lab_call(guests, "host1", "vm_kill", {"names": "g[2-4]", "namespace": NS})
    assert not out["errors"], out
    wait_until(lambda: not lab_domains(), 60.0, "every lab domain gone from every host")
    wait_until(
        lambda: not any(_dv_links(guests, h) for h in hosts),
        30.0,
        "bridges and tunnels of the namespace to go from every host",
    )


# -- 5 -------------------------------------------------------------------------------------


def test_5_a_guest_with_a_local_disk_migrates_with_what_it_wrote(guests: Path) -> None:
    """A qcow2 overlay on a base image every host holds (no shared storage): the
    overlay goes with the guest (libvirt's incremental copy)."""
    from dvms.hypervisor.lab.guest import build_lab_guest, lab_cmdline
    from dvms.runtime.lab import (
        console_text,
        guest_command,
        guest_ip,
        host_netns,
        probe_attach,
        wait_until,
    )

    require_tools("qemu-img")
    d = guests
    images = "/var/lib/libvirt/images"  # private to each lab host (its own mount)
    for i in range(1, HOSTS + 1):
        local = d / f"host{i}" / "libvirt" / "varlib" / "images"
        local.mkdir(parents=True, exist_ok=True)
        subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(local / "base.img"), "4M"])
        # the overlay names its backing file by the path QEMU sees inside the host
        overlay = ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-u"]
        subprocess.run(
            [*overlay, "-b", f"{images}/base.img", str(local / "d1.qcow2"), "4M"],
            check=True,
        )
        for f in ("base.img", "d1.qcow2"):
            os.chmod(local / f, 0o666)
    g = build_lab_guest()
    ns = "disk"
    append = lab_cmdline("d1", f"{guest_ip(5)}/24")
    script = d / "disk.mm"
    script.write_text(
        "\n".join(
            [
                f"namespace {ns}",
                "vm config memory 96",
                f"vm config kernel {g.kernel}",
                f"vm config initrd {g.initrd}",
                f"vm config append {append}",
                f"vm config disk {images}/d1.qcow2",
                "vm config net lan",
                "vm config schedule host1",
                "vm launch kvm d1",
                "vm start d1",
            ]
        )
        + "\n"
    )
    _dvms(d, "host1", "script", str(script))
    wait_until(lambda: "GUEST UP" in console_text(d, ns, "d1"), BOOT_TIMEOUT_S, "d1 to boot")
    probe = host_netns(d, "host1")
    probe_attach(probe, ns)
    mark = f"written-before-{int(time.time())}"
    # the command server starts right after GUEST UP: give a slow guest a moment
    wait_until(
        lambda: guest_command(probe, guest_ip(5), f"write {mark}") == "ok",
        60.0,
        "d1 to take the write command",
        poll=1.0,
    )
    assert mark in guest_command(probe, guest_ip(5), "read")
    t0 = time.monotonic()
    _dvms(d, "host1", "namespace", ns, "vm", "migrate", "d1", "host2")
    print(f"d1 with its disk host1 -> host2: {time.monotonic() - t0:.1f} s")
    assert f"{ns}:d1" in _virsh_names(d, "host2")
    assert f"{ns}:d1" not in _virsh_names(d, "host1")
    probe2 = host_netns(d, "host2")
    probe_attach(probe2, ns, "10.77.0.253")
    assert mark in guest_command(probe2, guest_ip(5), "read"), "the disk lost what was written"
    assert console_text(d, ns, "d1").count("GUEST UP") == 1, "d1 booted again"
    # clear namespace: no domain, bridge or tunnel of it left on any host
    _dvms(d, "host1", "clear", "namespace", ns)
    hosts = [f"host{i}" for i in range(1, HOSTS + 1)]
    for h in hosts:
        assert not [n for n in _virsh_names(d, h) if n.startswith(f"{ns}:")], h
    wait_until(
        lambda: not any(_dv_links(d, h) for h in hosts),
        30.0,
        "bridges and tunnels of the namespace to go from every host",
    )


# -- 4 (kills a daemon: last of the shared lab) --------------------------------------------


def test_4_kill_9_of_a_daemon_is_reported_and_the_rest_keeps_working(lab: Path) -> None:
    import json

    from dvms.runtime.lab import lab_call, wait_until

    manifest = json.loads((lab / "lab.json").read_text())
    victim = manifest["hosts"][-1]
    os.kill(int(victim["daemon_pid"]), signal.SIGKILL)
    t0 = time.monotonic()
    out = wait_until(
        lambda: (r := lab_call(lab, "host1", "vm_info", {})) and r["unreachable"] and r,
        60.0,
        f"host1 to report {victim['name']} unreachable",
    )
    print(f"{victim['name']} reported unreachable after {time.monotonic() - t0:.1f} s")
    assert out["unreachable"] == [victim["name"]], out
    hosts = lab_call(lab, "host2", "host", {})
    assert {h["name"] for h in hosts["hosts"]} == {"host1", "host2"}, hosts


# -- 6 -------------------------------------------------------------------------------------


def test_6_lab_down_leaves_no_namespace_process_link_or_file() -> None:
    require_lab()
    import json

    from dvms.runtime.lab import lab_down, lab_leftovers, lab_up

    d = Path(tempfile.mkdtemp(prefix="dvms-lab-down-"))
    try:
        lab = lab_up(d, 2)
        manifest = json.loads((d / "lab.json").read_text())
        pids = [h["daemon_pid"] for h in manifest["hosts"]] + [
            h["libvirtd_pid"] for h in manifest["hosts"]
        ]
        assert lab_leftovers(d, lab), "a running lab should be visible to the leftover check"
        left = lab_down(d)
        assert left == [], left
        assert sorted(os.listdir(d)) == []
        netns = set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set()
        assert not [n for n in netns if n.startswith(lab["tag"])]
        for pid in pids:
            assert not Path(f"/proc/{pid}").exists() or _zombie(pid), pid
    finally:
        if (d / "lab.json").exists():
            lab_down(d)
        shutil.rmtree(d, ignore_errors=True)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
