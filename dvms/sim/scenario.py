"""Datacenter scenarios for ``dvms sim run``: frozen dataclasses loaded from TOML.

A scenario file has top-level keys (``name``, ``seed``, ``duration_s``,
``monitor_period_s``, ``solver_time``) and one table per section below. Every key has a
default, so ``[hosts] count = 8`` alone is a valid scenario. Unknown keys and wrong types
are errors that name the table and the key (``ScenarioError: s.toml: [hosts] count:
expected an integer, got 'ten'``; ``dvms.configfile`` reads every table). The VMPlaceS
values come from VMPlaceS's setup (docs/references.md).

    [hosts]     count, cpu_capacity (units; 100 = one vCPU fully busy), memory_mib
    [vms]       per_host, vcpus, memory_mib, dirty_intensity
    [load]      model = "vmplaces", mean_interval_per_vm_s, mu, sigma, initial
    [topology]  kind = "lan" | "sites" | "matrix", lan_rtt_s, sites, wan_rtt_ms,
                assignment, matrix_file
    [faults]    message_loss, [[faults.crash]] host/at_s/recover_at_s,
                [[faults.freeze]] host/at_s/resume_at_s,
                [[faults.loss_burst]] at_s/until_s/loss,
                [[faults.dup_reorder]] at_s/until_s/duplicate/reorder_s,
                [[faults.split]] hosts/at_s/heal_at_s,
                [[faults.clock]] host/offset_s,
                [[faults.site_cut]] site/at_s/heal_at_s,
                [[faults.partition_crash]] role/phase/after_s,
                [faults.random] (seeded random faults: see ``RandomFaults``)
    [ha]        fraction, start_s, fence, [ha.protocol] any key of ``HaConfig``
    [[launches]] at_s, entries, entry_hosts, vjobs_per_entry, vms, spread, coschedule0,
                vcpus, memory_mib, create_s
    [images]    count, size_mib, seeds, bandwidth_mib_s, wan_bandwidth_mib_s, cache_mib
    [scheduler] centralized_period_s, centralized_time_limit_s,
                [scheduler.partition] any key of ``PartitionConfig`` (the DVMS protocol),
                [scheduler.dvms] join_rate_per_s, open_grace_s, check_period_s, port,
                [scheduler.extra]
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from dvms.configfile import NOT_IN_FILE, ConfigError, load_table
from dvms.ha.config import HaConfig
from dvms.partition.config import PartitionConfig
from dvms.sim.engine import NODE_PORT

__all__ = [
    "SCENARIO_DIR",
    "ClockOffset",
    "CrashFault",
    "DupReorder",
    "DvmsSimParams",
    "FaultsConfig",
    "Freeze",
    "HaSimConfig",
    "HostsConfig",
    "ImagesConfig",
    "LaunchConfig",
    "LoadConfig",
    "LossBurst",
    "PartitionCrash",
    "RandomFaults",
    "Scenario",
    "ScenarioError",
    "ScenarioParams",
    "SiteCut",
    "Split",
    "TopologyConfig",
    "VmsConfig",
    "find_scenario",
    "load_scenario",
    "scenario_from_dict",
]

#: The shipped scenario files (package data: ``dvms/sim/scenarios``).
SCENARIO_DIR = Path(__file__).resolve().parent / "scenarios"


class ScenarioError(ConfigError):
    """A scenario file is unreadable or a key is missing, unknown or of the wrong type."""


@dataclass(frozen=True, slots=True)
class HostsConfig:
    """Physical hosts. VMPlaceS 2016: 700 units (7 usable cores x 100), 32,768 MiB."""

    count: int = 64
    #: CPU capacity in units, 100 = one vCPU fully busy; a host is in violation while
    #: the demand of its VMs is strictly above it (VMPlaceS ``XHost.isViable``).
    cpu_capacity: int = 700
    memory_mib: int = 32768

    def check(self) -> None:
        _positive("hosts.count", self.count)
        _positive("hosts.cpu_capacity", self.cpu_capacity)
        _positive("hosts.memory_mib", self.memory_mib)


@dataclass(frozen=True, slots=True)
class VmsConfig:
    """Identical VMs dealt out evenly (VMPlaceS vm_classes: 1 vCPU, 1,024 MiB)."""

    per_host: int = 10
    vcpus: int = 1
    memory_mib: int = 1024
    #: Dirty-page intensity, fraction of the migration bandwidth (None = the sim
    #: hypervisor's default 0.45, the middle of VMPlaceS's 10-80 %).
    dirty_intensity: float | None = None

    def check(self) -> None:
        if self.per_host < 0:
            raise ScenarioError(f"vms.per_host: must be >= 0, got {self.per_host}")
        _positive("vms.vcpus", self.vcpus)
        _positive("vms.memory_mib", self.memory_mib)
        if self.dirty_intensity is not None and not 0 <= self.dirty_intensity <= 1:
            raise ScenarioError("vms.dirty_intensity: must be in [0, 1]")


@dataclass(frozen=True, slots=True)
class LoadConfig:
    """VMPlaceS ``Injector.generateLoadQueue``: Poisson load events at total rate
    N_VM / ``mean_interval_per_vm_s``; each picks a VM uniformly and sets its demand to
    10 * round(clip(N(mu, sigma^2), 0, 100) / 10) percent of its vCPUs."""

    model: str = "vmplaces"
    mean_interval_per_vm_s: float = 300.0
    mu: float = 60.0
    sigma: float = 20.0
    #: ``zero`` (VMPlaceS 2015: every VM starts idle) or ``mu`` (later patch: at mu).
    initial: str = "zero"

    def check(self) -> None:
        if self.model != "vmplaces":
            raise ScenarioError(f"load.model: unknown model {self.model!r}; known: vmplaces")
        _positive("load.mean_interval_per_vm_s", self.mean_interval_per_vm_s)
        if self.sigma < 0:
            raise ScenarioError("load.sigma: must be >= 0")
        if self.initial not in ("zero", "mu"):
            raise ScenarioError(f"load.initial: expected 'zero' or 'mu', got {self.initial!r}")


@dataclass(frozen=True, slots=True)
class TopologyConfig:
    """Where hosts are. ``lan``: one site, every RTT ``lan_rtt_s`` (VMPlaceS: 50 us).
    ``sites``: ``sites`` names, ``wan_rtt_ms`` table between them, hosts assigned in
    contiguous ``blocks`` or ``round_robin``. ``matrix``: an RTT matrix file in ms
    (relative to the scenario file), host i takes row i mod size; every row is a site."""

    kind: str = "lan"
    lan_rtt_s: float = 50e-6
    sites: tuple[str, ...] = ()
    wan_rtt_ms: tuple[tuple[float, ...], ...] = ()
    assignment: str = "blocks"
    matrix_file: str = ""

    def check(self) -> None:
        if self.kind not in ("lan", "sites", "matrix"):
            raise ScenarioError(
                f"topology.kind: expected 'lan', 'sites' or 'matrix', got {self.kind!r}"
            )
        if not (math.isfinite(self.lan_rtt_s) and self.lan_rtt_s >= 0):
            raise ScenarioError("topology.lan_rtt_s: must be a finite number >= 0")
        if self.assignment not in ("blocks", "round_robin"):
            raise ScenarioError("topology.assignment: expected 'blocks' or 'round_robin'")
        if self.kind == "sites":
            n = len(self.sites)
            if n < 1:
                raise ScenarioError("topology.sites: a 'sites' topology needs site names")
            if len(self.wan_rtt_ms) != n or any(len(r) != n for r in self.wan_rtt_ms):
                raise ScenarioError(f"topology.wan_rtt_ms: must be a {n} x {n} table (ms)")
        if self.kind == "matrix" and not self.matrix_file:
            raise ScenarioError("topology.matrix_file: a 'matrix' topology needs a file")


@dataclass(frozen=True, slots=True)
class CrashFault:
    """Host ``host`` (index) crashes at ``at_s`` and, if given, recovers at
    ``recover_at_s``: its daemon restarts with the same node id and no protocol state
    and joins the overlay again (its VMs stayed on the host, unreachable meanwhile)."""

    host: int = 0
    at_s: float = 0.0
    recover_at_s: float | None = None


@dataclass(frozen=True, slots=True)
class Freeze:
    """Host ``host``'s daemon stops processing at ``at_s`` (a SIGSTOP, a long GC pause)
    and, if given, resumes at ``resume_at_s`` with its old state. Its VMs run on;
    datagrams sent to it wait in its socket buffer (``dvms.sim.engine.FROZEN_BUFFER``
    of them, later ones are dropped) and are processed in order when it resumes, where
    the envelope drops those older than its replay window; its timers fire late."""

    host: int = 0
    at_s: float = 0.0
    resume_at_s: float | None = None


@dataclass(frozen=True, slots=True)
class LossBurst:
    """From ``at_s`` to ``until_s`` every protocol datagram is lost with probability
    ``loss`` (the highest of the bursts under way and ``message_loss``)."""

    at_s: float = 0.0
    until_s: float = 0.0
    loss: float = 0.5


@dataclass(frozen=True, slots=True)
class DupReorder:
    """From ``at_s`` to ``until_s`` a datagram arrives twice with probability
    ``duplicate`` and each copy is held back by a uniform extra delay in
    ``[0, reorder_s)``, so datagrams sent closer than that arrive in any order."""

    at_s: float = 0.0
    until_s: float = 0.0
    duplicate: float = 0.0
    reorder_s: float = 0.0


@dataclass(frozen=True, slots=True)
class Split:
    """A network split: hosts ``hosts`` (indices) lose every link to the other hosts
    from ``at_s`` until ``heal_at_s`` (None: the rest of the run); links inside each
    side keep working."""

    hosts: tuple[int, ...] = ()
    at_s: float = 0.0
    heal_at_s: float | None = None


@dataclass(frozen=True, slots=True)
class ClockOffset:
    """Host ``host``'s clock runs ``offset_s`` seconds ahead of true time (negative:
    behind) for the whole run. Its cores see every time shifted (cores only compare
    times of their own clock), and so does the envelope's timestamp: two nodes whose
    clocks differ by more than the envelope's replay window (60 s) drop each other's
    datagrams as stale."""

    host: int = 0
    offset_s: float = 0.0


@dataclass(frozen=True, slots=True)
class SiteCut:
    """Site ``site`` (name) loses every link to the other sites from ``at_s`` to ``heal_at_s``."""

    site: str = ""
    at_s: float = 0.0
    heal_at_s: float | None = None


#: Roles and phases a ``PartitionCrash`` can target (see its docstring).
CRASH_TARGETS = {
    ("leader", "solving"),
    ("leader", "acting"),
    ("member", "collecting"),
    ("member", "acting"),
}


@dataclass(frozen=True, slots=True)
class PartitionCrash:
    """A fault hook the partition scheduler carries out (hosts are only known at run
    time): the first partition seen in ``phase`` at or after ``after_s`` loses a node.

    ``leader``/``solving``: its leader crashes when it starts the solver.
    ``leader``/``acting``: its leader crashes right after sending its first action
    (a plan half applied). ``member``/``collecting``: a member (neither the leader nor
    the initiator) crashes when the new leader asks it for its state. ``member``/
    ``acting``: the member asked to carry out the first action crashes. A crashed host
    stays down for the rest of the run."""

    role: str = "leader"
    phase: str = "acting"
    after_s: float = 0.0


@dataclass(frozen=True, slots=True)
class RandomFaults:
    """Random faults drawn from the run's seed (``dvms.sim.faultgen``), added to the
    scenario's own entries: same seed, same faults. Each ``*_per_run`` is the expected
    number of faults of that kind in one run (a Poisson draw); each starts at a uniform
    time in ``[start_s, duration_s)`` and lasts a uniform time within its ``*_s`` range
    ``[low, high]`` (clipped to the run). ``split_hosts`` is the range of the share of
    hosts a split cuts off (at least one host); ``clock_hosts`` the share of hosts
    whose clock is off, each by a uniform offset in ``[-clock_max_s, clock_max_s]``."""

    #: Faults begin after this, s (the overlay has joined).
    start_s: float = 10.0
    crashes_per_run: float = 0.0
    #: A crashed host stays down this long, then its daemon restarts.
    crash_down_s: tuple[float, ...] = (10.0, 60.0)
    freezes_per_run: float = 0.0
    freeze_s: tuple[float, ...] = (1.0, 30.0)
    loss_bursts_per_run: float = 0.0
    loss_burst_s: tuple[float, ...] = (1.0, 20.0)
    #: Loss probability during a burst: uniform in this range.
    burst_loss: tuple[float, ...] = (0.2, 0.8)
    dup_reorders_per_run: float = 0.0
    dup_reorder_s: tuple[float, ...] = (5.0, 60.0)
    #: Duplication probability (uniform up to it) and the reordering delay's bound, s.
    duplicate_max: float = 0.2
    reorder_max_s: float = 0.05
    splits_per_run: float = 0.0
    split_s: tuple[float, ...] = (2.0, 30.0)
    split_hosts: tuple[float, ...] = (0.0, 0.3)
    clock_hosts: float = 0.0
    clock_max_s: float = 30.0

    def enabled(self) -> bool:
        rates = (
            self.crashes_per_run,
            self.freezes_per_run,
            self.loss_bursts_per_run,
            self.dup_reorders_per_run,
            self.splits_per_run,
            self.clock_hosts,
        )
        return any(r > 0 for r in rates)

    def check(self) -> None:
        key = "faults.random"
        _time(f"{key}.start_s", self.start_s)
        for name in ("crash_down_s", "freeze_s", "loss_burst_s", "dup_reorder_s", "split_s"):
            lo_hi = getattr(self, name)
            if len(lo_hi) != 2 or not 0 < lo_hi[0] <= lo_hi[1] or not math.isfinite(lo_hi[1]):
                raise ScenarioError(f"{key}.{name}: expected [low, high] with 0 < low <= high")
        for name in ("burst_loss", "split_hosts"):
            lo_hi = getattr(self, name)
            if len(lo_hi) != 2 or not 0 <= lo_hi[0] <= lo_hi[1] <= 1:
                raise ScenarioError(f"{key}.{name}: expected [low, high] within [0, 1]")
        for name in (
            "crashes_per_run",
            "freezes_per_run",
            "loss_bursts_per_run",
            "dup_reorders_per_run",
            "splits_per_run",
            "reorder_max_s",
            "clock_max_s",
        ):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ScenarioError(f"{key}.{name}: must be a finite number >= 0, got {value!r}")
        for name in ("duplicate_max", "clock_hosts"):
            if not 0 <= getattr(self, name) <= 1:
                raise ScenarioError(f"{key}.{name}: must be in [0, 1]")


@dataclass(frozen=True, slots=True)
class FaultsConfig:
    #: Probability that a protocol datagram is lost (migrations are not affected).
    message_loss: float = 0.0
    crash: tuple[CrashFault, ...] = ()
    freeze: tuple[Freeze, ...] = ()
    loss_burst: tuple[LossBurst, ...] = ()
    dup_reorder: tuple[DupReorder, ...] = ()
    split: tuple[Split, ...] = ()
    clock: tuple[ClockOffset, ...] = ()
    site_cut: tuple[SiteCut, ...] = ()
    partition_crash: tuple[PartitionCrash, ...] = ()
    random: RandomFaults = field(default_factory=RandomFaults)

    def counts(self) -> dict[str, int]:
        """Fault entries per kind (``message_loss`` is not one: it is a rate)."""
        return {
            "crash": len(self.crash),
            "freeze": len(self.freeze),
            "loss_burst": len(self.loss_burst),
            "dup_reorder": len(self.dup_reorder),
            "split": len(self.split),
            "clock": len(self.clock),
            "site_cut": len(self.site_cut),
            "partition_crash": len(self.partition_crash),
        }

    def check(self, hosts: int, sites: tuple[str, ...]) -> None:
        if not 0 <= self.message_loss < 1:
            raise ScenarioError("faults.message_loss: must be in [0, 1)")
        self._check_daemons(hosts)
        self._check_network(hosts)
        self.random.check()
        for i, pc in enumerate(self.partition_crash):
            if (pc.role, pc.phase) not in CRASH_TARGETS:
                known = ", ".join(f"{r}/{p}" for r, p in sorted(CRASH_TARGETS))
                raise ScenarioError(
                    f"faults.partition_crash[{i}]: unknown role/phase "
                    f"{pc.role}/{pc.phase}; known: {known}"
                )
        for i, c in enumerate(self.crash):
            if not 0 <= c.host < hosts:
                raise ScenarioError(f"faults.crash[{i}].host: {c.host} is not a host index")
            if c.recover_at_s is not None and c.recover_at_s <= c.at_s:
                raise ScenarioError(f"faults.crash[{i}].recover_at_s: must be after at_s")
        for i, cut in enumerate(self.site_cut):
            if cut.site not in sites:
                raise ScenarioError(f"faults.site_cut[{i}].site: unknown site {cut.site!r}")

    def _check_daemons(self, hosts: int) -> None:
        for i, f in enumerate(self.freeze):
            key = f"faults.freeze[{i}]"
            _host_index(f"{key}.host", f.host, hosts)
            _time(f"{key}.at_s", f.at_s)
            if f.resume_at_s is not None and not f.resume_at_s > f.at_s:
                raise ScenarioError(f"{key}.resume_at_s: must be after at_s")
        seen: set[int] = set()
        for i, c in enumerate(self.clock):
            key = f"faults.clock[{i}]"
            _host_index(f"{key}.host", c.host, hosts)
            if not math.isfinite(c.offset_s):
                raise ScenarioError(f"{key}.offset_s: must be a finite number of seconds")
            if c.host in seen:
                raise ScenarioError(f"{key}.host: host {c.host} already has a clock offset")
            seen.add(c.host)

    def _check_network(self, hosts: int) -> None:
        for i, b in enumerate(self.loss_burst):
            key = f"faults.loss_burst[{i}]"
            _window(key, b.at_s, b.until_s)
            if not 0 <= b.loss <= 1:
                raise ScenarioError(f"{key}.loss: must be in [0, 1], got {b.loss!r}")
        for i, d in enumerate(self.dup_reorder):
            key = f"faults.dup_reorder[{i}]"
            _window(key, d.at_s, d.until_s)
            if not 0 <= d.duplicate <= 1:
                raise ScenarioError(f"{key}.duplicate: must be in [0, 1], got {d.duplicate!r}")
            if not (math.isfinite(d.reorder_s) and d.reorder_s >= 0):
                raise ScenarioError(f"{key}.reorder_s: must be a finite number >= 0")
        for i, sp in enumerate(self.split):
            key = f"faults.split[{i}]"
            if not sp.hosts:
                raise ScenarioError(f"{key}.hosts: name at least one host index")
            for h in sp.hosts:
                _host_index(f"{key}.hosts", h, hosts)
            if len(set(sp.hosts)) != len(sp.hosts):
                raise ScenarioError(f"{key}.hosts: a host index is listed twice")
            if len(sp.hosts) >= hosts:
                raise ScenarioError(f"{key}.hosts: every host is on one side; nothing is cut")
            _time(f"{key}.at_s", sp.at_s)
            if sp.heal_at_s is not None and not sp.heal_at_s > sp.at_s:
                raise ScenarioError(f"{key}.heal_at_s: must be after at_s")


def _host_index(key: str, h: int, hosts: int) -> None:
    if not 0 <= h < hosts:
        raise ScenarioError(f"{key}: {h} is not a host index (0..{hosts - 1})")


def _time(key: str, t: float) -> None:
    if not (math.isfinite(t) and t >= 0):
        raise ScenarioError(f"{key}: must be a time >= 0 s, got {t!r}")


def _window(key: str, start: float, end: float) -> None:
    _time(f"{key}.at_s", start)
    if not (math.isfinite(end) and end > start):
        raise ScenarioError(f"{key}.until_s: must be after at_s, got {end!r}")


@dataclass(frozen=True, slots=True)
class LaunchConfig:
    """A burst of vjob submissions (``[[launches]]``): at ``at_s`` each entry node submits
    ``vjobs_per_entry`` vjobs of ``vms`` identical VMs at once (they queue at the node).
    The first ``spread`` VMs of a vjob form one spread group (distinct hosts; < 2 = no
    group), the last ``coschedule0`` VMs have coschedule 0 (alone on their host). Entry
    nodes are ``entry_hosts`` (indices) or, if empty, ``entries`` hosts evenly spaced
    from host 0. Creating a VM takes ``create_s`` (0: the launch latency is the
    scheduling decision and the protocol, not the boot). VMs start idle."""

    at_s: float = 0.0
    entries: int = 1
    entry_hosts: tuple[int, ...] = ()
    vjobs_per_entry: int = 1
    vms: int = 1
    spread: int = 0
    coschedule0: int = 0
    vcpus: int = 1
    memory_mib: int = 1024
    create_s: float = 0.0

    def check(self, i: int, hosts: int) -> None:
        key = f"launches[{i}]"
        if self.at_s < 0 or self.create_s < 0:
            raise ScenarioError(f"{key}.at_s: at_s and create_s must be >= 0")
        for name in ("entries", "vjobs_per_entry", "vms", "vcpus", "memory_mib"):
            _positive(f"{key}.{name}", getattr(self, name))
        if self.spread < 0 or self.coschedule0 < 0 or self.spread + self.coschedule0 > self.vms:
            raise ScenarioError(f"{key}.spread: need 0 <= spread, coschedule0 and their sum <= vms")
        for h in self.entry_hosts:
            if not 0 <= h < hosts:
                raise ScenarioError(f"{key}.entry_hosts: {h} is not a host index")
        if not self.entry_hosts and self.entries > hosts:
            raise ScenarioError(f"{key}.entries: more entry nodes than hosts")

    def hosts(self, n: int) -> tuple[int, ...]:
        """The entry nodes' host indices in a datacenter of ``n`` hosts."""
        if self.entry_hosts:
            return self.entry_hosts
        return tuple(k * n // self.entries for k in range(self.entries))


@dataclass(frozen=True, slots=True)
class ImagesConfig:
    """Images the launched VMs boot from (``file:NAME``, docs/files.md), and what
    fetching one costs. With ``count`` = 0 (the default) nothing is modelled.

    Vjob j of a launch boots every VM from image ``j mod count`` (``img0``...), each
    ``size_mib``; at the start ``seeds`` hosts hold each image (evenly spaced, image i
    shifted by i). A VM created on a host without its image waits for one transfer
    from a holder, then for its ``create_s``: the holder whose transfer would end first
    (its uplink sends one image at a time, at the link's bandwidth: ``bandwidth_mib_s``
    within a site, ``wan_bandwidth_mib_s`` between sites), plus the link's RTT. VMs
    created on that host meanwhile wait for the same transfer. A host keeps what it
    fetched (a cache of ``cache_mib``, least recently used first evicted, never an
    image a VM on it boots from). One source per transfer is pessimistic next to the
    daemon's swarm, which takes chunks from every holder at once."""

    count: int = 0
    size_mib: int = 2048
    seeds: int = 4
    #: 1 Gb/s within a site, 100 Mb/s between sites (MiB/s)
    bandwidth_mib_s: float = 119.0
    wan_bandwidth_mib_s: float = 11.9
    cache_mib: int = 8192

    def check(self, hosts: int) -> None:
        if self.count < 0:
            raise ScenarioError(f"images.count: must be >= 0, got {self.count}")
        if not self.count:
            return  # nothing modelled
        _positive("images.size_mib", self.size_mib)
        _positive("images.bandwidth_mib_s", self.bandwidth_mib_s)
        _positive("images.wan_bandwidth_mib_s", self.wan_bandwidth_mib_s)
        if not 1 <= self.seeds <= hosts:
            raise ScenarioError(f"images.seeds: must be in 1..{hosts}, got {self.seeds}")
        if self.cache_mib < self.size_mib:
            raise ScenarioError("images.cache_mib: must hold at least one image (size_mib)")


@dataclass(frozen=True, slots=True)
class HaSimConfig:
    """High availability in the ``dvms`` scheduler (``[ha]``, ``docs/ha.md``): a
    ``fraction`` of the initial VMs (drawn with the seed) run under ``ha = "restart"``,
    priorities dealt high, medium, low in turn, fenced by ``fence``; their owners start
    renewing at ``start_s`` (the overlay has joined). ``[ha.protocol]``: any key of
    ``HaConfig``. Without ``[ha]`` (fraction 0) no HA core runs at all."""

    fraction: float = 0.0
    start_s: float = 10.0
    fence: str = "destroy"
    protocol: HaConfig = field(default_factory=HaConfig)

    def check(self) -> None:
        if not 0 <= self.fraction <= 1:
            raise ScenarioError("ha.fraction: must be in [0, 1]")
        if self.fence not in ("destroy", "pause"):
            raise ScenarioError(f"ha.fence: expected 'destroy' or 'pause', got {self.fence!r}")
        if self.start_s < 0:
            raise ScenarioError("ha.start_s: must be >= 0")


@dataclass(frozen=True, slots=True)
class DvmsSimParams:
    """How the simulator drives the DVMS nodes (``[scheduler.dvms]``); the protocol's
    own settings are ``[scheduler.partition]``. All ours: VMPlaceS starts every node at
    once and has no stuck-event count."""

    #: Hosts start their overlay node at random times in ``[0, hosts / join_rate_per_s)``
    #: (host 0 at t = 0), nodes per virtual second: 1,000 hosts join within 2 s.
    join_rate_per_s: float = 500.0
    #: An overload event still open at the end of the run that started more than this
    #: long before the end, and that no partition holds, counts in ``overloads_open``,
    #: virtual seconds (a plan of several sequential migrations runs for a minute).
    open_grace_s: float = 30.0
    #: Period of the partition invariant checker (``dvms.sim.invariants``), virtual s.
    check_period_s: float = 1.0
    #: UDP port in every simulated node's address (``h<index>``, port): the daemon's.
    port: int = NODE_PORT

    def __post_init__(self) -> None:
        if not self.join_rate_per_s > 0 or not self.check_period_s > 0:
            raise ValueError("join_rate_per_s and check_period_s must be > 0")
        if self.open_grace_s < 0:
            raise ValueError("open_grace_s must be >= 0")


@dataclass(frozen=True, slots=True)
class ScenarioParams:
    """Scheduler parameters (the ``[scheduler]`` table); each scheduler reads its own."""

    #: The DVMS partition protocol (``[scheduler.partition]``, any key of
    #: ``PartitionConfig`` with its defaults; ``dvms-ring`` and ``dvms-random`` replace
    #: its recruitment). The shipped scenarios set VMPlaceS's lease of 4.5 s.
    partition: PartitionConfig = field(default_factory=PartitionConfig)
    #: How the simulator drives the DVMS nodes (``[scheduler.dvms]``).
    dvms: DvmsSimParams = field(default_factory=DvmsSimParams)
    #: Centralized baseline: period start to start, s (VMPlaceS CentralizedResolver: 30).
    centralized_period_s: float = 30.0
    #: Centralized solver time limit, s; None = min(30, hosts / 8) (Entropy2RP HEAD).
    centralized_time_limit_s: float | None = None
    #: Anything else, for schedulers registered later (``[scheduler.extra]``).
    extra: Mapping[str, Any] = field(default_factory=dict)

    def check(self) -> None:
        _positive("scheduler.centralized_period_s", self.centralized_period_s)


#: Keys the ``[scheduler]`` table no longer reads, and where they went.
MOVED_KEYS = {
    f"scheduler.{old}": f"[scheduler.partition] {new}"
    for old, new in (
        ("partition_lease_s", "lease_s"),
        ("min_partition_size", "min_partition_size"),
        ("recruitment", "recruitment"),
        ("relief_target", "relief_target"),
    )
}


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str = "scenario"
    seed: int = 23
    duration_s: float = 3600.0
    #: Period of each host's overload monitor, s (VMPlaceS MonitorProcess: 1 s).
    monitor_period_s: float = 1.0
    #: Solver time charged in virtual time: ``model`` (deterministic cost model, see
    #: dvms/sim/solvercost.py) or ``measured`` (our solver's wall time, as VMPlaceS).
    solver_time: str = "model"
    hosts: HostsConfig = field(default_factory=HostsConfig)
    vms: VmsConfig = field(default_factory=VmsConfig)
    load: LoadConfig = field(default_factory=LoadConfig)
    topology: TopologyConfig = field(default_factory=TopologyConfig)
    faults: FaultsConfig = field(default_factory=FaultsConfig)
    launches: tuple[LaunchConfig, ...] = ()
    images: ImagesConfig = field(default_factory=ImagesConfig)
    scheduler: ScenarioParams = field(default_factory=ScenarioParams)
    ha: HaSimConfig = field(default_factory=HaSimConfig)
    #: Directory relative paths (matrix files) are resolved against (the file's own).
    base_dir: str = field(default=".", metadata=NOT_IN_FILE)

    def __post_init__(self) -> None:
        _positive("duration_s", self.duration_s)
        _positive("monitor_period_s", self.monitor_period_s)
        if self.solver_time not in ("model", "measured"):
            raise ScenarioError(
                f"solver_time: expected 'model' or 'measured', got {self.solver_time!r}"
            )
        self.hosts.check()
        self.vms.check()
        self.load.check()
        self.topology.check()
        self.faults.check(self.hosts.count, self.topology.sites)
        for i, launch in enumerate(self.launches):
            launch.check(i, self.hosts.count)
        self.images.check(self.hosts.count)
        self.scheduler.check()
        self.ha.check()
        if self.vms.per_host * self.vms.memory_mib > self.hosts.memory_mib:
            raise ScenarioError("vms.per_host: the VMs of one host do not fit in its memory")

    @property
    def n_vms(self) -> int:
        return self.hosts.count * self.vms.per_host

    @property
    def centralized_time_limit_s(self) -> float:
        limit = self.scheduler.centralized_time_limit_s
        return min(30.0, self.hosts.count / 8) if limit is None else limit


def _positive(key: str, value: float) -> None:
    if not value > 0:
        raise ScenarioError(f"{key}: must be > 0, got {value!r}")


def scenario_from_dict(
    data: Mapping[str, Any], *, base_dir: str = ".", source: str = ""
) -> Scenario:
    """Build and validate a scenario from parsed TOML (errors name the table and key;
    ``source``, the file, leads them)."""
    scn = load_table(Scenario, data, source=source, moved=MOVED_KEYS, error=ScenarioError)
    return replace(scn, base_dir=base_dir)


def find_scenario(spec: str) -> Path:
    """A path, or the name of a shipped scenario (``vmplaces-64``, ``smoke``...)."""
    path = Path(spec)
    if path.is_file():
        return path
    shipped = SCENARIO_DIR / f"{spec.removesuffix('.toml')}.toml"
    if shipped.is_file():
        return shipped
    known = ", ".join(sorted(p.stem for p in SCENARIO_DIR.glob("*.toml")))
    raise ScenarioError(f"no scenario file {spec!r}; shipped scenarios: {known}")


def load_scenario(spec: str | Path) -> Scenario:
    """Load a scenario from a TOML path or a shipped scenario name."""
    path = find_scenario(str(spec))
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{path}: {exc}") from None
    data.setdefault("name", path.stem)
    return scenario_from_dict(data, base_dir=str(path.parent), source=str(path))
