"""The control commands a daemon answers (the CLI's ``--socket`` talks to these).

Every command is a coroutine taking the request's ``args`` map and returning a
CBOR-friendly result, or raising ``ControlError`` with the text the CLI prints.

Cluster-wide commands (``vm info``, ``vm kill``, ``host``, ``partitions --all``) ask every
peer in this node's routing table with a control-plane query (``node/messages.py``) and
answer locally too: on a local or LAN cluster the routing table holds every node (a
Kademlia bucket keeps k = 20 contacts per distance). Peers that do not answer within
3.5 s (0.5 s, doubled per retry, 3 attempts), and peers that answered once but have
left the routing table since, are listed as ``unreachable``; the command still succeeds
with what it got.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import trio

from dvms.hypervisor.net import Reconciler, open_net_backend
from dvms.partition.messages import LaunchVm, WireConstraint
from dvms.placement.spec import SpecError
from dvms.ranges import RangeError, expand, natural_key
from dvms.runtime.client import ControlError
from dvms.runtime.config import NodeConfig
from dvms.runtime.control import debug as debugcmd
from dvms.runtime.messages import HostQuery, HostReply, Killed, KillVms, PartitionsQuery
from dvms.runtime.node import NodeRunner
from dvms.runtime.services.hostside import HostSide
from dvms.runtime.services.namespaces import NamespaceService
from dvms.runtime.services.partition_log import merge_rows
from dvms.runtime.services.state import StateError
from dvms.runtime.services.vjobs import VjobService

__all__ = ["Daemon", "launch_from_map"]


def launch_from_map(
    args: dict[str, Any],
) -> tuple[tuple[LaunchVm, ...], tuple[WireConstraint, ...]]:
    try:
        vms = tuple(
            LaunchVm(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})
            for d in args.get("vms") or ()
        )
        constraints = tuple(
            WireConstraint(
                **{
                    k: (tuple(tuple(g) for g in v) if k == "groups" else tuple(v))
                    if isinstance(v, list)
                    else v
                    for k, v in d.items()
                }
            )
            for d in args.get("constraints") or ()
        )
        for v in vms:
            v.to_spec()  # validates names and sizes
        for c in constraints:
            c.to_spec()
    except (TypeError, AttributeError, SpecError, ValueError) as exc:
        raise ControlError(f"bad vjob: {exc}") from None
    if not vms:
        raise ControlError("bad vjob: no VMs")
    return vms, constraints


class Daemon:
    """Owns the node's services and answers control requests."""

    def __init__(
        self, cfg: NodeConfig, runner: NodeRunner, started: float, vjobs: VjobService
    ) -> None:
        self.cfg = cfg
        self.runner = runner
        self.started = started
        self.vjobs = vjobs
        self.commands = {
            "status": self.status,
            "peers": self.peers,
            "lookup": self.lookup,
            "submit": self.submit,
            "vjob_list": self.vjob_list,
            "vjob_show": self.vjob_show,
            "vm_info": self.vm_info,
            "vm_kill": self.vm_kill,
            "host": self.host,
            "partitions": self.partitions,
            "rtt": self.rtt,
            "ns": self.ns,
        }
        self.commands.update(debugcmd.commands(self))
        self.namespaces = NamespaceService(runner)
        net = Reconciler(open_net_backend(cfg.network_backend))
        self.host_side = HostSide(runner, self.namespaces, net)

    async def handle(self, cmd: str, args: dict[str, Any]) -> Any:
        fn = self.commands.get(cmd)
        if fn is None:
            raise ControlError(f"unknown command {cmd!r}")
        return await fn(args)

    # -- the node itself ---------------------------------------------------------------

    async def status(self, args: dict[str, Any]) -> dict[str, Any]:
        runner = self.runner
        core = runner.core
        coord = core.coordinate()
        part = runner.partition
        return {
            "name": self.cfg.name,
            "node_id": f"{core.node_id:040x}",
            "address": f"{core.contact.host}:{core.contact.port}",
            "joined": core.joined,
            "peers": len(core.table),
            "uptime_s": round(trio.current_time() - self.started, 1),
            "dropped": dict(runner.codec.drops),
            "accepted": runner.codec.accepted,
            "stats": dict(core.stats),
            "vivaldi_error": round(coord.error, 4) if coord is not None else None,
            "hypervisor": runner.monitor.uri,
            "vms": len(runner.monitor.vms),
            "partition": "busy" if part.busy() else "free",
            "partition_stats": dict(part.stats),
            # namespace bridges this host has now (``ns bridge``), as NAMESPACE/BRIDGE
            "bridges": sorted(f"{ns}/{br}" for ns, br in self.host_side.networks),
        }

    async def peers(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        core = self.runner.core
        now = trio.current_time()
        out = []
        for node_id, e in sorted(core.table.index.items()):
            predicted = core.predicted_rtt(node_id)
            out.append(
                {
                    "name": self.runner.names.get(node_id),
                    "node_id": f"{node_id:040x}",
                    "address": f"{e.contact.host}:{e.contact.port}",
                    "rtt_ms": round(e.srtt * 1000, 3) if e.srtt is not None else None,
                    "predicted_rtt_ms": round(predicted * 1000, 3) if predicted else None,
                    "failures": e.failures,
                    "last_seen_s": round(now - e.last_seen, 1),
                }
            )
        return out

    async def lookup(self, args: dict[str, Any]) -> list[str]:
        try:
            target = int(str(args.get("target", "")), 16)
        except ValueError:
            raise ControlError("lookup needs 'target', a hex node id") from None
        res = await self.runner.lookup(target)
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
        except StateError as exc:
            raise ControlError(f"vjob not accepted: {exc}") from None
        if not args.get("wait", True):
            return {"ok": True, **accepted}
        return _submit_result(await self.vjobs.wait(accepted["id"]))

    async def vjob_list(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        """Every vjob of the cluster: each node answers with the records it holds (a
        vjob record lives on the few nodes closest to its key)."""
        rows, _truncated = await self.vjobs.gather()
        return [asdict(r) for r in rows]

    async def vjob_show(self, args: dict[str, Any]) -> dict[str, Any]:
        vjob_id = str(args.get("id", ""))
        try:
            rec = await self.vjobs.show(vjob_id)
        except KeyError:
            raise ControlError(f"no such vjob: {vjob_id}") from None
        except StateError as exc:
            raise ControlError(str(exc)) from None
        if args.get("wait") and rec.get("state") in ("accepted", "placing"):
            rec = await self.vjobs.wait(vjob_id, timeout=float(args.get("timeout", 300.0)))
        out = {k: v for k, v in rec.items() if k != "body"}
        out["placed"] = [{"name": n, "namespace": ns, "host": h} for n, ns, h in rec["placed"]]
        return out

    async def _hosts(self, namespace: str | None) -> tuple[list[HostReply], list[str]]:
        replies, silent = await self.runner.gather(HostQuery(namespace))
        hosts = sorted((r for r in replies if isinstance(r, HostReply)), key=_by_name)
        return hosts, sorted(self.runner.name_of(c) for c in silent)

    async def vm_info(self, args: dict[str, Any]) -> dict[str, Any]:
        hosts, silent = await self._hosts(_namespace(args))
        rows = [
            {
                "name": v.name,
                "state": v.state.upper(),
                "host": h.name,
                "namespace": v.namespace,
                "vcpus": v.vcpus,
                "memory": v.memory_mib,
            }
            for h in hosts
            for v in h.vms
        ]
        rows.sort(key=lambda r: (r["namespace"], natural_key(r["name"])))
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
        replies, silent = await self.runner.gather(KillVms(_namespace(args), names))
        killed = [(n, r.host) for r in replies if isinstance(r, Killed) for n in r.killed]
        errors = [e for r in replies if isinstance(r, Killed) for e in r.errors]
        found = {n for n, _ in killed}
        return {
            "killed": [{"name": n, "host": h} for n, h in sorted(killed)],
            "not_found": [n for n in names if n not in found],
            "errors": errors,
            "unreachable": sorted(self.runner.name_of(c) for c in silent),
        }

    async def ns(self, args: dict[str, Any]) -> dict[str, Any]:
        """One minimega command line (``namespace``, ``ns``, ``vm config|launch``, ...)."""
        words = args.get("words")
        if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
            raise ControlError("ns needs 'words', a list of strings")
        return await self.namespaces.execute(words)

    # -- partitions and network --------------------------------------------------------

    async def partitions(self, args: dict[str, Any]) -> dict[str, Any]:
        if args.get("all"):
            replies, silent = await self.runner.gather(PartitionsQuery())
            rows = [row for r in replies for row in r.rows]
            unreachable = sorted(self.runner.name_of(c) for c in silent)
        else:
            rows, unreachable = list(self.runner.partitions.rows(self.runner.name_of)), []
        out = []
        for r in merge_rows(rows):
            d = asdict(r)
            d["pid"] = f"{r.pid:016x}"
            out.append(d)
        return {"partitions": out, "unreachable": unreachable}

    async def rtt(self, args: dict[str, Any]) -> dict[str, Any]:
        target = str(args.get("host", ""))
        runner = self.runner
        contact = self._resolve(target)
        if contact is None:
            await runner.gather(HostQuery(vms=False))  # learn the peers' host names
            contact = self._resolve(target)
        if contact is None:
            raise ControlError(f"no such host: {target}")
        samples = []
        for _ in range(3):
            t0 = trio.current_time()
            reply = await runner.request(
                contact.addr, HostQuery(vms=False), timeout=1.0, attempts=1
            )
            if reply is not None:
                samples.append(trio.current_time() - t0)
        entry = runner.core.table.index.get(contact.node_id)
        predicted = runner.core.predicted_rtt(contact.node_id)
        return {
            "host": runner.name_of(contact),
            "address": f"{contact.host}:{contact.port}",
            "measured_ms": round(min(samples) * 1000, 3) if samples else None,
            "srtt_ms": round(entry.srtt * 1000, 3) if entry and entry.srtt is not None else None,
            "predicted_ms": round(predicted * 1000, 3) if predicted else None,
        }

    def _resolve(self, target: str):
        for c in self.runner.peer_contacts():
            if target in (
                self.runner.names.get(c.node_id),
                f"{c.host}:{c.port}",
                f"{c.node_id:040x}",
            ):
                return c
        return None


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
