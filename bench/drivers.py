"""Benchmark of the hypervisor drivers; prints a table.

1. libvirt test driver (in-process, no daemon): VMs/s created + destroyed, and
   "migrations"/s (save on one test host, restore on another).
2. Real QEMU (root only): a tiny TCG guest (128 MiB, Debian kernel + busybox) on two
   namespaced libvirtds, live-migrated back and forth ``--rounds`` times; migration time
   (wall, ``migrateToURI3``) and downtime (libvirt's completed-job statistics).
   Expected on the reference machine: ~2 s and 150-250 ms (measured earlier on this machine).
3. The sim model: migration time of 1 GiB at 125 MiB/s over the VMPlaceS intensity range.

Usage: ``python bench/drivers.py [--vms 500] [--rounds 3] [--skip-qemu]``
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import trio

from dvms.hypervisor import open_hypervisor
from dvms.hypervisor.simulated import MigrationModel, estimate_migration
from dvms.placement.spec import VmSpec

NODE_XML = """<node><cpu><mhz>2000</mhz><model>i686</model><active>64</active><nodes>1</nodes>
<sockets>1</sockets><cores>64</cores><threads>1</threads></cpu><memory>{kib}</memory></node>"""

Row = tuple[str, str, str]


async def bench_test_driver(n_vms: int, work: Path) -> list[Row]:
    hosts = []
    for i in range(2):
        path = work / f"bench-host{i}.xml"
        path.write_text(NODE_XML.format(kib=1024 * 1024 * 1024))
        hosts.append(open_hypervisor("libvirt", f"test://{path}", host=f"h{i}"))
    a, b = hosts
    try:
        t0 = time.perf_counter()
        for k in range(n_vms):
            await a.create(VmSpec(f"vm{k}", memory_mib=128))
        t_create = time.perf_counter() - t0
        t0 = time.perf_counter()
        for k in range(n_vms):
            await a.migrate(f"vm{k}", b)
        t_migrate = time.perf_counter() - t0
        t0 = time.perf_counter()
        for k in range(n_vms):
            await b.destroy(f"vm{k}")
            await b.undefine(f"vm{k}")
        t_destroy = time.perf_counter() - t0
    finally:
        for hv in hosts:
            await hv.aclose()
    return [
        ("test driver: create (define+start)", f"{n_vms / t_create:,.0f} VMs/s", f"{n_vms} VMs"),
        ("test driver: destroy+undefine", f"{n_vms / t_destroy:,.0f} VMs/s", f"{n_vms} VMs"),
        (
            "test driver: create+destroy cycle",
            f"{n_vms / (t_create + t_destroy):,.0f} VMs/s",
            "one VM defined, started, destroyed, undefined",
        ),
        ("test driver: save/restore move", f"{n_vms / t_migrate:,.0f} VMs/s", "cold, no live API"),
    ]


def _qemu_skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "not root"
    missing = [t for t in ("libvirtd", "virtlogd", "qemu-system-x86_64") if not shutil.which(t)]
    return f"missing {', '.join(missing)}" if missing else None


async def _migrate_rounds(nodes, guest, serial_dir: Path, rounds: int) -> list:
    from dvms.hypervisor.domxml import DomainConfig
    from dvms.hypervisor.lab.guest import parse_ticks

    dom_cfg = DomainConfig(serial_log_dir=str(serial_dir), tb_cache_mib=16)
    hvs = [open_hypervisor("libvirt", n.hypervisor_config(dom_cfg)) for n in nodes]
    spec = VmSpec("bench1", memory_mib=128, kernel=str(guest.kernel),
                  initrd=str(guest.initrd), append=guest.cmdline)  # fmt: skip
    log = serial_dir / "bench1.log"
    results = []
    try:
        async with trio.open_nursery() as nursery:
            for hv in hvs:
                nursery.start_soon(hv.capabilities)
        await hvs[0].create(spec)
        with trio.fail_after(120):
            while not (log.exists() and parse_ticks(log.read_text(errors="replace"))):
                await trio.sleep(0.25)
        for r in range(2 * rounds):
            src, dst = hvs[r % 2], hvs[(r + 1) % 2]
            results.append(await src.migrate("bench1", dst))
            await trio.sleep(1.0)  # let the guest tick on the new host
        ticks = parse_ticks(log.read_text(errors="replace"))
        uptimes = [u for _, u in ticks]
        if uptimes != sorted(uptimes) or log.read_text().count("GUEST UP") != 1:
            raise RuntimeError("guest rebooted during the benchmark")
    finally:
        for hv in hvs:
            for op in (hv.destroy, hv.undefine):
                with contextlib.suppress(Exception):  # cleanup: already gone is fine
                    await op("bench1")
            await hv.aclose()
    return results


def bench_qemu(rounds: int) -> list[Row]:
    if reason := _qemu_skip_reason():
        return [("QEMU live migration", "skipped", reason)]
    from dvms.hypervisor.lab.daemons import libvirtd_pair
    from dvms.hypervisor.lab.guest import build_tiny_guest

    guest = build_tiny_guest()
    work = Path(tempfile.mkdtemp(prefix="dvms-bench-qemu-"))
    os.chmod(work, 0o755)
    serial_dir = work / "serial"
    serial_dir.mkdir()
    os.chmod(serial_dir, 0o777)
    try:
        with libvirtd_pair(f"db{os.getpid() % 10000:04d}", work, subnet="10.234.0") as nodes:
            results = trio.run(_migrate_rounds, nodes, guest, serial_dir, rounds)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    times = [r.duration_s for r in results]
    downs = [r.downtime_ms for r in results if r.downtime_ms is not None]
    mib = [r.transferred_mib for r in results if r.transferred_mib is not None]
    n = len(results)
    return [
        (
            "QEMU live migration time (128 MiB TCG guest)",
            f"{statistics.median(times):.2f} s median",
            f"min {min(times):.2f} / max {max(times):.2f} s over {n} moves",
        ),
        (
            "QEMU live migration downtime",
            f"{statistics.median(downs):.0f} ms median" if downs else "n/a",
            f"min {min(downs):.0f} / max {max(downs):.0f} ms" if downs else "",
        ),
        ("QEMU memory transferred", f"{statistics.median(mib):.1f} MiB" if mib else "n/a", ""),
    ]


def bench_sim() -> list[Row]:
    model = MigrationModel()
    ests = [estimate_migration(1024, 0.1 + 0.7 * i / 20, 0.6, model) for i in range(21)]
    durations = [e.duration_s for e in ests]
    return [
        (
            "sim: 1 GiB at 125 MiB/s, intensity 10-80 %, load 60 %",
            f"{statistics.mean(durations):.1f} s mean",
            f"{min(durations):.1f}-{max(durations):.1f} s (VMPlaceS: ~9-12 s, mean 10.9 s)",
        )
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vms", type=int, default=500, help="VMs on the test driver")
    parser.add_argument("--rounds", type=int, default=3, help="QEMU A->B->A round trips")
    parser.add_argument("--skip-qemu", action="store_true")
    args = parser.parse_args(argv)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        rows += trio.run(bench_test_driver, args.vms, Path(tmp))
    if not args.skip_qemu:
        rows += bench_qemu(args.rounds)
    rows += bench_sim()
    widths = [max(len(r[i]) for r in [("metric", "value", "notes"), *rows]) for i in range(3)]
    line = " | ".join(f"{{:<{w}}}" for w in widths)
    print(line.format("metric", "value", "notes"))
    print("-+-".join("-" * w for w in widths))
    for row in rows:
        print(line.format(*row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
