"""The host monitor: this node's hypervisor as the partition protocol reads it.

``PartitionCore`` asks ``local_state()`` synchronously (a sans-I/O core cannot await a
hypervisor), so the runner keeps a cached ``HostState`` here and refreshes it every
``MonitorConfig.period_s`` and right after each driver call, before the core hears the
call's result: a leader collecting states never sees a host without the VM it has just
created.

It also remembers the spec of every VM created on this node (``specs``): the test
driver's domain XML does not carry minimega's scheduling fields (coschedule, colocate),
and an emulated migration re-creates the VM from its spec on the destination.

Synthetic load (test hosts only, ``dvms debug load``). A libvirt ``test:///`` host
measures no CPU, so its VMs report a demand of 0 and the partition protocol never sees an
overload. ``synthetic`` maps ``(namespace, name)`` to a CPU demand in CPUs that replaces
the measured one while a VM of that name runs here (capped at its vCPUs); it is what a
user *said*, never a measurement, and ``dvms debug loads`` lists it as such. An entry
for a VM that is not here waits for it: set on every node, the load follows the VM when
the partition migrates it.

Measured load (real hypervisors). On a QEMU host each VM's CPU demand is measured:
libvirt reports the CPU time a domain's QEMU process has used (``VmInfo.cpu_time_s``),
and the monitor samples it at every refresh (``period_s``, 1 s). A VM's demand, in
CPUs, is the CPU time it used over the last ``demand_window_s`` (5 s) divided by the
wall time between the two samples that bound the window, capped at its vCPUs. A VM seen
for less than ``demand_min_span_s`` (2 s: just created or migrated in) keeps its last
demand (0 at first). Why a window: one 1 s delta of a TCG guest swings by tens of per
cent with the host's scheduling, and an overload decision taken on one noisy sample
would start partitions for nothing; 5 s is short enough that a guest that starts
burning overloads its host within ~6 s. Hysteresis: the demand the partitions see
changes only when the windowed value moves more than ``demand_hysteresis_cpus`` (0.05
CPU) from the one reported, so a host sitting near its capacity does not flip between
overloaded and not on noise. A VM whose CPU time goes backwards (its QEMU restarted)
starts a new window. ``test:///`` hosts report wall-clock time as CPU time, so they are
never measured (their demand is 0 unless synthetic).

Capacity: ``capacity_cpus`` (0 = the host's CPUs) is what the partitions compare the
demand with (``HostState.cpu_milli``): lab hosts that share one machine are given a
small one.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import trio

from dvms.hypervisor.base import DomainState, Hypervisor, VmInfo
from dvms.hypervisor.errors import HypervisorError
from dvms.names import vm_key
from dvms.partition.messages import HeldImage, HostState, LaunchVm, VmState
from dvms.runtime.messages import MAX_REPLY_BYTES, MAX_ROWS, HostReply, VmRow, encoded_size

__all__ = ["HostMonitor", "MonitorConfig", "uri_is_test"]

log = logging.getLogger("dvms.runtime.services.monitor")


def uri_is_test(uri: str) -> bool:
    """A libvirt ``test:///`` host: nothing on it is measured."""
    return uri.startswith("test:")


@dataclass(frozen=True, slots=True)
class MonitorConfig:
    #: How often the node runner refreshes the cached host state, seconds (DVMS: 1 s).
    period_s: float = 1.0
    #: How often the host's size (CPUs, memory) is read again, seconds. It does not change
    #: under a running daemon on our hosts; ``stats()`` dumps and parses every domain's
    #: XML, which cost as much as the VM listing itself on every refresh (ours).
    host_size_period_s: float = 30.0
    #: Measured demand (real hypervisors): CPU time over this window, seconds (ours).
    demand_window_s: float = 5.0
    #: A VM seen for less than this keeps its previous demand, seconds (ours).
    demand_min_span_s: float = 2.0
    #: The reported demand moves only by more than this, CPUs (ours).
    demand_hysteresis_cpus: float = 0.05
    #: CPU capacity the partitions compare demand with, CPUs; 0 = the host's CPUs.
    capacity_cpus: float = 0.0
    #: The periodic refresh reads every domain of the host: on a host of thousands of VMs
    #: one read takes seconds, so the next periodic one waits at least the last read's
    #: duration divided by this (a fraction of wall time spent reading; ours). Refreshes
    #: after a driver call are not delayed.
    read_busy_max: float = 0.1
    #: VM rows per ``HostReply`` at most (at most ``MAX_ROWS``); a host with more
    #: answers page by page (ours).
    reply_rows: int = MAX_ROWS
    #: Encoded size of a ``HostReply`` at most, bytes: a page ends before the row that
    #: would pass it (every page carries at least one row), so rows of long names stay
    #: inside one datagram (the daemon's UDP limit is 65,507 bytes, the envelope around
    #: a reply under 200; ours).
    reply_bytes: int = 64000
    #: Listings a host keeps for the later pages of replies it answered in several
    #: (``HostReply.listing``): one per query of every VM that needed pages, the oldest
    #: forgotten first. A page asked of a forgotten listing comes back empty and
    #: ``truncated``: the asker reports the host's rows as partial (ours: queries
    #: running at once, each kept seconds).
    reply_listings: int = 64

    def __post_init__(self) -> None:
        if not 0 < self.read_busy_max <= 1:
            raise ValueError("read_busy_max must be in (0, 1]")
        if not 1 <= self.reply_rows <= MAX_ROWS:
            raise ValueError(f"reply_rows must be in [1, {MAX_ROWS}]")
        if not 1024 <= self.reply_bytes <= MAX_REPLY_BYTES:
            raise ValueError(f"reply_bytes must be in [1024, {MAX_REPLY_BYTES}]")
        if self.reply_listings < 1:
            raise ValueError("reply_listings must be at least 1")
        if self.demand_window_s <= 0 or self.demand_min_span_s < 0:
            raise ValueError("demand_window_s must be > 0 and demand_min_span_s >= 0")
        if self.demand_hysteresis_cpus < 0 or self.capacity_cpus < 0:
            raise ValueError("demand_hysteresis_cpus and capacity_cpus must be >= 0")


@dataclass
class HostMonitor:
    hv: Hypervisor
    #: the host name users and placement see (``node1``)
    name: str
    #: how peers would reach this hypervisor (shown in ``host``; ``test:`` URIs are local)
    uri: str
    cpus: int = 0
    memory_mib: int = 0
    vms: tuple[VmInfo, ...] = ()
    #: live migrations in or out of this host that this daemon runs or receives
    #: (``in_flight``); domains the hypervisor lists mid-migration count on top of them
    migrating: int = 0
    refreshed: int = 0
    config: MonitorConfig = MonitorConfig()

    def __post_init__(self) -> None:
        self._size_at = -math.inf  # trio time of the last stats() read
        #: how long the last read of every domain took, seconds (``next_period``)
        self.read_s = 0.0
        #: (namespace, name) -> the VM, as the last read listed them (``find``)
        self._by_name: dict[tuple[str, str], VmInfo] = {}
        #: vm_key -> (trio time, the VM) of the VMs ``add`` listed since the last read
        #: began (a read that started earlier cannot show them)
        self._added: dict[str, tuple[float, VmInfo]] = {}
        # Refreshes asked while one runs share the next one (see refresh)
        self._reading = False
        self._next: trio.Event | None = None
        #: vm_key (``namespace:name``) -> the spec it was created from here
        self.specs: dict[str, LaunchVm] = {}
        #: (namespace, name) -> synthetic CPU demand in CPUs (``dvms debug load``)
        self.synthetic: dict[tuple[str, str], float] = {}
        self._state: HostState | None = None
        #: trio time of the last read the hypervisor answered (readiness: ``/readyz``)
        self.refreshed_at = -math.inf
        #: vm_key -> (trio time, CPU time s) samples of the last window (real hosts)
        self._samples: dict[str, deque[tuple[float, float]]] = {}
        #: vm_key -> the measured demand reported now, CPUs
        self.measured: dict[str, float] = {}
        self._measure = not uri_is_test(self.uri)
        #: CPU capacity reported to the partitions, CPUs (0 = the host's); starts at
        #: ``config.capacity_cpus``, changed by ``set_capacity`` (``dvms debug capacity``)
        self.capacity_cpus = self.config.capacity_cpus
        #: the namespace launches this node carries out now (``launch_token``s; the
        #: namespace service keeps it, ``reply`` reports it)
        self.launches: set[str] = set()
        #: the files this host holds (set by the file service; none without it)
        self.images: tuple[HeldImage, ...] = ()
        #: (namespace, name) -> (HA state, generation) of an HA VM this host owns (set
        #: by the HA shell; None: not one)
        self.ha_status: Callable[[str, str], tuple[str, int] | None] = lambda _ns, _n: None
        #: listing id -> the VMs as a reply in pages listed them (``reply``), oldest first
        self._listings: OrderedDict[int, tuple[VmInfo, ...]] = OrderedDict()
        self._listing_seq = 0

    @contextlib.contextmanager
    def in_flight(self) -> Iterator[None]:
        """A migration into or out of this host runs while the block does: the partition
        core's local state counts it at once (not at the next refresh), so the node holds
        itself in its partition until it ends, as the destination as well as the source."""
        self.migrating += 1
        self._restate()
        try:
            yield
        finally:
            self.migrating -= 1
            self._restate()

    def _restate(self) -> None:
        if self._state is not None:
            self._state = self._host_state()

    def set_images(self, images: tuple[HeldImage, ...]) -> None:
        """What the file service holds now: reported to the partitions (image locality)."""
        if images == self.images:
            return
        self.images = images
        if self._state is not None:
            self._state = self._host_state()

    async def refresh(self) -> None:
        """Read the host again. Returns once a read that *started* after the call has
        finished, so a caller sees everything done before it asked. Callers arriving
        while a read runs share the next one (N creations finishing together cost two
        listings, not N); the caller that started reading runs them."""
        if self._reading:
            if self._next is None:
                self._next = trio.Event()
            await self._next.wait()
            return
        self._reading = True
        try:
            await self._read()
            while self._next is not None:
                waiting, self._next = self._next, None
                try:
                    await self._read()
                finally:
                    waiting.set()
        finally:
            self._reading = False
            if self._next is not None:  # cancelled: release the waiters, never hang them
                self._next.set()
                self._next = None

    def add(self, vm: VmInfo) -> None:
        """A VM this node just created (the driver's answer): listed at once, without
        a read of every domain (on a host of thousands of VMs one read takes seconds,
        and a launch creates them one after the other). A read that started before it
        keeps it (``_read``)."""
        self._added[vm.key] = (trio.current_time(), vm)
        if (vm.namespace, vm.name) in self._by_name or self._state is None:
            self._put([*(v for v in self.vms if v.key != vm.key), vm])
            self._state = self._host_state()
            return
        # a new VM at the end: no rebuild of every row (one per creation, thousands)
        self.vms += (vm,)
        self._by_name[(vm.namespace, vm.name)] = vm
        if vm.state is not DomainState.SHUTOFF:
            self._state = replace(self._state, vms=(*self._state.vms, self._row(vm)))

    def _put(self, vms: list[VmInfo]) -> None:
        # in the driver's order, a VM added since at the end: the rows before it (the
        # pages of a reply already sent) stay in place
        self.vms = tuple(vms)
        self._by_name = {(v.namespace, v.name): v for v in vms}

    async def _read(self) -> None:
        now = trio.current_time()
        known = set(self.specs)  # a VM created while we list keeps its spec
        try:
            if now - self._size_at >= self.config.host_size_period_s or not self.cpus:
                stats = await self.hv.stats()
                self.cpus, self.memory_mib = stats.cpus, stats.memory_total_mib
                self._size_at = now
            vms = await self.hv.list_vms()
        except HypervisorError as exc:
            log.warning("host monitor: %s", exc)
            return
        self.read_s = trio.current_time() - now
        listed = {v.key for v in vms}
        late = [v for t, v in self._added.values() if t >= now and v.key not in listed]
        self._added = {k: a for k, a in self._added.items() if a[0] >= now}
        self._put([*vms, *late])
        if self._measure:
            self._sample(now, vms)
        for key in known - listed - {v.key for v in late}:
            self.specs.pop(key, None)  # destroyed behind our back, or migrated away
        self._state = self._host_state()
        self.refreshed += 1
        self.refreshed_at = now

    def _sample(self, now: float, vms: list[VmInfo]) -> None:
        """Add one CPU time sample per running VM; update ``measured`` (see the module
        docstring: window, minimum span, hysteresis)."""
        cfg = self.config
        running = {v.key: v for v in vms if v.state is DomainState.RUNNING}
        for key in set(self._samples) - set(running):
            del self._samples[key]  # gone, stopped or paused: no demand
            self.measured.pop(key, None)
        for key, v in running.items():
            window = self._samples.setdefault(key, deque())
            if window and v.cpu_time_s < window[-1][1]:
                window.clear()  # CPU time went backwards: a new QEMU process
            window.append((now, v.cpu_time_s))
            while len(window) > 2 and window[1][0] <= now - cfg.demand_window_s:
                window.popleft()
            (t0, c0), (t1, c1) = window[0], window[-1]
            if t1 - t0 < max(cfg.demand_min_span_s, 1e-9):
                continue
            value = min(max((c1 - c0) / (t1 - t0), 0.0), float(max(v.vcpus, 1)))
            old = self.measured.get(key)
            if old is None or abs(value - old) > cfg.demand_hysteresis_cpus:
                self.measured[key] = round(value, 3)

    def state(self) -> HostState | None:
        """The partition core's ``local_state``: None until the first refresh."""
        return self._state

    def set_synthetic_load(self, namespace: str, name: str, cpus: float) -> None:
        """Give VM ``namespace/name`` a synthetic demand of ``cpus`` CPUs (0 removes it);
        the partition core sees it at its next overload check."""
        if cpus > 0:
            self.synthetic[(namespace, name)] = cpus
        else:
            self.synthetic.pop((namespace, name), None)
        if self._state is not None:
            self._state = self._host_state()

    def set_capacity(self, cpus: float) -> None:
        """Report ``cpus`` CPUs of capacity from now on (0: the host's CPUs)."""
        self.capacity_cpus = cpus
        if self._state is not None:
            self._state = self._host_state()

    @property
    def capacity(self) -> float | int:
        """The CPU capacity the partitions see, CPUs (the host's count when not set)."""
        return self.capacity_cpus or self.cpus

    def demand(self, v: VmInfo) -> float:
        """CPU demand of ``v`` in CPUs: the synthetic one if set, else the measured one."""
        synthetic = self.synthetic.get((v.namespace, v.name))
        if synthetic is not None:
            return min(synthetic, float(v.vcpus))
        measured = self.measured.get(v.key)
        if measured is not None:
            return measured
        # test:/// hosts measure nothing (the simulator's VMs carry their own demand)
        return v.cpu_demand * v.vcpus if v.cpu_demand is not None else 0.0

    def _row(self, v: VmInfo) -> VmState:
        spec = self.specs.get(v.key)
        return VmState(
            name=v.name,
            namespace=v.namespace,
            vcpus=v.vcpus,
            memory_mib=v.memory_mib,
            cpu_demand=self.demand(v),
            coschedule=spec.coschedule if spec is not None else -1,
            # the vjob's constraints travel with the spec (set by the leader at
            # creation), so repairs here never break them
            constraints=spec.constraints if spec is not None else (),
        )

    def _host_state(self) -> HostState:
        # SHUTOFF: defined but not running, uses nothing
        rows = [self._row(v) for v in self.vms if v.state is not DomainState.SHUTOFF]
        milli = round(self.capacity_cpus * 1000)
        return HostState(
            self.name,
            self.cpus,
            self.memory_mib,
            tuple(rows),
            # an incoming live migration is driven by the source's daemon: here it shows
            # as a domain the hypervisor lists as migrating
            self.migrating + sum(1 for v in self.vms if v.state is DomainState.MIGRATING),
            cpu_milli=milli,
            images=self.images,
        )

    def spec_of(self, name: str, namespace: str = "") -> LaunchVm | None:
        """The spec to re-create ``namespace/name`` elsewhere: as created here, else
        from libvirt."""
        key = vm_key(name, namespace)
        if key in self.specs:
            return self.specs[key]
        for v in self.vms:
            if v.key == key:
                # a VM that came here by live migration: libvirt tells its size and how
                # many NICs it has (they join its namespace's bridge, whatever their name)
                nets = tuple(f"nic{i}" for i in range(v.nics))
                return LaunchVm(
                    v.name, v.namespace, max(v.vcpus, 1), max(v.memory_mib, 1), networks=nets
                )
        return None

    def next_period(self) -> float:
        """Seconds until the next periodic refresh: ``period_s``, longer when one read
        of every domain takes more than ``read_busy_max`` of it."""
        cfg = self.config
        return max(cfg.period_s, self.read_s / cfg.read_busy_max)

    def find(self, name: str, namespace: str | None) -> VmInfo | None:
        if namespace is not None:
            return self._by_name.get((namespace, name))
        for v in self.vms:
            if v.name == name and (namespace is None or v.namespace == namespace):
                return v
        return None

    def _ha_of(self, v: VmInfo) -> tuple[str, int]:
        """(HA state, generation) of ``v``: as its owner's core says, else ``fenced``
        for an HA copy the core does not own (found at start), else ("", 0)."""
        status = self.ha_status(v.namespace, v.name)
        if status is not None:
            return status
        return ("fenced", v.ha_generation) if v.ha_generation > 0 else ("", 0)

    def reply(
        self, namespace: str | None, vms: bool = True, offset: int = 0, listing: int = 0
    ) -> HostReply:
        """This host as a peer asked: its VMs (of ``namespace``, None = all) from row
        ``offset``, ``reply_rows`` at most (``truncated``: more follow). A reply with
        more pages names the listing it was cut from (``HostReply.listing``): the later
        pages (``listing`` given) come from that same listing, whatever changed since;
        a listing forgotten meanwhile (``reply_listings``) gives an empty, truncated
        page."""
        empty = HostReply(
            self.name, self.cpus, self.memory_mib, self.uri, (), True, tuple(sorted(self.launches))
        )
        listed = self.vms
        if listing:
            kept = self._listings.get(listing)
            if kept is None:
                return empty
            listed = kept
        rows = [v for v in listed if vms and (namespace is None or v.namespace == namespace)]
        # the rows' array header grows from 1 to 3 bytes past 23 rows; the listing id
        # takes up to 9 bytes
        budget = self.config.reply_bytes - encoded_size(replace(empty, listing=2**64 - 1)) - 2
        page: list[VmRow] = []
        for v in rows[offset : offset + self.config.reply_rows]:
            row = VmRow.of(v, self._ha_of(v))
            size = encoded_size(row)
            if page and size > budget:
                break
            budget -= size
            page.append(row)
        more = offset + len(page) < len(rows)
        if more and not listing:  # the first page of several: keep what it was cut from
            self._listing_seq += 1
            listing = self._listing_seq
            self._listings[listing] = listed
            while len(self._listings) > self.config.reply_listings:
                self._listings.popitem(last=False)
        return replace(empty, vms=tuple(page), truncated=more, listing=listing if more else 0)
