"""The libvirt backend: one connection = one host.

Every libvirt call blocks, so each runs in a Trio worker thread (``trio.to_thread``); the
event loop never waits on libvirt. libvirt errors are mapped by ``errors.map_libvirt_error``
into our classes with a readable sentence.

URIs:
- ``test:///path/hostN.xml``: libvirt's in-process test driver, independent state per
  connection, so N connections = N simulated hosts in one process. It has no migration
  API, so ``migrate`` is emulated: save on the source, define + restore
  on the destination, undefine on the source (a cold move; its "downtime" is all of it).
- ``qemu:///system``, ``qemu+unix:///system?socket=...``, ``qemu+tcp://h/system``: real
  QEMU. ``migrate`` is live and peer-to-peer (``migrateToURI3`` with LIVE | PEER2PEER |
  PERSIST_DEST | UNDEFINE_SOURCE, plus NON_SHARED_INC for ``copy_storage``); the
  destination daemon is reached at the destination's ``peer_uri`` *from the source daemon*,
  and the memory stream goes to its ``migration_uri``.

Lifecycle events: libvirt's default event loop runs in one daemon thread per process
(registered before the first connection, as libvirt requires); callbacks are handed to the
Trio loop with ``trio.from_thread.run_sync``.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple, TypeVar

import trio

from dvms.hypervisor.base import (
    DomainState,
    EventKind,
    Hypervisor,
    LifecycleEvent,
    MigrationResult,
    VmInfo,
)
from dvms.hypervisor.domxml import (
    DomainConfig,
    domain_xml,
    parse_ha,
    parse_metadata,
    profile_for_test_uri,
)
from dvms.hypervisor.errors import (
    AlreadyExists,
    BackendUnavailable,
    HypervisorError,
    MigrationFailed,
    VmNotFound,
    from_libvirt_exception,
)
from dvms.hypervisor.stats import HostStats, NodeInfo, commitments, local_stats
from dvms.names import vm_key
from dvms.placement.spec import VmSpec

__all__ = ["LibvirtConfig", "LibvirtHypervisor", "open_libvirt"]

T = TypeVar("T")

# virDomainState -> ours
_STATES = {
    0: DomainState.UNKNOWN,  # NOSTATE
    1: DomainState.RUNNING,
    2: DomainState.RUNNING,  # BLOCKED (on a resource) is still running
    3: DomainState.PAUSED,
    4: DomainState.RUNNING,  # SHUTDOWN in progress
    5: DomainState.SHUTOFF,
    6: DomainState.CRASHED,
    7: DomainState.PAUSED,  # PMSUSPENDED
}
#: virDomainPausedReason of a domain paused by a migration (MIGRATION; POSTCOPY and
#: POSTCOPY_FAILED): the incoming copy on a destination waits so until it lands.
_PAUSED_MIGRATING = frozenset({2, 12, 13})
# virDomainEventType -> ours (detail refines STARTED/STOPPED for migration)
_EVENTS = {
    0: EventKind.DEFINED,
    1: EventKind.UNDEFINED,
    2: EventKind.STARTED,
    3: EventKind.SUSPENDED,
    4: EventKind.RESUMED,
    5: EventKind.STOPPED,
    6: EventKind.SHUTDOWN,
    8: EventKind.CRASHED,
}
_STARTED_MIGRATED = 1  # VIR_DOMAIN_EVENT_STARTED_MIGRATED
_STOPPED_MIGRATED = 3  # VIR_DOMAIN_EVENT_STOPPED_MIGRATED


def _libvirt() -> Any:
    try:
        import libvirt  # type: ignore[import-untyped]  # libvirt-python ships no types
    except ImportError as exc:
        raise BackendUnavailable(
            "libvirt-python is not installed (apt-get install libvirt-dev pkg-config, "
            "then pip install libvirt-python)"
        ) from exc
    return libvirt


_loop_lock = threading.Lock()
_loop_started = False


def _ensure_event_loop() -> None:
    """Start libvirt's default event loop once per process, before any connection opens."""
    global _loop_started
    with _loop_lock:
        if _loop_started:
            return
        libvirt = _libvirt()
        libvirt.virEventRegisterDefaultImpl()
        # errors reach callers as exceptions; stop libvirt also printing them to stderr
        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)

        def run() -> None:
            while True:
                libvirt.virEventRunDefaultImpl()

        threading.Thread(target=run, name="libvirt-events", daemon=True).start()
        _loop_started = True


@dataclass(frozen=True, slots=True)
class LibvirtConfig:
    """One libvirt host.

    - ``uri``: how *this process* connects; default ``test:///default`` (shared state).
    - ``host``: name in events/VmInfo; default: the URI.
    - ``peer_uri``: how a *source daemon* reaches this host for peer-to-peer migration
      (e.g. ``qemu+tcp://10.201.0.2/system``); default ``uri``.
    - ``migration_uri``: where the memory stream goes (``tcp://10.201.0.2:49152``);
      None lets libvirt derive it from the destination's host name.
    - ``domain``: host-side XML choices; default ``profile_for_test_uri()`` for test URIs,
      ``DomainConfig()`` (TCG) otherwise.
    - ``migration_bandwidth_mib_s``: cap on the migration stream (MiB/s); None = no cap.
    - ``save_dir``: where the test driver's save/restore emulation writes images;
      default a private temporary directory.
    - ``local_stats``: add psutil figures to ``stats()``; default: False for ``test:`` URIs
      (psutil would describe the test machine, not the simulated host), True otherwise.
    """

    uri: str = "test:///default"
    host: str | None = None
    peer_uri: str | None = None
    migration_uri: str | None = None
    domain: DomainConfig | None = None
    migration_bandwidth_mib_s: int | None = None
    save_dir: str | None = None
    local_stats: bool | None = None

    @property
    def is_test(self) -> bool:
        return self.uri.startswith("test:")


class _FromXml(NamedTuple):
    """What a listing reads from a domain's XML description."""

    namespace: str
    ha: tuple[int, str] | None
    nics: int
    disks: int

    @classmethod
    def parse(cls, xml: str) -> _FromXml:
        namespace, _tags = parse_metadata(xml)
        root = ET.fromstring(xml)
        return cls(
            namespace,
            parse_ha(xml),
            len(root.findall("devices/interface")),
            len(root.findall("devices/disk[@device='disk'][@type='file']")),
        )


class LibvirtHypervisor(Hypervisor):
    """``Hypervisor`` over one libvirt connection (opened lazily, in a worker thread)."""

    def __init__(self, config: LibvirtConfig) -> None:
        self.config = config
        self.host = config.host or config.uri
        self.domain_config = config.domain or (
            profile_for_test_uri() if config.is_test else DomainConfig()
        )
        self._conn: Any = None
        self._conn_lock = threading.Lock()
        self._token: trio.lowlevel.TrioToken | None = None
        self._callback_id: int | None = None
        self._subscribers: list[trio.MemorySendChannel[LifecycleEvent]] = []
        self._save_dir = config.save_dir
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        #: A domain's XML description -> what a listing reads from it (namespace, HA
        #: generation and fence, NICs, disks), kept from the last listing: parsing is
        #: most of a listing's cost (three parses a domain), and the description of a
        #: domain rarely changes between two listings (any change is a new key).
        self._parsed: dict[str, _FromXml] = {}

    # -- plumbing -------------------------------------------------------------------------
    def _connect(self) -> Any:
        with self._conn_lock:
            if self._conn is not None and not _alive(self._conn):
                # libvirtd closed it (restarted, or its keepalive gave up on a daemon
                # that was stopped for longer than ~30 s): open a new one
                dead, self._conn = self._conn, None
                with contextlib.suppress(Exception):
                    _close(dead, self._callback_id)
                self._callback_id = None
            if self._conn is None:
                _ensure_event_loop()
                libvirt = _libvirt()
                try:
                    conn = libvirt.open(self.config.uri)
                except libvirt.libvirtError as exc:
                    raise from_libvirt_exception(exc, operation="connect", host=self.host) from None
                self._callback_id = conn.domainEventRegisterAny(
                    None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._on_event, None
                )
                self._conn = conn
            return self._conn

    def _guarded(self, fn: Callable[[Any], T], operation: str, vm: str, migrating: bool) -> T:
        libvirt = _libvirt()
        conn = self._connect()
        try:
            return fn(conn)
        except libvirt.libvirtError as exc:
            raise from_libvirt_exception(
                exc, operation=operation, vm=vm, host=self.host, migrating=migrating
            ) from None

    async def _run(
        self, fn: Callable[[Any], T], operation: str, vm: str = "", migrating: bool = False
    ) -> T:
        """Run ``fn(conn)`` in a worker thread with libvirt errors mapped."""
        if self._token is None:
            self._token = trio.lowlevel.current_trio_token()
        return await trio.to_thread.run_sync(partial(self._guarded, fn, operation, vm, migrating))

    def _on_event(self, _conn: Any, dom: Any, event: int, detail: int, _opaque: Any) -> None:
        kind = _EVENTS.get(event)
        if kind is None:
            return
        if kind is EventKind.STARTED and detail == _STARTED_MIGRATED:
            kind = EventKind.MIGRATED_IN
        elif kind is EventKind.STOPPED and detail == _STOPPED_MIGRATED:
            kind = EventKind.MIGRATED_OUT
        ev = LifecycleEvent(self.host, dom.name(), kind, str(detail), time.monotonic())
        token = self._token
        if token is None or not self._subscribers:
            return
        # RunFinishedError/RuntimeError: the Trio run is over; nobody is listening any more
        with contextlib.suppress(trio.RunFinishedError, RuntimeError):
            trio.from_thread.run_sync(self._publish, ev, trio_token=token)

    def _publish(self, event: LifecycleEvent) -> None:
        for chan in list(self._subscribers):
            try:
                chan.send_nowait(event)
            except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
                self._subscribers.remove(chan)  # a subscriber that cannot keep up is dropped

    def events(self) -> trio.MemoryReceiveChannel[LifecycleEvent]:
        if self._token is None:
            self._token = trio.lowlevel.current_trio_token()
        send, recv = trio.open_memory_channel[LifecycleEvent](4096)
        self._subscribers.append(send)
        return recv

    async def connect(self) -> None:
        """Open the connection now (otherwise the first call does it)."""
        await self._run(lambda conn: None, "connect")

    async def capabilities(self) -> str:
        """The host's capabilities XML. On a fresh libvirtd this waits for its QEMU probe
        (~12 s here), so calling it early keeps that cost out of the first start/migration."""
        return await self._run(lambda conn: conn.getCapabilities(), "capabilities")

    # -- lifecycle ------------------------------------------------------------------------
    async def create(self, spec: VmSpec) -> VmInfo:
        xml = domain_xml(spec, self.domain_config)  # raises InvalidSpec before any I/O
        key = vm_key(spec.name, spec.namespace)
        where = f" in namespace {spec.namespace}" if spec.namespace else ""

        def create(conn: Any) -> None:
            # defineXML would silently *redefine* an existing VM, so refuse first (one
            # lookup: listing every domain made each create O(VMs on the host))
            if _exists(conn, key):
                raise AlreadyExists(
                    f"create vm {spec.name!r} on {self.host}: a VM with this name already "
                    f"exists on this host{where}",
                    vm=spec.name,
                    host=self.host,
                )
            dom = conn.defineXML(xml)
            try:
                dom.create()
            except Exception:
                dom.undefine()  # do not leave a half-created VM behind
                raise

        await self._run(create, "create", spec.name)
        return await self.info(key)

    async def shutdown(self, name: str) -> None:
        await self._run(lambda c: c.lookupByName(name).shutdown(), "shut down", name)

    async def destroy(self, name: str) -> None:
        await self._run(lambda c: c.lookupByName(name).destroy(), "destroy", name)

    async def undefine(self, name: str) -> None:
        await self._run(lambda c: c.lookupByName(name).undefine(), "undefine", name)

    async def suspend(self, name: str) -> None:
        await self._run(lambda c: c.lookupByName(name).suspend(), "pause", name)

    async def resume(self, name: str) -> None:
        await self._run(lambda c: c.lookupByName(name).resume(), "resume", name)

    async def start(self, name: str) -> None:
        await self._run(lambda c: c.lookupByName(name).create(), "start", name)

    # -- queries --------------------------------------------------------------------------
    def _vm_info(self, dom: Any, keep: dict[str, _FromXml] | None = None) -> VmInfo:
        """``dom`` as a ``VmInfo``; ``keep`` collects the parsed descriptions of a
        listing (the next listing's cache)."""
        state, max_kib, _mem, vcpus, cpu_ns = dom.info()
        ours = _STATES.get(state, DomainState.UNKNOWN)
        if state == 3 and dom.state()[1] in _PAUSED_MIGRATING:
            ours = DomainState.MIGRATING
        xml = dom.XMLDesc(0)
        parsed = self._parsed.get(xml)
        if parsed is None:
            parsed = _FromXml.parse(xml)
        if keep is not None:
            keep[xml] = parsed
        namespace, ha, nics, disks = parsed
        name = dom.name()
        if namespace and name.startswith(namespace + ":"):
            name = name[len(namespace) + 1 :]
        return VmInfo(
            name=name,
            host=self.host,
            state=ours,
            vcpus=int(vcpus),
            memory_mib=int(max_kib) // 1024,
            namespace=namespace,
            uuid=dom.UUIDString(),
            cpu_time_s=cpu_ns / 1e9,
            nics=nics,
            disks=disks,
            ha_generation=ha[0] if ha else 0,
            ha_fence=ha[1] if ha else "",
        )

    async def info(self, name: str) -> VmInfo:
        return await self._run(lambda c: self._vm_info(c.lookupByName(name)), "info", name)

    async def list_vms(self) -> list[VmInfo]:
        def list_all(conn: Any) -> list[VmInfo]:
            keep: dict[str, _FromXml] = {}
            vms = []
            for dom in conn.listAllDomains(0):
                try:
                    vms.append(self._vm_info(dom, keep))
                except _libvirt().libvirtError as exc:
                    # destroyed since the listing began (a clear runs beside the
                    # periodic read): not listed, the rest of the listing stands
                    mapped = from_libvirt_exception(exc, operation="list", host=self.host)
                    if not isinstance(mapped, VmNotFound):
                        raise
            vms.sort(key=lambda v: v.name)
            self._parsed = keep  # the domains of this listing only: the cache never grows
            return vms

        return await self._run(list_all, "list")

    async def stats(self) -> HostStats:
        def sample(conn: Any) -> HostStats:
            node = NodeInfo.from_libvirt(conn.getInfo())
            rows = []
            for dom in conn.listAllDomains(0):
                state, max_kib, _m, vcpus, _t = dom.info()
                xml = dom.XMLDesc(0)
                parsed = self._parsed.get(xml)  # as the last listing read it
                nics = parsed.nics if parsed is not None else _FromXml.parse(xml).nics
                rows.append((state == 1, int(vcpus), int(max_kib) // 1024, nics))
            commit = commitments(rows)
            use_psutil = self.config.local_stats
            if use_psutil is None:
                use_psutil = not self.config.is_test
            if use_psutil:
                return local_stats(self.host, commit, node)
            return HostStats(self.host, node.cpus, node.memory_mib, commit, "libvirt", node=node)

        return await self._run(sample, "stats")

    # -- migration ------------------------------------------------------------------------
    async def migrate(
        self, name: str, dest: Hypervisor, *, copy_storage: bool = False
    ) -> MigrationResult:
        if not isinstance(dest, LibvirtHypervisor):
            raise MigrationFailed(f"vm {name!r}: destination is not a libvirt host", vm=name)
        if dest.config.is_test != self.config.is_test:
            raise MigrationFailed(f"vm {name!r}: cannot migrate between test and real hosts")
        await dest.connect()
        if self.config.is_test:
            return await self._save_restore(name, dest)
        return await self._live(name, dest, copy_storage)

    def _image_path(self, name: str) -> str:
        if self._save_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="dvms-save-")
            self._save_dir = self._tmp.name
        return os.path.join(self._save_dir, f"{name}.save")

    async def _save_restore(self, name: str, dest: LibvirtHypervisor) -> MigrationResult:
        path = self._image_path(name)
        dest_conn = dest._conn

        def move(conn: Any) -> float:
            dom = conn.lookupByName(name)
            xml = dom.XMLDesc(0)
            start = time.perf_counter()
            dom.save(path)  # the VM stops here; it runs again at restore
            try:
                dest_conn.defineXML(xml)
                dest_conn.restore(path)
            except Exception:
                _rollback_restore(conn, dest_conn, name, path)
                raise
            finally:
                if os.path.exists(path):
                    os.unlink(path)
            elapsed = time.perf_counter() - start
            dom.undefine()
            return elapsed

        elapsed = await self._run(move, f"migrate to {dest.host}", name, migrating=True)
        # save/restore is a cold move: the guest is stopped for all of it
        return MigrationResult(
            name, self.host, dest.host, elapsed, elapsed * 1000.0, None, "save-restore"
        )

    async def _live(
        self, name: str, dest: LibvirtHypervisor, copy_storage: bool
    ) -> MigrationResult:
        libvirt = _libvirt()
        flags = (
            libvirt.VIR_MIGRATE_LIVE
            | libvirt.VIR_MIGRATE_PEER2PEER
            | libvirt.VIR_MIGRATE_PERSIST_DEST
            | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
        )
        if copy_storage:
            # incremental: only the top image of each local disk travels; the destination
            # holds the same backing file (an image without one is copied whole)
            flags |= libvirt.VIR_MIGRATE_NON_SHARED_INC
        params: dict[str, Any] = {}
        if dest.config.migration_uri:
            params[libvirt.VIR_MIGRATE_PARAM_URI] = dest.config.migration_uri
        if self.config.migration_bandwidth_mib_s:
            params[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH] = self.config.migration_bandwidth_mib_s
        dconnuri = dest.config.peer_uri or dest.config.uri

        def go(conn: Any) -> float:
            dom = conn.lookupByName(name)
            start = time.perf_counter()
            dom.migrateToURI3(dconnuri, params, flags)
            return time.perf_counter() - start

        elapsed = await self._run(go, f"migrate to {dest.host}", name, migrating=True)
        job = await dest._completed_job(name)
        downtime = job.get("downtime")
        processed = job.get("memory_processed")
        return MigrationResult(
            name,
            self.host,
            dest.host,
            elapsed,
            float(downtime) if downtime is not None else None,
            processed / (1 << 20) if processed is not None else None,
            "live-p2p",
            {"job": job},
        )

    async def _completed_job(self, name: str) -> dict[str, Any]:
        """Completed-job statistics of an incoming migration (downtime in ms, bytes)."""
        libvirt = _libvirt()

        def read(conn: Any) -> dict[str, Any]:
            dom = conn.lookupByName(name)
            return dict(dom.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED))

        try:
            return await self._run(read, "job stats", name)
        except HypervisorError:
            return {}

    async def aclose(self) -> None:
        for chan in self._subscribers:
            chan.close()
        self._subscribers.clear()
        conn, self._conn = self._conn, None
        if conn is not None:
            await trio.to_thread.run_sync(partial(_close, conn, self._callback_id))
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


def _rollback_restore(src: Any, dst: Any, name: str, path: str) -> None:
    """Undo a failed save/restore move: forget the copy on dst, run it again on src."""
    for step in (
        lambda: dst.lookupByName(name).undefine(),
        lambda: src.restore(path),
    ):
        with contextlib.suppress(Exception):  # best effort: the original error is raised
            step()


def _alive(conn: Any) -> bool:
    """Whether ``conn`` still talks to libvirtd (a local check: no request is sent)."""
    try:
        return bool(conn.isAlive())
    except Exception:
        return False


def _close(conn: Any, callback_id: int | None) -> None:
    try:
        if callback_id is not None:
            conn.domainEventDeregisterAny(callback_id)
    finally:
        conn.close()


def _exists(conn: Any, name: str) -> bool:
    libvirt = _libvirt()
    try:
        conn.lookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return False
        raise
    return True


def open_libvirt(config: LibvirtConfig | str | None = None, **kwargs: Any) -> LibvirtHypervisor:
    """Registry factory: ``open_hypervisor("libvirt", "test:///h1.xml", host="h1")``."""
    if config is None or isinstance(config, str):
        config = LibvirtConfig(uri=config or "test:///default", **kwargs)
    return LibvirtHypervisor(config)
