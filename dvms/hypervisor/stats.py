"""Host statistics: what the load functions and the overload monitor read about a host.

Three sources fill the same ``HostStats``: psutil (this machine: CPUs, memory, load,
network counters), libvirt node info (the hypervisor's view: CPUs, memory, CPU model; for
a ``test:///`` host this is the *only* truthful source, since psutil would describe the
machine running the test) and the VM list (commitments, as minimega's ``host`` command
sums them: vCPUs, memory and NICs of every VM on the host, whatever its state).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["Commitments", "HostStats", "NodeInfo", "commitments", "local_stats"]


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """libvirt ``getInfo()``: CPU model, memory (MiB), logical CPUs, clock (MHz)."""

    model: str
    memory_mib: int
    cpus: int
    mhz: int

    @classmethod
    def from_libvirt(cls, info: list) -> NodeInfo:
        model, memory_mib, cpus, mhz = info[0], info[1], info[2], info[3]
        return cls(str(model), int(memory_mib), int(cpus), int(mhz))


@dataclass(frozen=True, slots=True)
class Commitments:
    """Sums over a host's VMs (every state): count, running count, vCPUs, MiB, NICs."""

    vms: int = 0
    running: int = 0
    vcpus: int = 0
    memory_mib: int = 0
    nics: int = 0


def commitments(rows: Iterable[tuple[bool, int, int, int]]) -> Commitments:
    """From (running, vcpus, memory_mib, nics) rows."""
    vms = running = vcpus = memory = nics = 0
    for is_running, cpu, mem, nic in rows:
        vms += 1
        running += int(is_running)
        vcpus += cpu
        memory += mem
        nics += nic
    return Commitments(vms, running, vcpus, memory, nics)


@dataclass(frozen=True, slots=True)
class HostStats:
    """One sample of a host.

    - ``cpus`` / ``memory_total_mib``: capacity (libvirt node info when available).
    - ``cpu_percent``: host CPU use, 0-100 (psutil since the previous sample; sim: demand
      over capacity). None when the source cannot tell (test:/// hosts).
    - ``cpu_demand``: sum of VM CPU demand in vCPU units (sim and load injector only).
    - ``memory_available_mib``, ``load_avg`` (1/5/15 min), ``net_rx_bytes`` /
      ``net_tx_bytes`` (cumulative, all interfaces): psutil only.
    - ``commit``: vCPU / memory / NIC commitments of the host's VMs.
    - ``source``: "psutil+libvirt", "libvirt" or "sim".
    """

    host: str
    cpus: int
    memory_total_mib: int
    commit: Commitments
    source: str
    cpu_percent: float | None = None
    cpu_demand: float | None = None
    memory_available_mib: int | None = None
    load_avg: tuple[float, float, float] | None = None
    net_rx_bytes: int | None = None
    net_tx_bytes: int | None = None
    node: NodeInfo | None = None

    @property
    def cpu_commit_ratio(self) -> float:
        """minimega's ``cpucommit`` load key: committed vCPUs per logical CPU."""
        return self.commit.vcpus / self.cpus if self.cpus else float("inf")

    @property
    def mem_commit_ratio(self) -> float:
        """minimega's ``memcommit`` load key: committed memory over total memory."""
        return self.commit.memory_mib / self.memory_total_mib if self.memory_total_mib else 1.0


def local_stats(host: str, commit: Commitments, node: NodeInfo | None = None) -> HostStats:
    """Sample this machine with psutil (blocking but fast: no sleeping interval)."""
    import psutil  # type: ignore[import-untyped]  # its stubs (types-psutil) are not a dependency

    vm = psutil.virtual_memory()
    net = psutil.net_io_counters()
    cpus = node.cpus if node else (psutil.cpu_count() or 1)
    total_mib = node.memory_mib if node else vm.total // (1 << 20)
    load1, load5, load15 = psutil.getloadavg()
    return HostStats(
        host=host,
        cpus=cpus,
        memory_total_mib=total_mib,
        commit=commit,
        source="psutil+libvirt" if node else "psutil",
        cpu_percent=psutil.cpu_percent(interval=None),
        memory_available_mib=vm.available // (1 << 20),
        load_avg=(load1, load5, load15),
        net_rx_bytes=net.bytes_recv if net else None,
        net_tx_bytes=net.bytes_sent if net else None,
        node=node,
    )
