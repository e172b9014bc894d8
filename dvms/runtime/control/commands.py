"""The control commands a daemon answers (the CLI's ``--socket`` talks to these).

Every command is a coroutine taking the request's ``args`` map and returning a
CBOR-friendly result, or raising ``ControlError`` with the text the CLI prints.

Cluster-wide commands (``vm info``, ``vm kill``, ``host``, ``partitions --all``, ``vjob
list``) ask every node of the cluster with a control-plane query (``runtime/messages.py``)
and answer locally too. The nodes are found by a crawl of the overlay
(``dvms/overlay/crawl.py``: routing tables read bucket by bucket until no new node
appears), so the answer is complete at any size, although a routing table holds only
k = 20 contacts per distance. Nodes a routing table names that do not answer the crawl
and peers that answered once but that no table names any more are asked too; the nodes
that do not answer the query within 3.5 s (``RunnerConfig.gather_timeout_s`` = 0.5 s,
doubled per retry, 3 attempts, an answer to any attempt counts) are listed as
``unreachable``; the command still succeeds with what it got. A host answers from its
monitor's cached list (no read of every domain first). ``members`` shows the crawl
itself.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from dvms.names import is_valid_namespace_name
from dvms.overlay.core import OverlayCore
from dvms.overlay.messages import Contact
from dvms.partition.messages import HaTag, LaunchVm, WireConstraint
from dvms.placement.spec import SpecError
from dvms.ranges import RangeError, expand, natural_key
from dvms.runtime.capabilities import Dht, PartitionStatus, Peers, Requester
from dvms.runtime.client import ControlError
from dvms.runtime.control import audit
from dvms.runtime.control import debug as debugcmd
from dvms.runtime.control.access import Caller, ControlAccess
from dvms.runtime.messages import (
    HaQuery,
    HaReply,
    HaRow,
    HostQuery,
    HostReply,
    Killed,
    KillVms,
    PartitionsQuery,
    PartitionsReply,
)
from dvms.runtime.services.files_messages import FetchesQuery, FetchesReply
from dvms.runtime.services.hostpages import complete
from dvms.runtime.services.hostside import HostSide
from dvms.runtime.services.monitor import HostMonitor
from dvms.runtime.services.namespaces import NamespaceService
from dvms.runtime.services.partition_log import PartitionLog, merge_rows
from dvms.runtime.services.state import StateError
from dvms.runtime.services.vjobs import NamesInUse, VjobRefused, VjobService
from dvms.wire.envelope import WireCodec
from dvms.wire.schema import SchemaError, compile_record

if TYPE_CHECKING:  # config.py composes ControlConfig: a runtime import would be a cycle
    from dvms.runtime.config import NodeConfig

__all__ = ["ControlConfig", "Daemon", "launch_from_map"]

log = logging.getLogger("dvms.control")


@dataclass(frozen=True, slots=True)
class ControlConfig:
    """The control commands' own settings (``[control]`` of the node TOML; ours)."""

    #: ``rtt``: probes sent, and each probe's timeout, seconds (one attempt each).
    rtt_probes: int = 3
    rtt_timeout_s: float = 1.0
    #: ``vjob show --wait`` without a timeout waits this long, seconds.
    vjob_wait_s: float = 300.0
    #: ``members``: nodes asked their host name at once (those that never told it).
    members_parallelism: int = 64
    #: Group whose members may command this node besides root and the daemon's user
    #: (checked with the caller's ``SO_PEERCRED``; the socket becomes 0660 with this
    #: group). "" (default): nobody else, socket 0600.
    group: str = ""
    #: The audit log of commands that change something (JSON lines, hash-chained,
    #: fsynced; ``dvms audit verify``). "" (default): ``<state_dir>/audit.log``.
    audit_log: str = ""

    def __post_init__(self) -> None:
        if self.rtt_probes < 1:
            raise ValueError("rtt_probes must be at least 1")
        if not (self.rtt_timeout_s > 0 and self.vjob_wait_s > 0):
            raise ValueError("rtt_timeout_s and vjob_wait_s must be > 0")
        if self.members_parallelism < 1:
            raise ValueError("members_parallelism must be at least 1")


def launch_from_map(
    args: dict[str, Any],
) -> tuple[tuple[LaunchVm, ...], tuple[WireConstraint, ...]]:
    try:
        vms = tuple(_launch_vm(d) for d in args.get("vms") or ())
        constraints = tuple(
            WireConstraint(**_fields(d, nested="groups")) for d in args.get("constraints") or ()
        )
        for v in vms:
            v.to_spec()  # validates names and sizes
            _fits_the_wire(v, f"vm {v.name}")
        for c in constraints:
            c.to_spec()
            _fits_the_wire(c, f"constraint {c.kind}")
    except (TypeError, AttributeError, SpecError, ValueError) as exc:
        raise ControlError(f"bad vjob: {exc}") from None
    if not vms:
        raise ControlError("bad vjob: no VMs")
    return vms, constraints


def _launch_vm(d: Any) -> LaunchVm:
    """A VM of a ``submit``: with ``ha``, the policy of its first generation (a user
    names no guardians; its host chooses them when it adopts the VM)."""
    fields = _fields(d)
    ha = fields.pop("ha", None)
    vm = LaunchVm(**fields)
    if ha is None:
        return vm
    own = ("guardians", "previous", "epoch")  # the host's, never the user's
    tag = HaTag(**{k: v for k, v in _fields(ha).items() if k not in own})
    return replace(vm, ha=replace(tag, generation=1))


def _fits_the_wire(item: LaunchVm | WireConstraint, what: str) -> None:
    """A VM or constraint the partition messages cannot carry (``vcpus`` above their
    limit, ...) is refused here, naming it: a peer would drop the message as malformed."""
    enc, dec = compile_record(type(item))
    try:
        dec(enc(item), "")
    except SchemaError as exc:
        where, _, why = str(exc).partition(": ")
        field = where.split(".")[1] if "." in where else where
        value = getattr(item, field, None)
        if isinstance(value, int) and why.startswith("integer "):  # "integer V outside [a, b]"
            why = f"= {value} is outside {why.rpartition(' outside ')[2]}, what peers accept"
        raise ValueError(f"{what}: {field} {why}") from None


def _fields(d: Any, nested: str = "") -> dict[str, Any]:
    """A CBOR map as dataclass fields: lists become tuples (field ``nested``: of tuples)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, list):
            v = tuple(tuple(g) for g in v) if k == nested else tuple(v)
        out[k] = v
    return out


class Daemon:
    """Answers control requests with the node's services. ``overlay`` and ``codec`` are
    only read (status, peers, rtt)."""

    def __init__(
        self,
        cfg: NodeConfig,
        *,
        started: float,
        overlay: OverlayCore,
        codec: WireCodec,
        partition: PartitionStatus,
        partitions: PartitionLog,
        monitor: HostMonitor,
        requests: Requester,
        peers: Peers,
        dht: Dht,
        vjobs: VjobService,
        namespaces: NamespaceService,
        host_side: HostSide,
        config: ControlConfig | None = None,
    ) -> None:
        self.cfg = cfg
        self.started = started
        self.overlay = overlay
        self.codec = codec
        self.partition = partition
        self.partition_log = partitions
        self.monitor = monitor
        self.requests = requests
        self.known_peers = peers
        self.dht = dht
        self.vjobs = vjobs
        self.namespaces = namespaces
        self.host_side = host_side
        self.config = config or ControlConfig()
        #: who may connect (``access.py``); raises ValueError for an unknown group
        self.access = ControlAccess(self.config.group)
        self.audit = audit.AuditLog(
            Path(self.config.audit_log) if self.config.audit_log else cfg.state_path / "audit.log"
        )
        self.audit_errors = 0
        #: the sizes of the node's bounded tables, shown by ``status`` (set by the daemon)
        self.bounds: Callable[[], dict[str, int]] | None = None
        #: awaited before each command: the node's due timers (``NodeRunner.due_timers``)
        self.before: Callable[[], Awaitable[None]] | None = None
        self.commands: dict[str, debugcmd.Handler] = {
            "status": self.status,
            "peers": self.peers,
            "members": self.members,
            "lookup": self.lookup,
            "submit": self.submit,
            "vjob_list": self.vjob_list,
            "vjob_show": self.vjob_show,
            "vjob_stop": self.vjob_stop,
            "vjob_remove": self.vjob_remove,
            "vm_info": self.vm_info,
            "vm_kill": self.vm_kill,
            "host": self.host,
            "partitions": self.partitions,
            "rtt": self.rtt,
            "ns": self.ns,
            "audit_show": self.audit_show,
        }
        self.commands.update(debugcmd.commands(self))

    async def handle(self, cmd: str, args: dict[str, Any], caller: Caller | None = None) -> Any:
        """Run ``cmd`` for ``caller``; a command that changes something
        (``audit.changes``) is written to the audit log, with its outcome, before the
        answer goes back (also when it fails or is cancelled); one that ends the node
        (``audit.BEFORE``) before it runs."""
        fn = self.commands.get(cmd)
        if fn is None:
            raise ControlError(f"unknown command {cmd!r}")
        if self.before is not None:
            await self.before()
        if not audit.changes(cmd, args):
            return await fn(args)
        if cmd in audit.BEFORE:
            await self._write_audit(cmd, args, caller, "requested")
            return await fn(args)
        outcome = "error: cancelled"
        try:
            result = await fn(args)
            outcome = _outcome(result)
            return result
        except ControlError as exc:
            outcome = f"error: {exc}"
            raise
        except Exception as exc:
            outcome = f"error: internal error: {exc!r}"
            raise
        finally:
            with trio.CancelScope(shield=True):
                await self._write_audit(cmd, args, caller, outcome)

    async def _write_audit(
        self, cmd: str, args: dict[str, Any], caller: Caller | None, outcome: str
    ) -> None:
        entry = {
            "uid": caller.uid if caller else None,
            "pid": caller.pid if caller else None,
            "cmd": cmd,
            "args": audit.summarize(args),
            "result": outcome,
        }
        try:  # fsync off the event loop
            await trio.to_thread.run_sync(self.audit.append, entry)
        except OSError as exc:
            self.audit_errors += 1
            log.error("cannot write the audit log %s: %s", self.audit.path, exc)

    async def audit_show(self, args: dict[str, Any]) -> dict[str, Any]:
        """The audit log's last ``count`` lines (default 20), and whether its chain holds
        (``verify``: the problems found, each naming a line)."""
        try:
            count = int(args.get("count", 20))
        except (TypeError, ValueError):
            raise ControlError("audit show: count must be a number") from None
        path = self.audit.path
        lines = await trio.to_thread.run_sync(audit.tail, path, max(count, 0))
        out: dict[str, Any] = {"path": str(path), "lines": lines}
        if args.get("verify"):
            n, problems = await trio.to_thread.run_sync(audit.verify, path)
            out.update(checked=n, problems=[str(p) for p in problems], ok=not problems)
        return out

    # -- the node itself ---------------------------------------------------------------

    async def status(self, args: dict[str, Any]) -> dict[str, Any]:
        core = self.overlay
        coord = core.coordinate()
        part = self.partition
        return {
            "name": self.cfg.name,
            "node_id": f"{core.node_id:040x}",
            "address": f"{core.contact.host}:{core.contact.port}",
            "joined": core.joined,
            "peers": len(core.table),
            "uptime_s": round(trio.current_time() - self.started, 1),
            "dropped": dict(self.codec.drops),
            # peers whose datagrams are signed with a key this node lacks: address -> key id
            "unknown_keys": {f"{a[0]}:{a[1]}": k.hex() for a, k in self.codec.unknown_keys.items()},
            "control": {**self.access.counts(), "audit_errors": self.audit_errors},
            "bounds": self.bounds() if self.bounds is not None else {},
            "accepted": self.codec.accepted,
            "stats": dict(core.stats),
            "vivaldi_error": round(coord.error, 4) if coord is not None else None,
            "hypervisor": self.monitor.uri,
            "vms": len(self.monitor.vms),
            "partition": "busy" if part.busy() else "free",
            "partition_stats": dict(part.stats),
            # namespace bridges this host has now (``ns bridge``), as NAMESPACE/BRIDGE
            "bridges": sorted(f"{ns}/{br}" for ns, br in self.host_side.networks),
        }

    async def peers(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        core = self.overlay
        now = trio.current_time()
        out = []
        for node_id, e in sorted(core.table.index.items()):
            predicted = core.predicted_rtt(node_id)
            out.append(
                {
                    "name": self.known_peers.host_name(node_id),
                    "node_id": f"{node_id:040x}",
                    "address": f"{e.contact.host}:{e.contact.port}",
                    "rtt_ms": round(e.srtt * 1000, 3) if e.srtt is not None else None,
                    "predicted_rtt_ms": round(predicted * 1000, 3) if predicted else None,
                    "failures": e.failures,
                    "last_seen_s": round(now - e.last_seen, 1),
                }
            )
        return out

    async def members(self, args: dict[str, Any]) -> dict[str, Any]:
        """The cluster's members as this node sees them, found by a crawl: ``alive``
        (answered), ``suspect`` (answered the crawl, but this node's own last RPCs to
        it failed; or found but not asked before the crawl's deadline), ``left`` (it
        told this node it stopped cleanly, and has not been heard from since),
        ``failed`` (a routing table names it, or it answered this node before, and it
        does not answer), ``clock_skew`` (heard from only in datagrams dropped because
        its clock is off by more than the replay window), ``unknown_key`` (an address
        whose datagrams are signed with a key this node lacks). With the
        Vivaldi-predicted RTT from this node and the peer's estimated clock offset."""
        peers, core = self.known_peers, self.overlay
        found = await peers.crawl()
        unnamed = [c for c in found.answered if peers.host_name(c.node_id) is None]
        limit = trio.CapacityLimiter(self.config.members_parallelism)

        async def ask_name(c: Contact) -> None:
            async with limit:
                await self.requests.request(c.addr, HostQuery(vms=False))

        async with trio.open_nursery() as nursery:
            for c in unnamed:
                nursery.start_soon(ask_name, c)
        me = core.node_id
        rows: dict[int, dict[str, Any]] = {}

        def row(c: Contact, state: str) -> None:
            rtt = core.rtt_to_coord(found.coords.get(c.node_id, ()))
            offset = core.clocks.offset(c.node_id)
            rows[c.node_id] = {
                "name": peers.host_name(c.node_id) or "",
                "address": f"{c.host}:{c.port}",
                "state": state,
                "rtt_ms": round(rtt * 1000, 3) if rtt is not None and c.node_id != me else None,
                # the peer's clock minus this node's, seconds (overlay/clock.py)
                "clock_offset_s": round(offset, 3) if offset is not None else None,
                "node_id": f"{c.node_id:040x}",
            }

        for c in found.answered:
            e = core.table.get(c.node_id)
            row(c, "suspect" if e is not None and e.failures else "alive")
        left = core.left
        for c in found.unfinished:
            row(c, "left" if c.node_id in left else "suspect")
        for c in found.failed:
            row(c, "left" if c.node_id in left else "failed")
        for node_id, c in peers.known().items():
            if node_id not in rows:
                row(c, "left" if node_id in left else "failed")
        for node_id, (c, _) in left.items():
            if node_id not in rows:
                row(c, "left")
        # addresses whose datagrams name a key this node lacks (docs/security.md): on the
        # member's row when one has that address, else a row of their own (such a node
        # cannot prove its id: a restarted member is often found at a new port)
        by_addr = {str(r["address"]): r for r in rows.values()}
        for (host, port), kid in self.codec.unknown_keys.items():
            addr = f"{host}:{port}"
            r = by_addr.get(addr)
            if r is None:
                r = rows[-len(rows) - 1] = {
                    "name": "",
                    "address": addr,
                    "state": "unknown_key",
                    "rtt_ms": None,
                    "clock_offset_s": None,
                    "node_id": "",
                }
            r["unknown_key"] = kid.hex()
        for node_id in self.codec.revoked:  # an operator revoked it (docs/security.md)
            if node_id in rows:
                rows[node_id]["state"] = "revoked"
        # peers heard only through datagrams dropped for their clock: no crawl finds them
        for node_id, offset in core.clocks.offsets().items():
            if node_id not in rows and abs(offset) > core.clocks.warn_s:
                rows[node_id] = {
                    "name": peers.host_name(node_id) or "",
                    "address": "",
                    "state": "clock_skew",
                    "rtt_ms": None,
                    "clock_offset_s": round(offset, 3),
                    "node_id": f"{node_id:040x}",
                }
        out = sorted(rows.values(), key=lambda r: natural_key(str(r["name"] or r["address"])))
        return {
            "members": out,
            "crawl": {
                "rpcs": found.rpcs,
                "duration_s": round(found.finished - found.started, 3),
                "timed_out": found.timed_out,
            },
        }

    async def lookup(self, args: dict[str, Any]) -> list[str]:
        bits = self.overlay.config.id_bits
        try:
            target = int(str(args.get("target", "")), 16)
        except ValueError:
            target = -1
        if not 0 <= target < 2**bits:
            raise ControlError(f"lookup needs 'target', a hex node id of at most {bits} bits")
        res = await self.dht.lookup(target)
        return [f"{c.node_id:040x}" for c in res.contacts]

    # -- VMs ---------------------------------------------------------------------------

    async def submit(self, args: dict[str, Any]) -> dict[str, Any]:
        """Accept a vjob (journaled, replicated in the DHT); with ``wait`` (default)
        return once it is placed or refused, else at once with its id."""
        vms, constraints = launch_from_map(args)
        name = str(args.get("name") or "")
        namespace = str(args.get("namespace") or "")
        try:
            accepted = await self.vjobs.submit(name, namespace, vms, constraints)
        except (StateError, NamesInUse) as exc:
            raise ControlError(f"vjob not accepted: {exc}") from None
        if not args.get("wait", True):
            return {"ok": True, **accepted}
        return _submit_result(await self.vjobs.wait(accepted["id"]))

    async def vjob_list(self, args: dict[str, Any]) -> dict[str, Any]:
        """Every vjob of the cluster: each node answers with the records it holds (a
        vjob record lives on the few nodes closest to its key); ``unreachable``: the
        nodes that did not answer, ``truncated``: whether a node held more vjobs than
        one reply carries."""
        rows, truncated, silent = await self.vjobs.gather()
        return {
            "vjobs": [asdict(r) for r in rows],
            "unreachable": sorted(self.known_peers.name_of(c) for c in silent),
            "truncated": truncated,
        }

    async def _vjob_id(self, args: dict[str, Any]) -> str:
        """The vjob ``args["id"]`` names: an id, a unique prefix of one, or a name."""
        try:
            return await self.vjobs.resolve(str(args.get("id", "")))
        except VjobRefused as exc:
            raise ControlError(str(exc)) from None
        except StateError as exc:
            raise ControlError(str(exc)) from None

    async def vjob_show(self, args: dict[str, Any]) -> dict[str, Any]:
        vjob_id = await self._vjob_id(args)
        try:
            rec = await self.vjobs.show(vjob_id)
        except KeyError:
            raise ControlError(f"no such vjob: {vjob_id}") from None
        except StateError as exc:
            raise ControlError(str(exc)) from None
        if args.get("wait") and rec.get("state") in ("accepted", "placing"):
            timeout = float(args.get("timeout", self.config.vjob_wait_s))
            rec = await self.vjobs.wait(vjob_id, timeout=timeout)
        out = _vjob_out(rec)
        out["fetches"] = []
        if rec.get("state") in ("accepted", "placing"):
            out["fetches"] = await self._fetches(rec)
        return out

    async def _fetches(self, rec: dict[str, Any]) -> list[dict[str, Any]]:
        """The vjob's VMs whose hosts wait for their files, with the progress."""
        vms = rec.get("body", {}).get("vms") or []
        keys = {(str(v.get("namespace", "")), str(v.get("name", ""))) for v in vms}
        replies, _ = await self.requests.gather(FetchesQuery())
        rows = [r for reply in replies if isinstance(reply, FetchesReply) for r in reply.rows]
        return [
            {
                "name": r.vm,
                "namespace": r.namespace,
                "host": r.host,
                "file": f"{r.field} file:{r.ref}",
                "root": r.root.hex(),
                "done_bytes": r.done,
                "total_bytes": r.total,
                "state": r.state,
            }
            for r in sorted(rows, key=lambda r: (r.namespace, r.vm, r.field))
            if (r.namespace, r.vm) in keys
        ]

    async def vjob_stop(self, args: dict[str, Any]) -> dict[str, Any]:
        """Kill a vjob's VMs wherever they run; the vjob stays listed as stopped."""
        vjob_id = await self._vjob_id(args)
        try:
            rec = await self.vjobs.stop(vjob_id)
        except KeyError:
            raise ControlError(f"no such vjob: {vjob_id}") from None
        except (VjobRefused, StateError) as exc:
            raise ControlError(str(exc)) from None
        return {**_vjob_out(rec), "killed": rec["killed"]}

    async def vjob_remove(self, args: dict[str, Any]) -> dict[str, Any]:
        """Forget a stopped or failed vjob."""
        vjob_id = await self._vjob_id(args)
        try:
            rec = await self.vjobs.remove(vjob_id)
        except KeyError:
            raise ControlError(f"no such vjob: {vjob_id}") from None
        except (VjobRefused, StateError) as exc:
            raise ControlError(str(exc)) from None
        return {"id": vjob_id, "name": rec.get("name", ""), "removed": True}

    async def _hosts(self, namespace: str | None) -> tuple[list[HostReply], list[str]]:
        replies, silent = await self.requests.gather(HostQuery(namespace))
        hosts = [r for r in replies if isinstance(r, HostReply)]
        hosts = sorted(await complete(self.requests, hosts, namespace), key=_by_name)
        return hosts, sorted(self.known_peers.name_of(c) for c in silent)

    async def vm_info(self, args: dict[str, Any]) -> dict[str, Any]:
        namespace = _namespace(args)
        restarts: list[HaRow] = []

        async def ask_guardians() -> None:
            # a node that does not answer is named by the host query already
            replies, _silent = await self.requests.gather(HaQuery(namespace))
            restarts.extend(row for r in replies if isinstance(r, HaReply) for row in r.rows)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask_guardians)
            hosts, silent = await self._hosts(namespace)
        rows = [
            {
                "name": v.name,
                "state": v.state.upper(),
                "host": h.name,
                "namespace": v.namespace,
                "vcpus": v.vcpus,
                "memory": v.memory_mib,
                # high availability (docs/ha.md): ok | fenced, "" without it
                "ha": v.ha,
                "generation": v.ha_generation,
            }
            for h in hosts
            for v in h.vms
        ]
        rows += restarting_rows(rows, restarts)
        rows.sort(key=lambda r: (str(r["namespace"]), natural_key(str(r["name"]))))
        truncated = [h.name for h in hosts if h.truncated]
        return {"vms": rows, "unreachable": silent, "truncated": truncated}

    async def host(self, args: dict[str, Any]) -> dict[str, Any]:
        hosts, silent = await self._hosts(None)
        rows = [
            {
                "name": h.name,
                "cpus": h.cpus,
                "memory": h.memory_mib,
                "vms": len(h.vms),
                "vcpus": sum(v.vcpus for v in h.vms),
                "memused": sum(v.memory_mib for v in h.vms),
                "uri": h.uri,
            }
            for h in hosts
        ]
        return {"hosts": rows, "unreachable": silent}

    async def vm_kill(self, args: dict[str, Any]) -> dict[str, Any]:
        try:
            names = tuple(expand(str(args.get("names", ""))))
        except RangeError as exc:
            raise ControlError(str(exc)) from None
        if not names:
            raise ControlError("vm kill needs VM names (a range: vm[1-2])")
        replies, silent = await self.requests.gather(KillVms(_namespace(args), names))
        killed = [(n, r.host) for r in replies if isinstance(r, Killed) for n in r.killed]
        errors = [e for r in replies if isinstance(r, Killed) for e in r.errors]
        found = {n for n, _ in killed}
        return {
            "killed": [{"name": n, "host": h} for n, h in sorted(killed)],
            "not_found": [n for n in names if n not in found],
            "errors": errors,
            "unreachable": sorted(self.known_peers.name_of(c) for c in silent),
        }

    async def ns(self, args: dict[str, Any]) -> dict[str, Any]:
        """One minimega command line (``namespace``, ``ns``, ``vm config|launch``, ...)."""
        words = args.get("words")
        if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
            raise ControlError("ns needs 'words', a list of strings")
        active = args.get("namespace", "minimega")
        if not is_valid_namespace_name(active):
            raise ControlError(f"invalid active namespace {active!r} (DVMS_NAMESPACE)")
        return await self.namespaces.execute(words, active)

    # -- partitions and network --------------------------------------------------------

    async def partitions(self, args: dict[str, Any]) -> dict[str, Any]:
        if args.get("all"):
            replies, silent = await self.requests.gather(PartitionsQuery())
            rows = [row for r in replies if isinstance(r, PartitionsReply) for row in r.rows]
            unreachable = sorted(self.known_peers.name_of(c) for c in silent)
        else:
            rows, unreachable = list(self.partition_log.rows(self.known_peers.name_of)), []
        out = []
        for r in merge_rows(rows):
            d = asdict(r)
            d["pid"] = f"{r.pid:016x}"
            out.append(d)
        return {"partitions": out, "unreachable": unreachable}

    async def rtt(self, args: dict[str, Any]) -> dict[str, Any]:
        target = str(args.get("host", ""))
        contact = self._resolve(target)
        if contact is None:
            # learn the peers' host names; a host known before that is silent now is down
            _, silent = await self.requests.gather(HostQuery(vms=False))
            contact = self._resolve(target)
            dead = next((c for c in silent if target in self._names(c)), None)
            if contact is None and dead is not None:
                raise ControlError(
                    f"host {target} ({dead.host}:{dead.port}) did not answer: it is down or "
                    "cut off from this node"
                )
        if contact is None:
            known = ", ".join(sorted(self.known_peers.hosts(), key=natural_key))
            raise ControlError(f"no such host: {target} (hosts: {known})")
        samples = []
        for _ in range(self.config.rtt_probes):
            t0 = trio.current_time()
            reply = await self.requests.request(
                contact.addr, HostQuery(vms=False), timeout=self.config.rtt_timeout_s, attempts=1
            )
            if reply is not None:
                samples.append(trio.current_time() - t0)
        if not samples:
            raise ControlError(
                f"host {self.known_peers.name_of(contact)} ({contact.host}:{contact.port}) did "
                f"not answer {self.config.rtt_probes} probes of {self.config.rtt_timeout_s:g} s: "
                "it is down or cut off from this node"
            )
        entry = self.overlay.table.index.get(contact.node_id)
        predicted = self.overlay.predicted_rtt(contact.node_id)
        return {
            "host": self.known_peers.name_of(contact),
            "address": f"{contact.host}:{contact.port}",
            "measured_ms": round(min(samples) * 1000, 3) if samples else None,
            "srtt_ms": round(entry.srtt * 1000, 3) if entry and entry.srtt is not None else None,
            "predicted_ms": round(predicted * 1000, 3) if predicted else None,
        }

    def _resolve(self, target: str) -> Contact | None:
        for c in self.known_peers.peer_contacts():
            if target in self._names(c):
                return c
        return None

    def _names(self, c: Contact) -> tuple[str | None, ...]:
        """What a user may call peer ``c``: its host name, address or node id."""
        return (self.known_peers.host_name(c.node_id), f"{c.host}:{c.port}", f"{c.node_id:040x}")


def _outcome(result: Any) -> str:
    """What the audit log says of a command that returned ``result``: ``ok``, or the
    refusal a result carries (``{"ok": false, "error"|"reason": ...}``)."""
    if isinstance(result, dict) and result.get("ok") is False:
        return f"error: {result.get('error') or result.get('reason') or 'refused'}"
    return "ok"


def _vjob_out(rec: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in rec.items() if k != "body"}
    out["placed"] = [{"name": n, "namespace": ns, "host": h} for n, ns, h in rec["placed"]]
    return out


def _submit_result(rec: dict[str, Any]) -> dict[str, Any]:
    ok = rec.get("state") == "done"
    return {
        "ok": ok,
        "id": rec.get("id"),
        "state": rec.get("state"),
        "reason": rec.get("reason", "") if not ok else "",
        "placed": [{"name": n, "namespace": ns, "host": h} for n, ns, h in rec.get("placed", [])],
        "partition_size": rec.get("partition_size", 0),
        "event_id": rec.get("event_id", ""),
        "duration_s": round(rec.get("updated", 0) - rec.get("submitted", 0), 3),
    }


def _namespace(args: dict[str, Any]) -> str | None:
    ns = args.get("namespace")
    return None if ns is None else str(ns)


def _by_name(h: HostReply) -> tuple[object, ...]:
    return natural_key(h.name)


def restarting_rows(rows: list[dict[str, Any]], restarts: list[HaRow]) -> list[dict[str, Any]]:
    """``vm info`` rows for the HA VMs that guardians are restarting (``restarting``) or
    gave up on (``failed``) and that no host runs at the restart's generation or a newer
    one yet: between a copy's end and its restarted copy's start no host runs the VM,
    and this row says so (``host`` empty, ``state`` as ``ha`` in capitals). One row per
    VM, the newest generation's (two guardians may both report one restart)."""
    running: dict[tuple[str, str], int] = {}
    for r in rows:
        if r["state"] == "RUNNING":  # adopted by its owner or about to be
            key = (str(r["namespace"]), str(r["name"]))
            running[key] = max(running.get(key, 0), int(r["generation"]))
    newest: dict[tuple[str, str], HaRow] = {}
    for row in restarts:
        key = (row.namespace, row.name)
        if running.get(key, -1) >= row.generation:
            continue  # the restarted copy runs and its owner renews: done
        seen = newest.get(key)
        if seen is None or (row.generation, row.state == "restarting") > (
            seen.generation,
            seen.state == "restarting",
        ):
            newest[key] = row
    return [
        {
            "name": row.name,
            "state": row.state.upper(),
            "host": "",
            "namespace": row.namespace,
            "vcpus": row.vcpus,
            "memory": row.memory_mib,
            "ha": row.state,
            "generation": row.generation,
        }
        for row in newest.values()
    ]
