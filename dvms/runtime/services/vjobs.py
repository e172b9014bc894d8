"""Vjobs that survive their entry node: a local journal and a replicated DHT record.

``submit`` to any node::

    validate --> journal "accepted" (fsync) --> record vjob/ID (state accepted, owner:
    this node) written at its arbiter and replicated --> reply {id} --> partition launch
    --> record state done|failed (+ where each VM runs) --> journal "done"

A restart of the entry node (even after kill -9) replays its journal: every vjob
accepted and not done is resumed, unless another node took it over meanwhile.

If the entry node dies for good, the vjob's **keeper** finishes it: the live node whose
id is closest to the record's key (the record's arbiter, ``services/state.py``). Every node
looks at the unfinished vjob records it replicates every ``keeper_period_s``; the one
that is the keeper asks the owner (``HostQuery``, ``owner_attempts`` tries); if the
owner does not answer, the keeper makes itself the owner with a compare-and-swap (so
two nodes cannot both take over) and resumes the vjob.

Resuming launches only the VMs of the vjob that run nowhere (the hosts are asked), so a
vjob whose VMs were created just before its owner died is not created twice. A
constraint over VMs some of which already run is kept for the missing ones, plus for
``spread``: the missing VMs are banned from the hosts the running ones use.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import trio

from dvms.overlay.messages import Contact
from dvms.overlay.records import Record, key_of
from dvms.partition.directory import CLAIMED, HOSTED, location_of, record_name
from dvms.partition.messages import LaunchVm, WireConstraint
from dvms.runtime.capabilities import (
    Dht,
    Handlers,
    Launcher,
    NamespaceBook,
    Peers,
    Requester,
    Spawn,
    StateStore,
    VmDirectory,
)
from dvms.runtime.messages import (
    MAX_ROWS,
    HostQuery,
    HostReply,
    Killed,
    KillVms,
    VjobRow,
    VjobsQuery,
    VjobsReply,
)
from dvms.runtime.services.hostpages import complete
from dvms.runtime.services.state import UNCHANGED, StateError, inline_value, is_deleted
from dvms.runtime.services.vmnames import ClaimRefused, NameClaims

__all__ = ["NamesInUse", "VjobConfig", "VjobRefused", "VjobService", "vjob_record"]

log = logging.getLogger("dvms.runtime.services.vjobs")

#: states of a vjob record (``stopped``: ``vjob stop`` killed its VMs)
ACCEPTED, PLACING, DONE, FAILED, STOPPED = "accepted", "placing", "done", "failed", "stopped"
UNFINISHED = (ACCEPTED, PLACING)
#: states ``vjob remove`` forgets (the vjob has no VMs of its own)
REMOVABLE = (FAILED, STOPPED)
#: How a launch refused on its names starts (``PartitionCore``, before any partition):
#: those VMs are someone else's, a refused vjob must not remove them.
NAME_TAKEN = "VM name already in use"


class NamesInUse(Exception):
    """A vjob names VMs its namespace already holds or queues; nothing was accepted."""


class VjobRefused(Exception):
    """``vjob show|stop|remove`` cannot do what was asked; the message says why."""


def vjob_record(vjob_id: str) -> str:
    return f"vjob/{vjob_id}"


@dataclass(frozen=True, slots=True)
class VjobConfig:
    #: How often a node looks for unfinished vjobs it is the keeper of, seconds (each
    #: pass after a uniform [0.5, 1.5) times this, so that keepers do not pace together).
    keeper_period_s: float = 2.0
    #: First timeout of a ``HostQuery`` to an owner, seconds (doubled per attempt).
    owner_timeout_s: float = 0.5
    #: Tries (``owner_timeout_s``, then doubled) to reach an owner before taking its vjob
    #: over: with 5, an owner silent for 15.5 s is considered dead. (3 = 3.5 s took over
    #: vjobs of entry nodes that were only busy, on 16 daemons sharing 2 cores.)
    owner_attempts: int = 5
    #: Launch events per vjob before it is refused: a refused launch that left some of
    #: its VMs created is followed by one for the rest; a vjob still incomplete after
    #: this many is rolled back (its created VMs removed) and refused.
    launch_rounds: int = 3
    #: Finished vjobs kept in ``vjob list``.
    keep_finished: int = 1_000
    #: Longest ``vjob wait``, seconds.
    wait_timeout_s: float = 600.0
    #: ``vjob wait`` on a vjob another node owns reads its record this often, seconds.
    wait_poll_s: float = 0.25
    #: A VM name claim whose vjob record does not exist this long after the claim is
    #: stale (its submit died between the two writes), seconds (``vmnames.py``).
    claim_grace_s: float = 30.0


class Journal:
    """Append-only JSON lines in the state directory, fsynced at every entry."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, entry: dict[str, Any]) -> None:
        line = json.dumps(entry, sort_keys=True, separators=(",", ":")) + "\n"
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                line = "\n" + line  # a crash cut the last line: do not glue onto it
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    def pending(self) -> dict[str, dict[str, Any]]:
        """Accepted vjobs with no ``done`` entry (a torn last line is ignored)."""
        out: dict[str, dict[str, Any]] = {}
        if not self.path.exists():
            return out
        for line in self.path.read_text().splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                log.warning("journal %s: skipping a torn line", self.path)
                continue
            if entry.get("event") == "accepted":
                out[entry["id"]] = entry
            elif entry.get("event") == "done":
                out.pop(entry.get("id"), None)
        return out


class VjobService:
    def __init__(
        self,
        state_dir: Path,
        *,
        host_name: str,
        state: StateStore,
        requests: Requester,
        peers: Peers,
        dht: Dht,
        launcher: Launcher,
        directory: VmDirectory,
        spawn: Spawn,
        handlers: Handlers,
        rng: random.Random,
        config: VjobConfig | None = None,
    ) -> None:
        """``host_name``: this node's, as vjob records name owners; ``rng`` draws vjob
        ids and the keeper's pace."""
        self.host_name = host_name
        self.state = state
        self.requests = requests
        self.peers = peers
        self.dht = dht
        self.launcher = launcher
        self.directory = directory
        self.spawn = spawn
        self.config = config or VjobConfig()
        self.journal = Journal(state_dir / "vjobs.journal")
        self._rng = rng
        #: vjob id -> the latest record value this node wrote or saw
        self.known: dict[str, dict[str, Any]] = {}
        self._finished: dict[str, trio.Event] = {}
        self._active: set[str] = set()
        #: The namespaces' VM tables (set by the daemon's composition): a vjob's VMs
        #: join their namespace's table, and names it holds are refused.
        self.namespaces: NamespaceBook | None = None
        #: called with a vjob's record each time this node changes its state (accepted,
        #: done, failed, stopped; "removed" once forgotten): the event stream and the
        #: metrics
        self.listeners: list[Callable[[dict[str, Any]], None]] = []
        #: VM names claimed atomically at submit (``vmnames.py``)
        self.claims = NameClaims(state, self._claim_alive)
        handlers.register(VjobsQuery, self._answer_rows)

    # -- service -----------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Resume what the journal holds, then look after orphaned vjobs forever."""
        task_status.started()
        for vjob_id, entry in sorted(self.journal.pending().items()):
            self.spawn(self._resume_own, vjob_id, entry)
        while True:
            await trio.sleep(self.config.keeper_period_s * (0.5 + self._rng.random()))
            try:
                await self._keeper_pass()
            except StateError as exc:
                log.info("vjob keeper: %s", exc)

    # -- submit ------------------------------------------------------------------------

    async def submit(
        self,
        name: str,
        namespace: str,
        vms: tuple[LaunchVm, ...],
        constraints: tuple[WireConstraint, ...],
    ) -> dict[str, Any]:
        """Accept a vjob: journaled and replicated before this returns its id. Raises
        ``NamesInUse`` if its namespace holds or queues some of its VM names."""
        if namespace and self.namespaces is not None:
            used = await self.namespaces.names_in_use(namespace, [v.name for v in vms])
            if used:
                raise NamesInUse(
                    f"namespace {namespace} already has VM{'s' if len(used) > 1 else ''} "
                    f"{', '.join(used)} (`dvms namespace {namespace} vm info`)"
                )
        vjob_id = f"{self._rng.getrandbits(64):016x}"
        try:
            await self.claims.claim(namespace, [v.name for v in vms], vjob_id, self.host_name)
        except ClaimRefused as exc:
            raise NamesInUse(str(exc)) from None
        body = {
            "vms": [asdict(v) for v in vms],
            "constraints": [asdict(c) for c in constraints],
        }
        self.journal.append(
            {
                "event": "accepted",
                "id": vjob_id,
                "name": name,
                "namespace": namespace,
                "body": body,
                "at": time.time(),
            }
        )
        contact = self.peers.contact
        record: dict[str, Any] = {
            "id": vjob_id,
            "name": name,
            "namespace": namespace,
            "state": ACCEPTED,
            "owner": self._owner_of(contact),
            "submitted": time.time(),
            "updated": time.time(),
            "reason": "",
            "placed": [],
            "vms": len(vms),
            "body": body,
            "history": [f"accepted by {self.host_name}"],
        }
        # a fresh random id: version 0, no read first (a clash fails the write)
        try:
            if not await self.state.write(vjob_record(vjob_id), record, 0) and not (
                await self._written(vjob_id, record)
            ):
                raise StateError(f"vjob id {vjob_id} already in use")
        except StateError:
            # not acknowledged: a restart must not resume it
            self.journal.append({"event": "done", "id": vjob_id, "ok": None, "at": time.time()})
            raise
        self.known[vjob_id] = record
        self._finished[vjob_id] = trio.Event()
        self._active.add(vjob_id)
        self._changed(record)
        self.spawn(self._place, vjob_id, record, False)
        return {"id": vjob_id, "state": ACCEPTED, "vms": len(vms)}

    async def _written(self, vjob_id: str, record: dict[str, Any]) -> bool:
        """Whether the record of ``vjob_id`` is ``record``: a write whose answer was lost
        or late (the arbiter failed over) may have landed all the same."""
        cur = (await self.state.read(vjob_record(vjob_id))).value
        return (
            isinstance(cur, dict)
            and cur.get("submitted") == record["submitted"]
            and cur.get("owner") == record["owner"]
        )

    async def _claim_alive(self, namespace: str, name: str, claim: dict[str, Any]) -> bool:
        """Whether the vjob of a VM name ``claim`` still holds the name (``vmnames.py``)."""
        cur = await self.state.read(vjob_record(str(claim.get("vjob", ""))))
        rec = cur.value
        if not isinstance(rec, dict):  # never written (yet?), or removed
            at = claim.get("at")
            young = isinstance(at, int | float) and time.time() - at < self.config.claim_grace_s
            return cur.seq == 0 and young
        if rec.get("state") in UNFINISHED:
            return True
        if rec.get("state") != DONE:
            return False
        loc = location_of(await self.dht.get(record_name(namespace, name)))
        return loc is not None and loc.live()

    async def wait(self, vjob_id: str, timeout: float | None = None) -> dict[str, Any]:
        """The record once the vjob is done or failed (polls the DHT when another node
        owns it)."""
        limit = timeout if timeout is not None else self.config.wait_timeout_s
        with trio.move_on_after(limit):
            while True:
                event = self._finished.get(vjob_id)
                if event is not None:
                    await event.wait()
                    return self.known[vjob_id]
                rec = await self.show(vjob_id)
                if rec["state"] not in UNFINISHED:
                    return rec
                await trio.sleep(self.config.wait_poll_s)
        return await self.show(vjob_id)

    async def _answer_rows(self, _msg: VjobsQuery) -> VjobsReply:
        return self.rows()

    def rows(self) -> VjobsReply:
        """``vjob list``'s part from this node (answered to ``VjobsQuery``)."""
        rows = [_row(v) for v in self.held()]
        rows.sort(key=lambda r: r.updated)
        return VjobsReply(tuple(rows[-MAX_ROWS:]), len(rows) > MAX_ROWS)

    async def gather(self) -> tuple[list[VjobRow], bool, list[Contact]]:
        """Every vjob any node holds a record of (the newest copy of each); whether
        some node had more than one reply carries; the nodes that did not answer."""
        replies, silent = await self.requests.gather(VjobsQuery())
        best: dict[str, VjobRow] = {}
        truncated = False
        for reply in replies:
            if not isinstance(reply, VjobsReply):
                continue
            truncated |= reply.truncated
            for row in reply.rows:
                held = best.get(row.id)
                if held is None or row.updated > held.updated:
                    best[row.id] = row
        return sorted(best.values(), key=lambda r: r.updated), truncated, silent

    async def show(self, vjob_id: str) -> dict[str, Any]:
        cur = await self.state.read(vjob_record(vjob_id))
        if cur.value is None:
            raise KeyError(vjob_id)
        return cur.value

    async def resolve(self, ref: str) -> str:
        """The id of the vjob ``ref`` names: its id, a unique prefix of it, or its name
        (``VjobRefused`` when none or several match, listing them)."""
        if not ref:
            raise VjobRefused("name a vjob: its id, a unique prefix of it, or its name")
        rows, _, _ = await self.gather()
        ids = {r.id for r in rows}
        if ref in ids:
            return ref
        matches = [r for r in rows if r.id.startswith(ref) or r.name == ref]
        if len(matches) == 1:
            return matches[0].id
        if not matches:
            try:  # a vjob held only by nodes that did not answer
                await self.show(ref)
            except KeyError:
                raise VjobRefused(f"no such vjob: {ref} (dvms vjob list)") from None
            return ref
        listed = ", ".join(f"{r.id} ({r.name}, {r.state})" for r in matches[:10])
        more = f" and {len(matches) - 10} more" if len(matches) > 10 else ""
        raise VjobRefused(f"{ref} names {len(matches)} vjobs: {listed}{more}; give more of the id")

    async def stop(self, vjob_id: str) -> dict[str, Any]:
        """Kill the VMs a finished vjob placed (wherever they run now) and mark it
        ``stopped``; a vjob still being placed is refused (stop it once it ends)."""
        rec = await self.show(vjob_id)
        if rec.get("state") in UNFINISHED:
            raise VjobRefused(
                f"vjob {vjob_id} ({rec.get('name')}) is still being placed; stop it once it "
                f"is done or failed (dvms vjob show {vjob_id} --wait)"
            )
        placed = [list(p) for p in rec.get("placed", [])]
        killed = await self._kill(placed)
        me = self.host_name

        def mark(cur: Any) -> tuple[Any, None]:
            if cur is None:
                return UNCHANGED, None
            note = f"stopped on {me}: {len(killed)} of {len(placed)} VMs killed"
            history = [*cur.get("history", []), note]
            return {**cur, "state": STOPPED, "updated": time.time(), "history": history}, None

        value, _ = await self.state.update(vjob_record(vjob_id), mark)
        if value is None:
            raise KeyError(vjob_id)
        self.known[vjob_id] = value
        self._changed({**value, "reason": f"{len(killed)} of {len(placed)} VMs killed"})
        return {**value, "killed": sorted(killed)}

    async def remove(self, vjob_id: str) -> dict[str, Any]:
        """Forget a stopped or failed vjob: its record is deleted cluster-wide."""
        cur = await self.state.read(vjob_record(vjob_id))
        if cur.value is None:
            raise KeyError(vjob_id)
        state = cur.value.get("state")
        if state not in REMOVABLE:
            hint = "dvms vjob stop first" if state == DONE else "wait until it is done or failed"
            raise VjobRefused(
                f"vjob {vjob_id} ({cur.value.get('name')}) is {state}: only a stopped or "
                f"failed vjob is removed ({hint})"
            )
        if not await self.state.write(vjob_record(vjob_id), None, cur.seq):
            raise VjobRefused(f"vjob {vjob_id} changed meanwhile; try again")
        self.known.pop(vjob_id, None)
        self._finished.pop(vjob_id, None)
        self._changed({**cur.value, "state": "removed", "reason": f"was {state}"})
        return cur.value

    async def _kill(self, placed: list[list[str]]) -> list[str]:
        """Destroy ``placed`` ([name, namespace, host]) wherever they run; the keys of
        those killed."""
        by_ns: dict[str, list[str]] = {}
        for name, namespace, _host in placed:
            by_ns.setdefault(namespace, []).append(name)
        killed = []
        for namespace, names in sorted(by_ns.items()):
            replies, _ = await self.requests.gather(KillVms(namespace, tuple(sorted(names))))
            killed += [_key(namespace, n) for r in replies if isinstance(r, Killed)
                       for n in r.killed]  # fmt: skip
        return killed

    def held(self) -> list[dict[str, Any]]:
        """Vjobs whose record this node holds (a replica, on a cluster of up to k = 20
        nodes every node holds every record) and those it submitted."""
        rows: dict[str, dict[str, Any]] = {}
        deleted = set()
        for rec in self.dht.store.records("vjob/", trio.current_time()):
            if is_deleted(rec):
                deleted.add(rec.name.removeprefix("vjob/"))
            value = self._decode_local(rec)
            if value is not None:
                rows[rec.name.removeprefix("vjob/")] = value
        for vjob_id, value in self.known.items():
            if vjob_id not in deleted:  # removed (vjob remove) on another node
                rows.setdefault(vjob_id, value)
        return sorted(rows.values(), key=lambda r: r.get("submitted", 0))

    def _decode_local(self, rec: Record) -> dict[str, Any] | None:
        """The value of a head held here, when it is inline (else None: its chunks
        would have to be fetched)."""
        value = inline_value(rec)
        return value if isinstance(value, dict) else None

    # -- placing -----------------------------------------------------------------------

    async def _place(
        self, vjob_id: str, record: dict[str, Any], resume: bool, previous: str = ""
    ) -> None:
        """Launch the vjob's VMs. ``resume``: some may exist already (the previous owner,
        node id ``previous`` in hex, may have placed them before it died)."""
        from dvms.runtime.control.commands import launch_from_map

        try:
            vms, constraints = launch_from_map(record["body"])
        except Exception as exc:  # a record we cannot read: fail it, loudly
            await self._finish(vjob_id, False, f"unreadable vjob: {exc}", [], {})
            return
        placed: list[list[str]] = []
        every = vms
        if resume:
            try:
                running = await self._running(vms, previous, record.get("previous_owner"))
            except _OwnerAlive:
                await self._give_back(vjob_id, record)
                return
            placed = [[v.name, v.namespace, running[(v.namespace, v.name)]] for v in vms
                      if (v.namespace, v.name) in running]  # fmt: skip
            vms, constraints = _missing(vms, constraints, running)
        extra: dict[str, Any] = {"partition_size": 0}
        _, all_constraints = launch_from_map(record["body"])
        ok, reason = True, ""
        for attempt in range(self.config.launch_rounds):
            if not vms:
                ok, reason = True, ""
                break
            done = await self.launcher.launch(vms, constraints)
            extra = {"partition_size": done.partition_size, "event_id": f"{done.event_id:x}"}
            ok, reason = done.ok, done.reason
            if ok:
                placed += [[p.vm, p.namespace, p.host] for p in done.placed]
                break
            if not resume and reason.startswith(NAME_TAKEN):
                break  # the names belong to other VMs: nothing of ours to finish
            # Refused. Maybe some VMs were created all the same (a partition that lost a
            # member half-way), or another launch of this vjob placed them (the one we
            # took over): look, and launch what runs nowhere, or give up cleanly.
            found = await self._running(every, "", None)
            placed = [[v.name, v.namespace, found[(v.namespace, v.name)]] for v in every
                      if (v.namespace, v.name) in found]  # fmt: skip
            if len(found) == len(every):
                ok, reason = True, ""
                break
            if not found:
                break  # a clean refusal: nothing to finish or roll back
            vms, constraints = _missing(every, all_constraints, found)
            log.info("vjob %s: %d VMs placed, %d left, round %d: %s", vjob_id, len(found),
                     len(vms), attempt + 2, reason)  # fmt: skip
        if not ok and placed:
            # all or nothing: remove what this vjob created so far
            await self._roll_back(placed)
            reason = f"{reason} (rolled back {len(placed)} VMs created meanwhile)"
            placed = []
        if ok:
            await self._adopt(every, placed)
        await self._finish(vjob_id, ok, reason, placed, extra)

    async def _adopt(self, vms: tuple[LaunchVm, ...], placed: list[list[str]]) -> None:
        """The placed VMs join their namespace's table (``namespace NS vm info``)."""
        if self.namespaces is None:
            return
        spec = {(v.namespace, v.name): v for v in vms}
        by_ns: dict[str, list[tuple[LaunchVm, str]]] = {}
        for name, namespace, host in placed:
            if namespace and (namespace, name) in spec:
                by_ns.setdefault(namespace, []).append((spec[(namespace, name)], host))
        for namespace, rows in sorted(by_ns.items()):
            try:
                await self.namespaces.adopt(namespace, rows)
            except StateError as exc:  # the next namespace command adopts them from the hosts
                log.warning("namespace %s: placed VMs not recorded yet: %s", namespace, exc)

    async def _roll_back(self, placed: list[list[str]]) -> None:
        by_ns: dict[str, list[str]] = {}
        for name, namespace, _host in placed:
            by_ns.setdefault(namespace, []).append(name)
        for namespace, names in by_ns.items():
            await self.requests.gather(KillVms(namespace, tuple(sorted(names))))

    async def _running(
        self, vms: tuple[LaunchVm, ...], previous: str, owner: dict[str, Any] | None
    ) -> dict[tuple[str, str], str]:
        """Where the vjob's VMs already are: on a live host (asked), or on a host that is
        down by now (the DHT directory says hosted: they were placed, and went down with
        their host). A name the previous owner (node id ``previous``, hex) claimed and
        never used is freed, once that owner is found silent again (if it answers, its
        launch is alive: ``_OwnerAlive``)."""
        claimer = int(previous, 16) if previous else -1
        checked = False
        wanted = {(v.namespace, v.name) for v in vms}
        replies, _ = await self.requests.gather(HostQuery(None))
        hosts = [h for h in replies if isinstance(h, HostReply)]
        found = {
            (row.namespace, row.name): h.name
            for h in await complete(self.requests, hosts, None)
            for row in h.vms
            if (row.namespace, row.name) in wanted
        }
        for ns, name in sorted(wanted - set(found)):
            loc = location_of(await self.dht.get(record_name(ns, name)))
            if loc is None:
                continue
            if loc.state == HOSTED:
                found[(ns, name)] = loc.host
            elif loc.state == CLAIMED and loc.node_id == claimer:
                if not checked and owner is not None and await self._alive(owner):
                    raise _OwnerAlive
                checked = True
                await self.directory.free_claim(ns, name, claimer)
        return found

    async def _give_back(self, vjob_id: str, record: dict[str, Any]) -> None:
        """We took over a vjob whose owner turns out alive: hand it back."""
        me = self._owner_of(self.peers.contact)
        previous = record.get("previous_owner")

        def undo(cur: Any) -> tuple[Any, None]:
            if cur is None or cur.get("owner", {}).get("id") != me["id"] or not previous:
                return UNCHANGED, None
            note = f"given back to {previous.get('name')} (it answers again)"
            return {**cur, "owner": previous, "history": [*cur.get("history", []), note]}, None

        value, _ = await self.state.update(vjob_record(vjob_id), undo)
        self.known[vjob_id] = value
        self._active.discard(vjob_id)

    async def _finish(
        self,
        vjob_id: str,
        ok: bool,
        reason: str,
        placed: list[list[str]],
        extra: dict[str, Any] | None = None,
    ) -> None:
        me = self.host_name

        def close(cur: Any) -> tuple[Any, None]:
            if cur is None:
                return UNCHANGED, None
            if cur.get("owner", {}).get("id") != self._owner_of(self.peers.contact)["id"]:
                return UNCHANGED, None  # taken over meanwhile: the new owner reports
            new = dict(cur)
            new.update(extra or {})
            new.update(
                state=DONE if ok else FAILED,
                reason=reason,
                placed=sorted(placed),
                updated=time.time(),
                history=[*cur.get("history", []), f"{'done' if ok else 'failed'} on {me}"],
            )
            return new, None

        try:
            value, _ = await self.state.update(vjob_record(vjob_id), close)
        except StateError as exc:
            log.warning("vjob %s finished but its record was not updated: %s", vjob_id, exc)
            value = {**self.known.get(vjob_id, {}), "state": DONE if ok else FAILED,
                     "reason": reason, "placed": sorted(placed)}  # fmt: skip
        if value is not None:
            self.known[vjob_id] = value
            self._changed(value)
        self.journal.append({"event": "done", "id": vjob_id, "ok": ok, "at": time.time()})
        self._active.discard(vjob_id)
        self._finished.setdefault(vjob_id, trio.Event()).set()
        self._trim()

    def _changed(self, record: dict[str, Any]) -> None:
        for listener in self.listeners:
            listener(record)

    def pending_vms(self) -> int:
        """VMs of the vjobs this node is placing now."""
        return sum(int(self.known.get(i, {}).get("vms", 0)) for i in self._active)

    def _trim(self) -> None:
        done = [i for i, v in self.known.items() if v.get("state") not in UNFINISHED]
        for vjob_id in done[: max(0, len(done) - self.config.keep_finished)]:
            self.known.pop(vjob_id, None)
            self._finished.pop(vjob_id, None)

    # -- recovery ----------------------------------------------------------------------

    async def _resume_own(self, vjob_id: str, entry: dict[str, Any]) -> None:
        """After a restart: the journal says we accepted ``vjob_id`` and did not finish."""
        await self.launcher.wait_joined()
        me = self._owner_of(self.peers.contact)
        try:
            cur = await self.show(vjob_id)
        except KeyError:
            cur = None
        except StateError as exc:
            log.warning("vjob %s: record unreadable (%s); resuming from the journal", vjob_id, exc)
            cur = None
        if cur is not None and cur.get("owner", {}).get("id") != me["id"]:
            log.info("vjob %s was taken over by %s", vjob_id, cur["owner"].get("name"))
            self.journal.append({"event": "done", "id": vjob_id, "ok": None, "at": time.time()})
            return
        if cur is not None and cur.get("state") not in UNFINISHED:
            self.journal.append({"event": "done", "id": vjob_id, "ok": None, "at": time.time()})
            return
        record = cur or {
            "id": vjob_id,
            "name": entry.get("name", ""),
            "namespace": entry.get("namespace", ""),
            "state": PLACING,
            "owner": me,
            "submitted": entry.get("at", time.time()),
            "body": entry["body"],
            "history": [],
        }

        def mine(cur: Any) -> tuple[Any, None]:
            base = cur or record
            note = f"resumed by {self.host_name} after a restart"
            history = [*base.get("history", []), note]
            new = {
                **base,
                "owner": me,
                "state": PLACING,
                "updated": time.time(),
                "history": history,
            }
            return new, None

        try:
            record, _ = await self.state.update(vjob_record(vjob_id), mine)
        except StateError as exc:
            log.warning("vjob %s: %s; resuming anyway", vjob_id, exc)
        self.known[vjob_id] = record
        self._finished.setdefault(vjob_id, trio.Event())
        self._active.add(vjob_id)
        await self._place(vjob_id, record, True, me["id"])

    async def _keeper_pass(self) -> None:
        for rec in self.dht.store.records("vjob/", trio.current_time()):
            vjob_id = rec.name.removeprefix("vjob/")
            if vjob_id in self._active or not self._am_keeper(rec.name):
                continue
            value = self._decode_local(rec)
            if value is None:
                try:
                    value = (await self.state.read(rec.name)).value
                except StateError:
                    continue
            if not value or value.get("state") not in UNFINISHED:
                continue
            owner = value.get("owner", {})
            if owner.get("id") == self._owner_of(self.peers.contact)["id"]:
                continue  # ours: the journal resumes it
            if await self._alive(owner):
                continue
            await self._take_over(vjob_id, owner)

    async def _take_over(self, vjob_id: str, dead: dict[str, Any]) -> None:
        me = self._owner_of(self.peers.contact)

        def claim(cur: Any) -> tuple[Any, bool]:
            if cur is None or cur.get("state") not in UNFINISHED:
                return UNCHANGED, False
            if cur.get("owner", {}).get("id") != dead.get("id"):
                return UNCHANGED, False  # someone else claimed it first
            note = f"taken over by {self.host_name} ({dead.get('name')} is silent)"
            history = [*cur.get("history", []), note]
            new = {**cur, "owner": me, "previous_owner": dead, "state": PLACING}
            return {**new, "updated": time.time(), "history": history}, True

        value, claimed = await self.state.update(vjob_record(vjob_id), claim)
        if not claimed:
            return
        log.info("vjob %s: taking over from %s", vjob_id, dead.get("name"))
        self.known[vjob_id] = value
        self._finished.setdefault(vjob_id, trio.Event())
        self._active.add(vjob_id)
        await self._place(vjob_id, value, True, str(dead.get("id", "")))

    def _am_keeper(self, name: str) -> bool:
        key = key_of(name)
        me = self.peers.contact.node_id
        return all(me ^ key < c.node_id ^ key for c in self.peers.peer_contacts())

    async def _alive(self, owner: dict[str, Any]) -> bool:
        try:
            addr = (str(owner["host"]), int(owner["port"]))
        except (KeyError, TypeError, ValueError):
            return False
        cfg = self.config
        reply = await self.requests.request(
            addr, HostQuery(vms=False), timeout=cfg.owner_timeout_s, attempts=cfg.owner_attempts
        )
        return isinstance(reply, HostReply)

    def _owner_of(self, c: Contact) -> dict[str, Any]:
        return {
            "id": f"{c.node_id:040x}",
            "host": c.host,
            "port": c.port,
            "name": self.host_name,
        }


def _row(rec: dict[str, Any]) -> VjobRow:
    return VjobRow(
        id=str(rec.get("id", ""))[:32],
        name=str(rec.get("name", ""))[:128],
        namespace=str(rec.get("namespace", ""))[:128],
        state=str(rec.get("state", ""))[:16],
        vms=int(rec.get("vms", len(rec.get("body", {}).get("vms", [])))),
        placed=len(rec.get("placed", [])),
        owner=str(rec.get("owner", {}).get("name", ""))[:128],
        reason=str(rec.get("reason", ""))[:512],
        updated=float(rec.get("updated", rec.get("submitted", 0.0))),
    )


def _missing(
    vms: tuple[LaunchVm, ...],
    constraints: tuple[WireConstraint, ...],
    running: dict[tuple[str, str], str],
) -> tuple[tuple[LaunchVm, ...], tuple[WireConstraint, ...]]:
    """The VMs still to create and the constraints that still apply to them."""
    missing = tuple(v for v in vms if (v.namespace, v.name) not in running)
    keys = {_key(v.namespace, v.name) for v in missing}
    host_of = {_key(ns, name): host for (ns, name), host in running.items()}
    out: list[WireConstraint] = []
    for c in constraints:
        mine = tuple(k for k in c.vms if k in keys)
        if not mine:
            continue
        if len(mine) == len(c.vms):
            out.append(c)
            continue
        if c.kind in ("spread",):
            used = tuple(sorted({host_of[k] for k in c.vms if k in host_of}))
            if len(mine) > 1:
                out.append(WireConstraint("spread", mine))
            if used:
                out.append(WireConstraint("ban", mine, used))
        elif c.kind in ("ban", "fence", "capacity", "among"):
            out.append(replace(c, vms=mine))
        else:
            log.warning("resuming: constraint %s over running and missing VMs dropped", c.kind)
    return missing, tuple(out)


class _OwnerAlive(Exception):
    """The owner of a vjob we took over answers again."""


def _key(namespace: str, name: str) -> str:
    return f"{namespace}/{name}" if namespace else name
