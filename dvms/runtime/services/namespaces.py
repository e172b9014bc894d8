"""minimega's namespace API on a daemon: ``dvms.namespace.execute`` over namespace state
kept in the DHT (``dvms/runtime/services/state.py``), with its effects carried out on the hosts.

::

    words --> names it touches --read (arbiters)--> State --execute(Cluster)--> Result
          --> changed namespaces written back (compare-and-swap; a lost race re-runs the
              command on the fresh state) --> effects on the hosts (hostside.py)

State records: ``ns/NAME`` (one ``Namespace.to_record()``; None once cleared) and
``nsindex/all`` (the sorted names of every namespace). Any node reads and writes them;
the active namespace is the client's: it comes with each command (``execute``).

Before a command runs, the namespace's VM table is brought up to what the hosts report
(host and state of each VM; VMs gone from every host that answered are forgotten, except
those a running launch is still creating; VMs placed otherwise are adopted), so a VM
moved by a DVMS partition shows on its new host.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field, replace
from typing import Any

import trio

from dvms.namespace import (
    Cluster,
    Context,
    Result,
    Session,
    State,
    execute,
    interrupt,
    launch_finished,
    launch_token,
    render_json,
    render_text,
)
from dvms.namespace.config import NamespaceRecordError, VmConfig
from dvms.namespace.effects import SOURCE_MESHAGE, SOURCE_USER, Launch
from dvms.namespace.schedule import adopt_vms, forget_vms, report_vms
from dvms.namespace.state import Namespace, with_vms
from dvms.partition.messages import LaunchVm
from dvms.placement import Host, PlacementConfig, Vm
from dvms.runtime.capabilities import Launcher, Peers, Requester, StateStore
from dvms.runtime.messages import HostQuery, HostReply
from dvms.runtime.services.hostpages import complete
from dvms.runtime.services.hostside import EffectRunner, EffectsConfig, minimega_state
from dvms.runtime.services.state import UNCHANGED, Conflict, StateError

__all__ = ["INDEX", "NamespaceConfig", "NamespaceService", "ns_record"]

log = logging.getLogger("dvms.node.namespaces")

#: The record listing every namespace name.
INDEX = "nsindex/all"


def ns_record(name: str) -> str:
    return f"ns/{name}"


@dataclass(frozen=True, slots=True)
class NamespaceConfig:
    #: Runs of a command on fresh state before it reports a conflict (each run lost the
    #: compare-and-swap of a namespace it changed to another node).
    attempts: int = 8
    #: Back-off before a command runs again: uniform in [0, this * run], seconds.
    backoff_s: float = 0.02
    #: Timeouts of the effects carried out on the hosts.
    effects: EffectsConfig = field(default_factory=EffectsConfig)


class NamespaceService:
    def __init__(
        self,
        *,
        host_name: str,
        state: StateStore,
        requests: Requester,
        peers: Peers,
        launcher: Launcher,
        rng: random.Random,
        config: NamespaceConfig | None = None,
        placement: PlacementConfig | None = None,
        launches: set[str] | None = None,
    ) -> None:
        """``host_name``: this node's (the interpreter's local host); ``rng`` draws
        bridge keys and back-offs; ``placement``: the placement engine settings of the
        commands that place VMs here (dry-run, mv and migrate); ``launches``: where this
        node lists the launches it carries out (what its host replies report)."""
        self.host_name = host_name
        self.launches = launches if launches is not None else set()
        self.state = state
        self.requests = requests
        self.config = config or NamespaceConfig()
        self.placement = placement or PlacementConfig()
        self.peers = peers
        self.effects = EffectRunner(
            self, requests=requests, peers=peers, launcher=launcher, config=self.config.effects
        )
        self._rng = rng
        self._reports: dict[tuple[str, str], tuple[str, str, int, int]] = {}
        #: host -> the launches its node carries out, as its last reply said; and the
        #: hosts that did not answer but that the routing table still holds (a node that
        #: stops answering is dropped from it after a few failed RPCs)
        self._launching: dict[str, frozenset[str]] = {}
        self._silent: frozenset[str] = frozenset()
        #: what ``ns run`` gathered from the hosts during the current command
        self.run_output = ""

    # -- the cluster as hosts report it ------------------------------------------------

    async def cluster(self) -> tuple[Cluster, set[str]]:
        """(the cluster, names of the hosts that answered)."""
        replies, silent = await self.requests.gather(HostQuery(None))
        hosts = [r for r in replies if isinstance(r, HostReply)]
        hosts = await complete(self.requests, hosts, None)
        answering = {h.name for h in hosts}
        cluster = Cluster(
            hosts=tuple(Host(h.name, cpus=h.cpus, memory_mib=h.memory_mib) for h in hosts),
            vms=tuple(
                Vm(v.name, v.namespace, v.vcpus, v.memory_mib, host=h.name)
                for h in hosts
                for v in h.vms
            ),
            local=self.host_name,
            silent=frozenset(n for c in silent if (n := self.peers.name_of(c)) not in answering),
        )
        reports = {
            (v.namespace, v.name): (h.name, minimega_state(v.state), v.vcpus, v.memory_mib)
            for h in hosts
            for v in h.vms
        }
        answered = {h.name for h in hosts if not h.truncated}
        self._reports = reports
        self._launching = {h.name: frozenset(h.launches) for h in hosts}
        self._launching[self.host_name] = frozenset(self.launches)
        in_table = {self.peers.name_of(c) for c in self.peers.peer_contacts()}
        self._silent = frozenset(n for n in cluster.silent if n in in_table)
        return cluster, answered

    # -- reading and writing namespaces ------------------------------------------------

    async def read(self, name: str) -> tuple[Namespace | None, int]:
        cur = await self.state.read(ns_record(name))
        if cur.value is None:
            return None, cur.seq
        try:
            return Namespace.from_record(cur.value), cur.seq
        except NamespaceRecordError as exc:
            raise StateError(f"namespace {name}: corrupt record ({exc})") from None

    async def names(self) -> list[str]:
        cur = await self.state.read(INDEX)
        return sorted(cur.value or [])

    def _touched(self, words: list[str], known: list[str], session: Session) -> set[str]:
        """The namespaces ``words`` reads or changes (output flags such as ``.columns``
        and a ``namespace NAME`` prefix may come first)."""
        names = {session.active}
        while words:
            while len(words) >= 2 and words[0].startswith("."):
                words = words[2:]
            if len(words) >= 2 and words[0] == "namespace":
                names.add(words[1])
                words = words[2:]
                continue
            break
        if words == ["namespace"] or words[:3] == ["clear", "namespace", "all"]:
            names |= set(known)
        if words[:2] == ["clear", "namespace"] and len(words) == 3:
            names.add(words[2])
        return names

    # -- one command -------------------------------------------------------------------

    async def execute(self, words: list[str], namespace: str = "minimega") -> dict[str, Any]:
        """One command of a client whose active namespace is ``namespace``. The node
        keeps no active namespace of its own: each client does (minimega keeps one per
        client), and the answer's ``namespace`` is the client's after the command
        (``namespace NAME`` alone switches it)."""
        session, out = await self._execute(words, Session(namespace), SOURCE_USER, local=False)
        out["namespace"] = session.active
        return out

    async def execute_remote(self, namespace: str, words: list[str]) -> dict[str, Any]:
        """``ns run``'s part on this host: ``words`` in ``namespace``, as sent by a peer
        (minimega refuses some commands then), on this host's VMs only."""
        _, out = await self._execute(words, Session(namespace), SOURCE_MESHAGE, local=True)
        return out

    async def _execute(
        self, words: list[str], session: Session, source: str, *, local: bool
    ) -> tuple[Session, dict[str, Any]]:
        self.run_output = ""
        try:
            result = await self._commit(words, session, source, local)
        except StateError as exc:
            return session, {"ok": False, "error": str(exc), "text": f"E: {exc}\n", "effects": []}
        errors = await self.effects.run(result.effects)
        out = render_json(result)
        out["text"] = render_text(result, self.host_name) + self.run_output
        if errors:
            out["ok"], out["error"] = False, "; ".join(errors)
            out["text"] += "".join(f"E: {e}\n" for e in errors)
        return result.session, out

    async def _commit(self, words: list[str], session: Session, source: str, local: bool) -> Result:
        """Run ``words`` on fresh state and write what changed; again on a lost race."""
        cluster, answered = await self.cluster()
        if local:  # this host's VMs only (``ns run``)
            here = cluster.local
            cluster = replace(cluster, vms=tuple(v for v in cluster.vms if v.host == here))
        cfg = self.config
        for attempt in range(cfg.attempts):
            known = await self.names()
            touched = self._touched(words, known, session)
            read = {}
            for name in sorted(touched):
                read[name] = await self.read(name)
            spaces = [
                self._reconcile(ns if ns is not None else Namespace(name, cluster.host_names()),
                                answered)
                for name, (ns, _) in read.items()
                if ns is not None or any(space == name for space, _ in self._reports)
            ]  # fmt: skip
            if local:
                here = cluster.local
                spaces = [with_vms(ns, [v for v in ns.vms if v.host == here]) for ns in spaces]
            state = State(tuple(sorted(spaces, key=lambda n: n.name)))
            now = time.time()
            ctx = Context(
                state,
                cluster,
                session,
                now=now,
                bridge_key=self._rng.randint(1, 2**24 - 1),
                source=source,
                placement=self.placement,
            )
            # a launch this command opens is listed before its status row is written:
            # a peer reading the row meanwhile must find its launcher carrying it out
            opened = {launch_token(name, now) for name in touched} - self.launches
            self.launches |= opened
            kept: set[str] = set()
            try:
                result = execute(words, ctx)
                if not result.ok and result.state is state:
                    return result  # refused: nothing to write
                if local:
                    return result  # ns run: the hosts' word is the state (next reconcile)
                if await self._write(read, state, result.state, known):
                    kept = {launch_token(e.namespace, now) for e in result.effects
                            if isinstance(e, Launch)}  # fmt: skip
                    return result
            finally:
                self.launches -= opened - kept
            await trio.sleep(self._rng.uniform(0, cfg.backoff_s * (attempt + 1)))
        raise Conflict(f"namespace changed by other nodes {cfg.attempts} times in a row")

    async def _write(
        self,
        read: dict[str, tuple[Namespace | None, int]],
        before: State,
        after: State,
        known: list[str],
    ) -> bool:
        changed = False
        for name, (_, seq) in sorted(read.items()):
            old, new = before.get(name), after.get(name)
            if old == new and (new is None or read[name][0] is not None):
                continue
            value = new.to_record() if new is not None else None
            if read[name][0] is None and new is None:
                continue
            if not await self.state.write(ns_record(name), value, seq):
                return False
            changed = True
        dropped = {n for n, (ns, _) in read.items() if ns is not None and after.get(n) is None}
        names = (set(known) - dropped) | set(after.names())
        if changed and sorted(names) != known:
            await self.state.update(INDEX, lambda cur: _index(cur, dropped, after))
        return True

    def _reconcile(self, ns: Namespace, answered: set[str]) -> Namespace:
        """The VM table as the hosts report it: each VM's host and state (a paused VM
        not started yet stays BUILDING), VMs gone from every host that answered are
        forgotten (not those a running launch is creating), and VMs of the namespace
        created otherwise (``submit``) are adopted."""
        mine = {name: r for (space, name), r in self._reports.items() if space == ns.name}
        ns = self._close_interrupted(ns, set(mine))
        reports = {}
        for name, (host, reported, _, _) in mine.items():
            rec = ns.vm(name)
            if rec is None:
                continue
            if rec.state == "BUILDING" and reported == "PAUSED":
                reported = "BUILDING"
            reports[name] = (host, reported)
        # while a launch runs, a BUILDING VM its host does not report yet is still being
        # created (events go out one after the other), not gone: forgetting it would
        # bring it back as a stranger, with a new id and without its launch config (the
        # end of the launch drops those whose event failed)
        launching = ns.scheduling()
        gone = {v.name for v in ns.vms if v.host in answered and v.name not in mine
                and not (launching and v.state == "BUILDING")}  # fmt: skip
        state = State((ns,))
        if reports:
            state = report_vms(state, ns.name, reports)
        if gone:
            state = forget_vms(state, ns.name, gone)
        strangers = {
            name: (host, vm_state, VmConfig(vcpus=max(vcpus, 1), memory=max(memory, 1)))
            for name, (host, vm_state, vcpus, memory) in mine.items()
        }
        state = adopt_vms(state, ns.name, strangers)
        return state.get(ns.name) or ns

    def _close_interrupted(self, ns: Namespace, reported: set[str]) -> Namespace:
        """Close the running status rows whose launcher no longer carries the launch out:
        it answered without listing it (it restarted, or its launch task died), or it
        did not answer and the routing table dropped it (it died). A launcher that did not
        answer but is still in the table may be launching: its row stays open."""
        for i, stat in enumerate(ns.stats):
            if stat.state != "running" or not stat.launcher:
                continue
            token = launch_token(ns.name, stat.start)
            held = self._launching.get(stat.launcher)
            if held is not None and token in held:
                continue
            if held is None and stat.launcher in self._silent:
                continue
            log.warning(
                "namespace %s: the launch of %s by %s was interrupted; closing its status row",
                ns.name,
                time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stat.start)),
                stat.launcher,
            )
            ns = interrupt(ns, i, reported, time.time())
        return ns

    # -- VMs placed by ``submit`` --------------------------------------------------------

    async def names_in_use(self, namespace: str, names: list[str]) -> list[str]:
        """Those of ``names`` the namespace's table holds or queues (``submit`` refuses
        them, as ``vm launch`` does)."""
        ns, _ = await self.read(namespace)
        if ns is None:
            return []
        _, answered = await self.cluster()
        ns = self._reconcile(ns, answered)  # VMs killed since (vjob stop) are gone
        taken = {vm.name for vm in ns.vms} | ns.queued_names()
        return [n for n in names if n in taken]

    async def adopt(self, namespace: str, placed: list[tuple[LaunchVm, str]]) -> None:
        """VMs a vjob placed in ``namespace`` (each with its host) join its table, as
        ``vm launch`` records the VMs it places: the namespace is created (on every
        host, as ``namespace NAME`` creates one) and listed if it is new."""
        if not placed:
            return
        vms = {v.name: (host, "RUNNING", _config_of(v)) for v, host in placed}
        hosts: frozenset[str] | None = None

        def add(cur: Any) -> tuple[Any, bool]:
            if cur is not None:
                ns = Namespace.from_record(cur)
            else:
                ns = Namespace(namespace, hosts or frozenset(h for h, _, _ in vms.values()))
            after = adopt_vms(State((ns,)), namespace, vms).get(namespace)
            assert after is not None
            if cur is not None and after == ns:
                return UNCHANGED, False
            return after.to_record(), cur is None

        if (await self.read(namespace))[0] is None:
            cluster, _ = await self.cluster()
            hosts = cluster.host_names()
        _, created = await self.state.update(ns_record(namespace), add)
        if created:
            new = State((Namespace(namespace),))
            await self.state.update(INDEX, lambda cur: _index(cur, set(), new))

    # -- reports from effects ----------------------------------------------------------

    async def launched(self, namespace: str, schedule: int, failed: dict[str, str]) -> None:
        """Close the ``ns schedule status`` row of a launch (and stop listing it)."""
        started: list[float] = []

        def close(cur: Any) -> tuple[Any, None]:
            if cur is None:
                return UNCHANGED, None  # cleared meanwhile
            ns = Namespace.from_record(cur)
            if 0 <= schedule < len(ns.stats):
                started.append(ns.stats[schedule].start)
            state = State((ns,))
            try:
                state = launch_finished(state, namespace, schedule, failed, now=time.time())
            except ValueError:
                return UNCHANGED, None
            after = state.get(namespace)
            return (after.to_record() if after is not None else None), None

        try:
            await self.state.update(ns_record(namespace), close)
        finally:
            if started:
                self.launches.discard(launch_token(namespace, started[0]))
            else:  # the namespace was cleared meanwhile: nothing of it is launching
                self.launches -= {t for t in self.launches if t.startswith(f"{namespace}@")}


def _index(cur: Any, dropped: set[str], after: State) -> tuple[Any, None]:
    names = (set(cur or []) - dropped) | set(after.names())
    new = sorted(names)
    return (new if new != sorted(cur or []) else UNCHANGED), None


def _config_of(vm: LaunchVm) -> VmConfig:
    """A vjob VM as ``vm config`` would have described it."""
    return VmConfig(
        vcpus=vm.vcpus,
        memory=vm.memory_mib,
        networks=tuple(vm.networks),
        schedule=vm.schedule or "",
        coschedule=vm.coschedule,
        colocate="" if vm.schedule else vm.colocate or "",
    )
