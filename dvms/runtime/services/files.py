"""Files shared between peers: the node's store, its file stream server, provider
records, and swarm downloads (``docs/files.md``)::

    file add PATH --name N -> store (hash, copy, manifest) -> name record file/N -> root
                              (compare-and-swap, services/state.py) -> announce provider
    file get N|ROOT        -> resolve the name -> find providers (nodes closest to the
                              root) -> manifest from one (checked against the root) ->
                              preallocated partial file + bitmap -> Swarm (dvms.files)
                              picks peers and chunks; one stream per chunk in flight;
                              each chunk hashed before it is written -> rename into place
                              -> announce as a complete provider
    a node closest to a root <- ProvideFile / FindProviders (ProviderTable)

The partial file and its bitmap survive a restart: the daemon resumes every unfinished
transfer when it starts. Names: ``file/NAME`` head records of the replicated state, so
republishing a name is ordered by its version and an old root stays fetchable from
whoever still holds it.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import trio

from dvms.files import (
    PROVIDER_PREFIX,
    Bitmap,
    FilesConfig,
    Manifest,
    ManifestError,
    ProviderError,
    ProviderTable,
    Swarm,
    provider_record,
)
from dvms.files.manifest import parse_root, validate_file_name
from dvms.files.providers import Provider, read_provider
from dvms.names import vm_key
from dvms.overlay.messages import Contact
from dvms.overlay.records import Identity, key_of
from dvms.partition.messages import HeldImage, LaunchVm
from dvms.placement.spec import VmSpec
from dvms.runtime.capabilities import Dht, Handlers, Requester, StateStore
from dvms.runtime.client import ControlError
from dvms.runtime.services.files_messages import (
    MAX_FETCH_ROWS,
    FetchesQuery,
    FetchesReply,
    FetchRow,
    FileAck,
    FindProviders,
    ProvideFile,
    ProvidersFound,
)
from dvms.runtime.services.files_store import Partial, Store, StoreError
from dvms.runtime.services.files_stream import (
    FileConn,
    Limiter,
    Source,
    StreamError,
    open_file_conn,
    serve_file_stream,
)
from dvms.runtime.services.state import StateError
from dvms.wire.keys import Keyring

__all__ = ["FILE_PREFIX", "NAME_PREFIX", "FileError", "FileService", "Transfer"]

log = logging.getLogger("dvms.node.files")

#: Head records of file names in the replicated state.
NAME_PREFIX = "file/"
#: A VM's disk, kernel, initrd or cdrom written ``file:NAME`` (or ``file:ROOT``) is fetched from
#: the peers by the host that creates the VM (minimega's prefix).
FILE_PREFIX = "file:"


class FileError(Exception):
    """A file command failed; the message says why (the CLI prints it)."""


@dataclass(slots=True)
class Transfer:
    """One download in this daemon, as ``file status`` shows it."""

    root: bytes
    name: str
    started: float
    single_source: bool = False
    manifest: Manifest | None = None
    partial: Partial | None = None
    swarm: Swarm | None = None
    state: str = "finding"  # finding | fetching | done | failed
    error: str = ""
    path: str = ""
    resumed: int = 0
    fetched: int = 0
    #: chunk requests a peer answered "busy"
    busy: int = 0
    bytes: int = 0
    finished: float = 0.0
    done: trio.Event = field(default_factory=trio.Event)
    #: peers (node ids) that sent at least one good chunk
    peers_used: set[int] = field(default_factory=set)
    cancel: trio.CancelScope = field(default_factory=trio.CancelScope)

    def row(self, now: float) -> dict[str, Any]:
        m, s = self.manifest, self.swarm
        elapsed = (self.finished or now) - self.started
        return {
            "root": self.root.hex(),
            "name": self.name,
            "state": self.state,
            "error": self.error,
            "size": m.size if m else 0,
            "chunks": m.chunks if m else 0,
            "chunks_done": s.have.count if s else (m.chunks if self.state == "done" and m else 0),
            "resumed": self.resumed,
            "fetched": self.fetched,
            "bytes_per_s": round(self.bytes / elapsed, 1) if elapsed > 0 else 0.0,
            "peers": len(self.peers_used),
            "inflight": s.inflight if s else 0,
            "bad_chunks": s.bad_chunks if s else 0,
            "busy": self.busy,
            "banned": len(s.banned()) if s else 0,
            "path": self.path,
            "elapsed_s": round(elapsed, 3),
        }


class FileService:
    def __init__(
        self,
        state_dir: Path,
        *,
        key: bytes | Keyring,
        identity: Identity,
        dht: Dht,
        requests: Requester,
        state: StateStore,
        handlers: Handlers,
        rtt: Callable[[int], float | None],
        joined: Callable[[], Awaitable[None]],
        rng: random.Random,
        config: FilesConfig | None = None,
        wall: Callable[[], float] = time.time,
        defined: Callable[[], set[str]] = set,
        address_of: Callable[[int], str | None] = lambda node_id: None,
    ) -> None:
        """``defined()``: the VMs defined on this host (hypervisor keys), whose files stay
        pinned (``check_pins``). ``address_of(node_id)``: the host the overlay reaches a
        peer at, if known."""
        self.config = config or FilesConfig()
        self.key = key
        self.identity = identity
        self.dht = dht
        self.requests = requests
        self.state = state
        self.rtt = rtt
        self.joined = joined
        self.rng = rng
        self.wall = wall
        self.defined = defined
        self.address_of = address_of
        #: holder -> when this daemon pinned a file for it
        self._pinned_at: dict[str, float] = {}
        self.store = Store(state_dir, self.config, wall)
        self.table = ProviderTable(
            max_ttl_s=self.config.provider_ttl_s, max_records=self.config.max_provider_records
        )
        self.limiter = Limiter(
            self.config.upload_bytes_s, self.config.upload_slots, self.config.upload_queue
        )
        self.transfers: dict[bytes, Transfer] = {}
        self.port = 0
        self.served_chunks = 0
        self._seq = 0
        #: node id -> when a provider that failed may be tried again
        self._dead: dict[int, float] = {}
        self._nursery: trio.Nursery | None = None
        #: told what this store holds (``HostMonitor.set_images``), every ``held_refresh_s``
        self.on_held: Callable[[tuple[HeldImage, ...]], None] = lambda held: None
        handlers.register(ProvideFile, self._answer_provide)
        handlers.register(FindProviders, self._answer_find)
        handlers.register(FetchesQuery, self._answer_fetches)
        #: this host's name (``FetchRow.host``), set by the daemon
        self.host_name = ""
        #: VM key -> (its VM's name and namespace, field, ``file:`` ref, root once
        #: resolved): the creations waiting here for a file (``vjob show``)
        self.waiting: dict[str, tuple[str, str, str, str, bytes]] = {}

    # -- service ---------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        host = self.config.listen_host or self.dht.contact.host
        listeners = await trio.open_tcp_listeners(self.config.listen_port, host=host)
        self.port = listeners[0].socket.getsockname()[1]
        source = Source(self._serve_manifest, self._serve_chunk, self._serve_have)

        async def serve(stream: trio.SocketStream) -> None:
            await serve_file_stream(
                stream,
                self.key,
                source,
                self.limiter,
                timeout=self.config.stream_timeout_s,
                max_frame=self.config.max_frame_bytes,
                on_served=self._on_served,
            )

        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(trio.serve_listeners, serve, listeners)
            nursery.start_soon(self._republish_loop)
            nursery.start_soon(self._pins_loop)
            nursery.start_soon(self._resume)
            nursery.start_soon(self._held_loop)
            task_status.started()

    async def _resume(self) -> None:
        """Every transfer a previous run left unfinished, once the node has joined (its
        providers are found through the overlay)."""
        await self.joined()
        for root in await trio.to_thread.run_sync(self.store.partial_roots):
            self._start(root, "")

    async def _held_loop(self) -> None:
        while True:
            entries = await trio.to_thread.run_sync(self.store.entries)
            self.on_held(held_images(entries, self.config.placement_images))
            await trio.sleep(self.config.held_refresh_s)

    async def with_images(self, vms: tuple[LaunchVm, ...]) -> tuple[LaunchVm, ...]:
        """``vms`` with the roots of their ``file:`` images, for the leader's
        image-locality score; each name resolved once, and one that does not resolve now
        is left out (the host that creates the VM reports why)."""
        found: dict[str, bytes | None] = {}
        out = []
        for vm in vms:
            roots: list[bytes] = []
            for ref in vm.to_spec().file_refs():
                if ref not in found:
                    try:
                        found[ref] = (await self.resolve(ref))[0]
                    except FileError:
                        found[ref] = None
                root = found[ref]
                if root is not None and root not in roots:
                    roots.append(root)
            out.append(replace(vm, images=tuple(roots)) if roots else vm)
        return tuple(out)

    def _on_served(self, n: int) -> None:
        self.served_chunks += 1

    async def _republish_loop(self) -> None:
        await self.joined()
        while True:
            for e in await trio.to_thread.run_sync(self.store.entries):
                if e["complete"]:
                    await self.announce(bytes.fromhex(e["root"]), complete=True)
            self.table.expire(trio.current_time())
            await trio.sleep(self.config.republish_s)

    async def _pins_loop(self) -> None:
        while True:
            await trio.sleep(self.config.pin_check_s)
            defined, now = self.defined(), trio.current_time()
            await trio.to_thread.run_sync(self.check_pins, defined, now)

    def check_pins(self, defined: set[str], now: float) -> list[str]:
        """Drop the pins of VMs not defined here (destroyed, migrated away, or never
        created), except those taken less than ``pin_grace_s`` ago (the VM may be being
        created); returns the holders dropped. ``defined``: the VMs defined here; ``now``:
        the daemon's clock (this runs in a worker thread)."""
        dropped: set[str] = set()
        for e in self.store.entries():
            for holder in e["pinned"]:
                young = now - self._pinned_at.get(holder, -math.inf) < self.config.pin_grace_s
                if holder not in defined and not young:
                    self.store.unpin(bytes.fromhex(e["root"]), holder)
                    dropped.add(holder)
        return sorted(dropped)

    # -- serving ---------------------------------------------------------------------------

    def _serve_manifest(self, root: bytes) -> bytes | None:
        return self.store.manifest_bytes(root)

    def _serve_chunk(self, root: bytes, index: int) -> bytes | None:
        return self.store.read_chunk(root, index)

    def _serve_have(self, root: bytes) -> tuple[bool, bytes] | None:
        have = self.store.bitmap(root)
        return None if have is None else (have.complete, have.to_bytes())

    # -- provider records ------------------------------------------------------------------

    async def _answer_provide(self, msg: ProvideFile) -> FileAck:
        return FileAck(self.table.put(msg.record, trio.current_time()))

    async def _answer_find(self, msg: FindProviders) -> ProvidersFound:
        recs = self.table.get(msg.root, trio.current_time(), self.config.max_providers)
        return ProvidersFound(tuple(recs))

    def _next_seq(self) -> int:
        # wall-clock milliseconds: a restarted node's records still supersede its old ones
        self._seq = max(self._seq + 1, int(self.wall() * 1000))
        return self._seq

    async def _closest(self, root: bytes) -> list[Contact]:
        key = key_of(PROVIDER_PREFIX + root.hex())
        unique = {c.node_id: c for c in await self.dht.closest_nodes(key)}
        ranked = sorted(unique.values(), key=lambda c: c.node_id ^ key)
        return ranked[: self.config.provider_replicas]

    async def announce(self, root: bytes, *, complete: bool, withdraw: bool = False) -> int:
        """Tell the nodes closest to ``root`` that this node provides it (or, with
        ``withdraw``, no longer does); returns how many accepted."""
        rec = provider_record(
            self.identity,
            root,
            self.dht.contact.host if not self.config.listen_host else self.config.listen_host,
            self.port,
            complete=complete,
            seq=self._next_seq(),
            ttl_s=0.0 if withdraw else self.config.provider_ttl_s,
        )
        accepted = 0

        async def tell(c: Contact) -> None:
            nonlocal accepted
            if c.node_id == self.dht.contact.node_id:
                reply: Any = await self._answer_provide(ProvideFile(rec))
            else:
                reply = await self.requests.request(c.addr, ProvideFile(rec))
            if isinstance(reply, FileAck) and reply.ok:
                accepted += 1

        async with trio.open_nursery() as nursery:
            for c in await self._closest(root):
                nursery.start_soon(tell, c)
        return accepted

    async def find_providers(self, root: bytes) -> list[Provider]:
        """The providers of ``root`` the nodes closest to it know (this node excluded),
        each record checked again here."""
        found: dict[int, Provider] = {}

        async def ask(c: Contact) -> None:
            if c.node_id == self.dht.contact.node_id:
                reply: Any = await self._answer_find(FindProviders(root))
            else:
                reply = await self.requests.request(c.addr, FindProviders(root))
            if not isinstance(reply, ProvidersFound):
                return
            for rec in reply.records:
                try:
                    p = read_provider(rec)
                except ProviderError:
                    continue
                if p.root != root or p.ttl_s <= 0:
                    continue
                old = found.get(p.node_id)
                if old is None or old.seq < p.seq:
                    found[p.node_id] = p

        async with trio.open_nursery() as nursery:
            for c in await self._closest(root):
                nursery.start_soon(ask, c)
        found.pop(self.identity.node_id, None)
        return list(found.values())

    # -- names -----------------------------------------------------------------------------

    async def resolve(self, ref: str) -> tuple[bytes, str]:
        """(root, name) of ``ref``: a root in hex, or a name (its current root)."""
        root = parse_root(ref)
        if root is not None:
            return root, ""
        try:
            validate_file_name(ref)
        except ValueError as exc:
            raise FileError(str(exc)) from None
        try:
            held = await self.state.read(NAME_PREFIX + ref)
        except StateError as exc:
            raise FileError(f"file {ref}: {exc}") from None
        value = held.value
        if not isinstance(value, dict) or parse_root(str(value.get("root", ""))) is None:
            raise FileError(f"no such file: {ref}")
        return bytes.fromhex(value["root"]), ref

    async def _publish_name(self, name: str, m: Manifest) -> int:
        root = m.root.hex()

        def change(value: Any) -> tuple[Any, Any]:
            previous: list[str] = []
            if isinstance(value, dict) and isinstance(value.get("previous"), list):
                previous = [str(r) for r in value["previous"]][-15:]
            if isinstance(value, dict) and value.get("root") not in (None, root):
                previous.append(str(value["root"]))
            new = {"root": root, "size": m.size, "format": m.format, "previous": previous}
            return new, None

        try:
            await self.state.update(NAME_PREFIX + name, change)
            held = await self.state.read(NAME_PREFIX + name)
        except StateError as exc:
            raise FileError(f"file {name}: name not published: {exc}") from None
        return held.seq

    # -- commands --------------------------------------------------------------------------

    async def add(self, path: str, name: str) -> dict[str, Any]:
        if name:
            try:
                validate_file_name(name)
            except ValueError as exc:
                raise FileError(str(exc)) from None
        src = Path(path)
        try:
            is_file = src.is_file()
        except (OSError, ValueError) as exc:  # a name too long, a NUL byte
            raise FileError(f"cannot read {path[:200]!r}: {exc}") from None
        if not is_file:
            raise FileError(f"no such file: {path}")
        try:
            m = await trio.to_thread.run_sync(self.store.add, src, self.config.chunk_bytes, name)
        except StoreError as exc:
            raise FileError(str(exc)) from None
        seq = await self._publish_name(name, m) if name else 0
        await self.announce(m.root, complete=True)
        backing = m.backing
        while backing is not None:  # a qcow2 file's backing files were added too
            await self.announce(backing, complete=True)
            bm = await trio.to_thread.run_sync(self.store.manifest, backing)
            backing = bm.backing if bm is not None else None
        return {
            "name": name,
            "root": m.root.hex(),
            "size": m.size,
            "chunks": m.chunks,
            "version": seq,
            "path": str(self.store.path(m.root)),
        }

    async def get(
        self, ref: str, *, wait: bool, timeout: float, single_source: bool = False
    ) -> dict[str, Any]:
        root, name = await self.resolve(ref)
        if name:
            await trio.to_thread.run_sync(self.store.set_name, name, root)
        t = self._start(root, name, single_source=single_source)
        if wait:
            with trio.move_on_after(timeout):
                await t.done.wait()
            if t.state == "failed":
                raise FileError(f"file {ref}: {t.error}")
            if t.state != "done":
                raise FileError(f"file {ref}: not complete after {timeout:g} s")
        return {"name": name, **t.row(trio.current_time())}

    async def ensure(self, ref: str, *, timeout: float, pin: str = "") -> Path:
        """The local path of ``ref``, fetched first if needed (``file:NAME``); pinned for
        ``pin`` (a VM) if given."""
        root, _ = await self.resolve(ref)
        if pin in self.waiting:
            self.waiting[pin] = (*self.waiting[pin][:4], root)
        await self.get(root.hex(), wait=True, timeout=timeout)
        if pin:
            self._pinned_at[pin] = trio.current_time()
            await trio.to_thread.run_sync(self.store.pin, root, pin)
        return self.store.path(root)

    async def prepare_vm(self, spec: VmSpec) -> tuple[VmSpec | None, str]:
        """``spec`` with each ``file:REF`` of its disk, kernel, initrd and cdrom fetched here and
        replaced by its local path, pinned for the VM; (None, reason) if one cannot be."""
        changes: dict[str, Any] = {}
        holder = vm_key(spec.name, spec.namespace)
        for fld in ("disk", "kernel", "initrd", "cdrom"):
            value = getattr(spec, fld)
            if not isinstance(value, str) or not value.startswith(FILE_PREFIX):
                continue
            ref = value[len(FILE_PREFIX) :]
            self.waiting[holder] = (spec.name, spec.namespace, fld, ref, b"")
            try:
                path = await self.ensure(ref, timeout=self.config.vm_fetch_timeout_s, pin=holder)
            except FileError as exc:
                return None, f"vm {spec.name}: {fld} {value}: {exc}"
            finally:
                self.waiting.pop(holder, None)
            changes[fld] = str(path)
        return (replace(spec, **changes) if changes else spec), ""

    async def _answer_fetches(self, _msg: FetchesQuery) -> FetchesReply:
        return FetchesReply(tuple(self.fetch_rows()[:MAX_FETCH_ROWS]))

    def fetch_rows(self) -> list[FetchRow]:
        """The VMs waiting here for a file, with the transfer's progress."""
        rows = []
        for name, namespace, fld, ref, root in self.waiting.values():
            t = self.transfers.get(root) if root else None
            m = t.manifest if t is not None else None
            state = "resolving" if not root else (t.state if t is not None else "finding")
            total = m.size if m is not None else 0
            done = 0
            if t is not None and m is not None:
                have = t.swarm.have.count if t.swarm is not None else 0
                done = total if t.state == "done" else min(total, have * m.chunk)
            rows.append(FetchRow(name, namespace, self.host_name, fld, ref, root, done, total,
                                 state))  # fmt: skip
        return rows

    async def listing(self) -> list[dict[str, Any]]:
        entries = await trio.to_thread.run_sync(self.store.entries)
        names = await trio.to_thread.run_sync(self.store.names)
        by_root: dict[str, list[str]] = {}
        for n, r in names.items():
            by_root.setdefault(r, []).append(n)
        for e in entries:
            e["names"] = sorted(by_root.get(e["root"], []))
        return entries

    def status(self) -> list[dict[str, Any]]:
        now = trio.current_time()
        return [t.row(now) for t in self.transfers.values()]

    async def delete(self, ref: str) -> dict[str, Any]:
        root, name = await self.resolve(ref)
        pins = await trio.to_thread.run_sync(self.store.pins, root)
        if pins:
            raise FileError(f"file {ref} is pinned by {', '.join(pins)}: not deleted")
        t = self.transfers.pop(root, None)
        if t is not None:
            t.cancel.cancel()
            if t.partial is not None:
                self.store.close(t.partial)
        found = await trio.to_thread.run_sync(self.store.delete, root)
        if not found and t is None:
            raise FileError(f"file {ref} is not held here")
        withdrawn = await self.announce(root, complete=False, withdraw=True)
        return {"name": name, "root": root.hex(), "withdrawn": withdrawn}

    async def providers(self, ref: str) -> dict[str, Any]:
        root, name = await self.resolve(ref)
        found = await self.find_providers(root)
        rows = [
            {
                "node_id": f"{p.node_id:040x}",
                "address": f"{p.host}:{p.port}",
                "complete": p.complete,
                "rtt_ms": _ms(self.rtt(p.node_id)),
            }
            for p in found
        ]
        have = await trio.to_thread.run_sync(self.store.bitmap, root)
        if have is not None:
            rows.append(
                {
                    "node_id": f"{self.identity.node_id:040x}",
                    "address": f"{self.dht.contact.host}:{self.port}",
                    "complete": have.complete,
                    "rtt_ms": 0.0,
                }
            )
        return {"name": name, "root": root.hex(), "providers": rows}

    # -- transfers -------------------------------------------------------------------------

    def _start(self, root: bytes, name: str, *, single_source: bool = False) -> Transfer:
        t = self.transfers.get(root)
        if t is not None and t.state != "failed":
            return t
        t = Transfer(root, name, trio.current_time(), single_source=single_source)
        self.transfers[root] = t
        assert self._nursery is not None, "the file service is not running"
        self._nursery.start_soon(self._run_transfer, t)
        return t

    async def _run_transfer(self, t: Transfer) -> None:
        with t.cancel:
            try:
                await self._fetch(t)
                t.state = "done"
            except (FileError, StoreError) as exc:
                t.state, t.error = "failed", str(exc)
                log.warning("file %s: %s", t.root.hex()[:12], exc)
            finally:
                if t.partial is not None and t.state != "done":
                    self.store.close(t.partial)
                t.finished = trio.current_time()
                t.done.set()

    async def _fetch(self, t: Transfer) -> None:
        if await trio.to_thread.run_sync(self.store.complete, t.root):
            t.manifest = m = self.store.manifest(t.root)
            if m is not None and m.backing is not None:
                await self._fetch_backing(m.backing)
            t.path = str(self.store.path(t.root))
            await trio.to_thread.run_sync(self.store.touch, t.root)
            return
        m = await trio.to_thread.run_sync(self.store.manifest, t.root)
        if m is None:
            m = await self._fetch_manifest(t.root)
        if m.backing is not None:  # qcow2: its backing file first, recursively
            await self._fetch_backing(m.backing)
        if m.chunk > self.config.max_chunk_bytes:
            raise FileError(f"chunks of {m.chunk} bytes exceed max_chunk_bytes")
        t.manifest = m
        t.partial = p = await trio.to_thread.run_sync(self.store.begin, m)
        t.resumed = p.resumed
        cfg = self.config
        t.swarm = Swarm(
            Bitmap(m.chunks, p.have.to_bytes()),
            random.Random(self.rng.getrandbits(64)),
            per_peer=1 if t.single_source else cfg.per_peer_inflight,
            total=1 if t.single_source else cfg.total_inflight,
            ban_after=cfg.ban_after_bad,
            max_peers=1 if t.single_source else None,
            complete_only=t.single_source,
        )
        t.state = "fetching"
        if not t.single_source:
            self._nursery_spawn(self.announce, t.root, complete=False)
        await self._swarm(t, m, p, t.swarm)
        t.path = str(await trio.to_thread.run_sync(self.store.finish, p))
        await trio.to_thread.run_sync(self.store.link_backing, t.root)
        await self.announce(t.root, complete=True)

    async def _fetch_backing(self, root: bytes) -> None:
        b = self._start(root, "")
        await b.done.wait()
        if b.state != "done":
            raise FileError(f"backing file {root.hex()}: {b.error}")

    def _nursery_spawn(self, fn: Callable[..., Awaitable[object]], *args: Any, **kw: Any) -> None:
        async def call() -> None:
            await fn(*args, **kw)

        assert self._nursery is not None
        self._nursery.start_soon(call)

    async def _fetch_manifest(self, root: bytes) -> Manifest:
        deadline = trio.current_time() + self.config.stream_timeout_s
        last = "no provider found"
        while trio.current_time() < deadline:
            for p in await self.find_providers(root):
                try:
                    conn = await self._connect(p)
                    try:
                        data = await conn.manifest(root)
                    finally:
                        await conn.aclose()
                    if data is None:
                        continue
                    return Manifest.decode(data, root)
                except (StreamError, ManifestError) as exc:
                    last = f"{p.host}:{p.port}: {exc}"
            await trio.sleep(self.config.find_period_s)
        raise FileError(f"cannot get the manifest of {root.hex()}: {last}")

    async def _connect(self, p: Provider) -> FileConn:
        # the address the overlay knows the provider by (where its datagrams come from)
        # beats the one it wrote in its record, which may be a wildcard or private name
        return await open_file_conn(
            self.address_of(p.node_id) or p.host,
            p.port,
            self.key,
            timeout=self.config.stream_timeout_s,
            max_frame=self.config.max_frame_bytes,
        )

    async def _swarm(self, t: Transfer, m: Manifest, p: Partial, swarm: Swarm) -> None:
        """Keep the workers the swarm asks for running until every chunk is in."""
        cfg = self.config
        providers: dict[int, Provider] = {}
        running: dict[int, int] = {}
        wake = [trio.Event()]  # set when a chunk is in or a worker ends

        async def worker(prov: Provider) -> None:
            peer = prov.node_id
            try:
                conn = await self._connect(prov)
            except StreamError as exc:
                log.info("file %s: provider %s: %s", t.root.hex()[:12], prov.host, exc)
                self._dead[peer] = trio.current_time() + cfg.find_period_s * 5
                swarm.drop_peer(peer)
                running[peer] -= 1
                wake[0].set()
                return
            index: int | None = None
            try:
                while (index := swarm.assign(peer)) is not None:
                    data = await conn.chunk(t.root, index, m.chunk)
                    if data == "busy":
                        swarm.release(peer, index)
                        index = None
                        t.busy += 1
                        await trio.sleep(cfg.busy_backoff_s)
                        continue
                    if isinstance(data, str):
                        swarm.missing_at(peer, index)
                        index = None
                        continue
                    ok = await trio.to_thread.run_sync(m.check_chunk, index, data)
                    if ok:
                        await trio.to_thread.run_sync(self.store.write_chunk, p, index, data)
                        t.fetched += 1
                        t.bytes += len(data)
                        t.peers_used.add(peer)
                    done_index, index = index, None
                    if swarm.on_chunk(peer, done_index, ok):
                        log.warning(
                            "file %s: peer %s banned after %d bad chunks",
                            t.root.hex()[:12],
                            prov.host,
                            cfg.ban_after_bad,
                        )
                    wake[0].set()
            except StreamError as exc:
                log.info("file %s: provider %s: %s", t.root.hex()[:12], prov.host, exc)
                if index is not None:
                    swarm.release(peer, index)
                self._dead[peer] = trio.current_time() + cfg.find_period_s * 5
                if peer not in swarm.banned():
                    swarm.drop_peer(peer)
            finally:
                running[peer] -= 1
                wake[0].set()
                await trio.aclose_forcefully(conn.stream)

        polls: dict[int, FileConn] = {}
        try:
            await self._swarm_loop(t, m, swarm, providers, running, polls, worker, wake)
        finally:
            for conn in polls.values():
                await trio.aclose_forcefully(conn.stream)

    async def _swarm_loop(
        self,
        t: Transfer,
        m: Manifest,
        swarm: Swarm,
        providers: dict[int, Provider],
        running: dict[int, int],
        polls: dict[int, FileConn],
        worker: Callable[[Provider], Awaitable[None]],
        wake: list[trio.Event],
    ) -> None:
        """Find providers, poll the partial ones, start the workers ``swarm.slots()``
        asks for; until the file is complete or no provider is left."""
        cfg = self.config
        last_find = last_poll = -float("inf")
        no_peer_since: float | None = None
        async with trio.open_nursery() as nursery:
            while not swarm.done:
                now = trio.current_time()
                if now - last_find >= cfg.find_period_s or not providers:
                    last_find = now
                    for prov in await self.find_providers(t.root):
                        if self._dead.get(prov.node_id, 0.0) > now:
                            continue
                        providers[prov.node_id] = prov
                        if prov.complete:
                            swarm.add_peer(prov.node_id, self.rtt(prov.node_id), None)
                if now - last_poll >= cfg.have_poll_s:
                    last_poll = now
                    await self._poll_partials(t.root, m, swarm, providers, polls)
                plan = swarm.slots()
                for peer, want in plan.items():
                    while running.get(peer, 0) < want and peer in providers:
                        running[peer] = running.get(peer, 0) + 1
                        nursery.start_soon(worker, providers[peer])
                if not plan and not any(running.values()):
                    no_peer_since = no_peer_since if no_peer_since is not None else now
                    if now - no_peer_since > cfg.stream_timeout_s:
                        raise FileError(
                            f"no provider holds the {m.chunks - swarm.have.count} missing "
                            f"chunks (after {cfg.stream_timeout_s:g} s)"
                        )
                else:
                    no_peer_since = None
                with trio.move_on_after(cfg.have_poll_s):
                    await wake[0].wait()
                wake[0] = trio.Event()
            nursery.cancel_scope.cancel()

    async def _poll_partials(
        self,
        root: bytes,
        m: Manifest,
        swarm: Swarm,
        providers: dict[int, Provider],
        conns: dict[int, FileConn],
    ) -> None:
        """Ask every partial provider which chunks it holds now (on one stream kept per
        provider for this)."""

        async def poll(prov: Provider) -> None:
            try:
                conn = conns.get(prov.node_id)
                if conn is None:
                    conn = conns[prov.node_id] = await self._connect(prov)
                have = await conn.have(root)
            except StreamError:
                dead = conns.pop(prov.node_id, None)
                if dead is not None:
                    await trio.aclose_forcefully(dead.stream)
                self._dead[prov.node_id] = trio.current_time() + self.config.find_period_s * 5
                swarm.drop_peer(prov.node_id)
                providers.pop(prov.node_id, None)
                return
            if have is None:
                return
            complete, bits = have
            try:
                bitmap = None if complete else Bitmap(m.chunks, bits)
            except ValueError:
                return
            swarm.add_peer(prov.node_id, self.rtt(prov.node_id), bitmap)

        async with trio.open_nursery() as nursery:
            for prov in list(providers.values()):
                if not prov.complete and prov.node_id not in swarm.banned():
                    nursery.start_soon(poll, prov)

    # -- control commands -------------------------------------------------------------------

    def commands(self) -> dict[str, Callable[[dict[str, Any]], Awaitable[Any]]]:
        """The control commands (``file add|get|list|status|delete|providers``)."""
        table = {
            "file_add": self._cmd_add,
            "file_get": self._cmd_get,
            "file_list": self._cmd_list,
            "file_status": self._cmd_status,
            "file_delete": self._cmd_delete,
            "file_providers": self._cmd_providers,
        }
        return {cmd: _user_errors(fn) for cmd, fn in table.items()}

    async def _cmd_add(self, args: dict[str, Any]) -> Any:
        return await self.add(str(args.get("path", "")), str(args.get("name") or ""))

    async def _cmd_get(self, args: dict[str, Any]) -> Any:
        return await self.get(
            str(args.get("ref", "")),
            wait=bool(args.get("wait")),
            timeout=float(args.get("timeout", 3600.0)),
            single_source=bool(args.get("single_source")),
        )

    async def _cmd_list(self, args: dict[str, Any]) -> Any:
        return {"files": await self.listing()}

    async def _cmd_status(self, args: dict[str, Any]) -> Any:
        return {
            "transfers": self.status(),
            "served_chunks": self.served_chunks,
            "busy_answers": self.limiter.busy,
        }

    async def _cmd_delete(self, args: dict[str, Any]) -> Any:
        return await self.delete(str(args.get("ref", "")))

    async def _cmd_providers(self, args: dict[str, Any]) -> Any:
        return await self.providers(str(args.get("ref", "")))


def _user_errors(
    fn: Callable[[dict[str, Any]], Awaitable[Any]],
) -> Callable[[dict[str, Any]], Awaitable[Any]]:
    """``fn`` with its ``FileError`` turned into the ``ControlError`` the CLI prints."""

    async def call(args: dict[str, Any]) -> Any:
        try:
            return await fn(args)
        except FileError as exc:
            raise ControlError(str(exc)) from None

    return call


def held_images(entries: list[dict[str, Any]], most: int) -> tuple[HeldImage, ...]:
    """The ``most`` files of ``Store.entries()`` with the most bytes held (each chunk
    counted at the file's mean chunk size), largest first, then by root."""
    rows = []
    for e in entries:
        if not e["size"] or not e["chunks"] or not e["chunks_held"]:
            continue
        held = e["size"] if e["complete"] else e["size"] * e["chunks_held"] // e["chunks"]
        rows.append(HeldImage(bytes.fromhex(e["root"]), held, e["size"]))
    rows.sort(key=lambda i: (-i.held, i.root))
    return tuple(rows[:most])


def _ms(rtt: float | None) -> float | None:
    return round(rtt * 1000, 3) if rtt is not None else None
