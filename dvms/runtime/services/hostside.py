"""The namespace interpreter's effects, carried out on the hosts.

The node that took the command (``EffectRunner``) sends each host its part; each host
answers for its own VMs (``HostSide``, registered in the node's ``Handlers``)::

    Launch(ns, vms)        --> one partition launch event, each VM pinned (a fence) to
                               the host the interpreter chose; then paused (BUILDING)
    Start|Stop|Kill|Flush  --> VmOp(ns, verb, names) to each VM's host
    Migrate(ns, vm, a, b)  --> MoveVm to host a (live on QEMU, emulated on test hosts)
    ClearNamespace(ns)     --> VmOp(ns, clear) to every host (VMs and bridges there)
    SetBridge|DelBridge    --> NetOp to every host of the bridge (VXLAN/GRE reconciler)
    RunOnHosts(ns, words)  --> RunCmd to every host, outputs gathered per host

A host that does not answer is reported by name in the command's errors; the others
still act (minimega reports per-host errors the same way).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import trio

from dvms.hypervisor.base import DomainState, Hypervisor, VmInfo
from dvms.hypervisor.errors import HypervisorError, InvalidState, VmNotFound
from dvms.hypervisor.net import NamespaceNetwork, NetError, Reconciler, TunnelKind
from dvms.namespace import (
    ClearNamespace,
    DelBridge,
    Flush,
    Kill,
    Launch,
    Migrate,
    RunOnHosts,
    SetBridge,
    Start,
    Stop,
)
from dvms.partition.events import MigrateVmTo
from dvms.partition.messages import LaunchVm
from dvms.ranges import compress, natural_key
from dvms.runtime.capabilities import Handlers, Launcher, Peers, Requester, VmDirectory
from dvms.runtime.messages import Adopted, MoveVm, NetOp, RunCmd, RunOutput, VmOp, VmOpDone
from dvms.runtime.services.monitor import HostMonitor
from dvms.runtime.services.vm_driver import VmDriver
from dvms.runtime.services.vmnet import VM_BRIDGE, VmNetConfig, VmNetworks

if TYPE_CHECKING:
    from dvms.runtime.services.namespaces import NamespaceService

__all__ = ["VERB_OF", "EffectRunner", "EffectsConfig", "HostSide", "minimega_state"]

log = logging.getLogger("dvms.runtime.services.hostside")

VERB_OF = {Start: "start", Stop: "stop", Kill: "kill", Flush: "flush"}

#: VMs one ``clear`` request acts on at most (``VmOpDone.done`` holds 4,096 names).
CLEAR_MAX = 4096
#: VMs a host acts on at once for one ``VmOp``: each waits on hypervisor calls and on a
#: DHT put (freeing its name), mostly latency on a loaded machine (ours).
OP_PARALLEL = 8

#: Hypervisor state -> minimega's word (``vm info``).
_MINIMEGA_STATE = {
    DomainState.BUILDING: "BUILDING",
    DomainState.RUNNING: "RUNNING",
    DomainState.MIGRATING: "RUNNING",
    DomainState.PAUSED: "PAUSED",
    DomainState.SHUTOFF: "QUIT",
    DomainState.CRASHED: "ERROR",
    DomainState.UNKNOWN: "ERROR",
}


def minimega_state(state: str) -> str:
    """A ``VmRow.state`` (hypervisor word) as minimega prints it."""
    try:
        return _MINIMEGA_STATE[DomainState(state)]
    except ValueError:
        return "ERROR"


def _key(namespace: str, name: str) -> str:
    return f"{namespace}/{name}" if namespace else name


@dataclass(frozen=True, slots=True)
class EffectsConfig:
    """Timeouts of the requests an effect sends to a host (the first, doubled per
    attempt); the others use the node's ``RunnerConfig`` defaults."""

    #: ``vm migrate``: the source host answers once the VM has moved, seconds.
    migrate_timeout_s: float = 30.0
    migrate_attempts: int = 1
    #: ``ns run``: the host answers once the command has run there, seconds.
    run_timeout_s: float = 10.0
    run_attempts: int = 1
    #: ``vm start|stop|kill|flush``, ``clear namespace``: the host answers once it has
    #: acted on every VM named (a few hundred take seconds on a busy host; a retry
    #: sent meanwhile would act on them twice), seconds.
    op_timeout_s: float = 10.0
    op_attempts: int = 2
    #: VMs one ``vm start|stop|kill|flush`` or ``clear namespace`` request to a host acts
    #: on at most: a host holding more gets several requests, one after the other, so
    #: each answers within ``op_timeout_s`` and fits one datagram (ours: a clear of 250
    #: VMs took over 10 s on a test host of a machine at load 27, each VM's name freed
    #: in the DHT).
    op_batch: int = 100
    #: ``clear namespace``: requests to one host in a row that go unanswered before it is
    #: reported as not answering (a clear is idempotent: asking again clears what is
    #: left).
    clear_silences: int = 3
    #: ``vm launch``: VMs per launch event, launched one event after the other, host by
    #: host (ours: a partition's messages carry its events' VMs, ~27 bytes each, and
    #: the protocol takes at most 1,024 per event; on 3 daemons of a loaded 2-core
    #: machine events of 250 VMs failed, of 100 failed now and then, of 50 rarely).
    launch_batch: int = 50
    #: ``vm launch``: times one batch is launched before its VMs are reported failed. A
    #: batch fails for reasons that pass (every node busy in other partitions, so its
    #: partition could not grow; a lease that expired on a loaded host), and launching
    #: it again is idempotent (the solver keeps a VM that already runs with the size
    #: asked where it runs; ours).
    batch_attempts: int = 3
    #: Wait before the second attempt of a failed batch, seconds, doubled before each
    #: later one (ours: the partitions that kept the nodes busy end within seconds).
    batch_backoff_s: float = 2.0

    def __post_init__(self) -> None:
        if not 1 <= self.launch_batch <= 1024:
            raise ValueError("launch_batch must be in [1, 1024]")
        if self.batch_attempts < 1 or self.batch_backoff_s < 0:
            raise ValueError("batch_attempts must be >= 1 and batch_backoff_s >= 0")
        if not 1 <= self.op_batch <= CLEAR_MAX:
            raise ValueError(f"op_batch must be in [1, {CLEAR_MAX}]")
        if self.clear_silences < 1:
            raise ValueError("clear_silences must be at least 1")


class EffectRunner:
    """Carries out a command's effects from the node that took it."""

    def __init__(
        self,
        service: NamespaceService,
        *,
        requests: Requester,
        peers: Peers,
        launcher: Launcher,
        config: EffectsConfig | None = None,
    ) -> None:
        self.service = service
        self.requests = requests
        self.peers = peers
        self.launcher = launcher
        self.config = config or EffectsConfig()

    async def run(self, effects: Iterable[Any]) -> list[str]:
        errors: list[str] = []
        for eff in effects:
            if isinstance(eff, Launch):
                errors += await self._launch(eff)
            elif type(eff) in VERB_OF:
                errors += await self._verb(eff.namespace, VERB_OF[type(eff)], eff.vms)
            elif isinstance(eff, Migrate):
                errors += await self._migrate(eff)
            elif isinstance(eff, ClearNamespace):
                errors += await self._each(eff.hosts, eff.namespace)
            elif isinstance(eff, SetBridge | DelBridge):
                errors += await self._bridge(eff)
            elif isinstance(eff, RunOnHosts):
                errors += await self._run_on(eff)
            else:  # a new effect type the daemon does not know: say so, do not ignore it
                errors.append(f"effect {type(eff).__name__} is not carried out by the daemon")
        return errors

    # -- launch ------------------------------------------------------------------------

    async def _launch(self, eff: Launch) -> list[str]:
        # The interpreter chose each host (colocate and schedule included): launch each
        # VM there (``schedule``: where to launch, not a pin a later relief must keep) and
        # let a partition create them, ``launch_batch`` VMs at a time, host by host so a
        # batch needs few hosts in its partition. One event after the other: the node
        # that took the command is a member of each event's partition, and a node is in
        # one partition at a time.
        recs = sorted(eff.vms, key=lambda vm: (natural_key(vm.host), natural_key(vm.name)))
        step = self.config.launch_batch
        failed: dict[str, str] = {}
        by_reason: dict[str, list[Any]] = {}
        errors: list[str] = []
        launched = []
        for i in range(0, len(recs), step):
            batch = recs[i : i + step]
            vms = tuple(
                LaunchVm.from_spec(
                    replace(vm.config.spec(vm.name, eff.namespace), schedule=vm.host, colocate=None)
                )
                for vm in batch
            )
            reason = await self._launch_batch(vms)
            if reason is None:
                launched += batch
            else:
                failed.update((vm.name, reason) for vm in batch)
                by_reason.setdefault(reason, []).extend(batch)
        for reason, recs in by_reason.items():  # one line per reason, naming its VMs
            errors.append(
                f"vm launch: {compress(vm.name for vm in recs)} ({len(recs)} VMs, host "
                f"{', '.join(sorted({vm.host for vm in recs}, key=natural_key))}) not "
                f"launched after {self.config.batch_attempts} attempt(s): {reason}"
            )
        if launched:  # minimega: launched VMs wait in BUILDING (paused) for `vm start`
            errors += await self._verb(eff.namespace, "stop", [(v.name, v.host) for v in launched])
        await self.service.launched(eff.namespace, eff.schedule, failed)
        return errors

    async def _launch_batch(self, vms: tuple[LaunchVm, ...]) -> str | None:
        """Launch one batch, again after a failure (``batch_attempts``, waiting
        ``batch_backoff_s``, doubled, between attempts); None once it is launched, else
        the last attempt's reason."""
        cfg = self.config
        reason = ""
        for attempt in range(cfg.batch_attempts):
            if attempt:
                log.info("vm launch: %d VMs again (%s)", len(vms), reason)
                await trio.sleep(cfg.batch_backoff_s * 2 ** (attempt - 1))
            done = await self.launcher.launch(vms, ())
            if done.ok:
                return None
            reason = done.reason
        return reason

    # -- lifecycle ---------------------------------------------------------------------

    async def _verb(self, namespace: str, verb: str, vms: Any) -> list[str]:
        by_host: dict[str, list[str]] = {}
        for name, host in vms:
            by_host.setdefault(host, []).append(name)
        errors: list[str] = []

        cfg = self.config

        async def one(host: str, names: list[str]) -> None:
            for i in range(0, len(names), cfg.op_batch):
                part = names[i : i + cfg.op_batch]
                msg = VmOp(namespace, verb, tuple(part))
                reply = await self.requests.ask_host(
                    host, msg, timeout=cfg.op_timeout_s, attempts=cfg.op_attempts
                )
                if not isinstance(reply, VmOpDone):
                    errors.append(f"{host}: did not answer (vm {verb} {_listed(part)})")
                else:
                    errors.extend(f"{host}: {e}" for e in reply.errors)

        async with trio.open_nursery() as nursery:
            for host, names in sorted(by_host.items()):
                nursery.start_soon(one, host, names)
        return errors

    async def _each(self, hosts: tuple[str, ...], namespace: str) -> list[str]:
        """``clear namespace`` on every host: each clears ``op_batch`` VMs per request
        and says whether more remain; asked again until none do (or it stops
        answering, or a request clears nothing: its errors say why)."""
        errors: list[str] = []

        cfg = self.config
        msg = VmOp(namespace, "clear", limit=cfg.op_batch)

        async def one(host: str) -> None:
            silences = 0
            while True:
                reply = await self.requests.ask_host(
                    host, msg, timeout=cfg.op_timeout_s, attempts=cfg.op_attempts
                )
                if reply is None:
                    silences += 1
                    if silences >= cfg.clear_silences:
                        errors.append(f"{host}: did not answer")
                        return
                    continue
                silences = 0
                if not isinstance(reply, VmOpDone):
                    return
                errors.extend(f"{host}: {e}" for e in reply.errors)
                if not reply.more or not reply.done:
                    return

        async with trio.open_nursery() as nursery:
            for host in hosts:
                nursery.start_soon(one, host)
        return sorted(errors)

    async def _migrate(self, eff: Migrate) -> list[str]:
        dst = self.peers.hosts().get(eff.dst)
        if dst is None:
            return [f"vm migrate: unknown host {eff.dst}"]
        msg = MoveVm(eff.namespace, eff.vm, eff.dst, dst.host, dst.port)
        cfg = self.config
        reply = await self.requests.ask_host(
            eff.src, msg, timeout=cfg.migrate_timeout_s, attempts=cfg.migrate_attempts
        )
        if not isinstance(reply, Adopted):
            return [f"vm migrate: {eff.src} did not answer"]
        return [] if reply.ok else [f"vm migrate {eff.vm}: {reply.reason}"]

    # -- network and ns run ------------------------------------------------------------

    async def _bridge(self, eff: SetBridge | DelBridge) -> list[str]:
        hosts = self.peers.hosts()
        errors: list[str] = []
        for host in eff.hosts:
            if host not in hosts:
                errors.append(f"{host}: unknown host")
        live = [h for h in eff.hosts if h in hosts]
        ips = {h: hosts[h].host for h in live}

        async def one(host: str) -> None:
            peers = tuple(sorted({ip for h, ip in ips.items() if h != host} - {ips[host]}))
            if isinstance(eff, SetBridge):
                msg = NetOp(eff.namespace, eff.bridge, eff.kind, eff.key, peers)
            else:
                msg = NetOp(eff.namespace, eff.bridge, "vxlan", 0, (), delete=True)
            reply = await self.requests.ask_host(host, msg)
            if not isinstance(reply, VmOpDone):
                errors.append(f"{host}: did not answer")
            else:
                errors.extend(f"{host}: {e}" for e in reply.errors)

        async with trio.open_nursery() as nursery:
            for host in live:
                nursery.start_soon(one, host)
        return errors

    async def _run_on(self, eff: RunOnHosts) -> list[str]:
        outputs: dict[str, RunOutput | None] = {}

        async def one(host: str) -> None:
            msg = RunCmd(eff.namespace, eff.command)
            outputs[host] = await self.requests.ask_host(
                host, msg, timeout=self.config.run_timeout_s, attempts=self.config.run_attempts
            )

        async with trio.open_nursery() as nursery:
            for host in eff.hosts:
                nursery.start_soon(one, host)
        errors: list[str] = []
        texts: list[str] = []
        for host in sorted(outputs):
            out = outputs[host]
            if not isinstance(out, RunOutput):
                errors.append(f"{host}: did not answer")
            elif not out.ok:
                errors.append(f"{host}: {out.text.strip().removeprefix('E: ')}")
            elif out.text:
                texts.append(f"{host}:\n{out.text}")
        self.service.run_output = "".join(texts)
        return errors


def _listed(names: list[str]) -> str:
    """``names`` for an error line: the first few and how many more."""
    shown = ",".join(names[:8])
    return shown if len(names) <= 8 else f"{shown} and {len(names) - 8} more"


class HostSide:
    """What a host does when a peer (or itself) sends it its part of an effect."""

    def __init__(
        self,
        service: NamespaceService,
        net: Reconciler,
        *,
        monitor: HostMonitor,
        driver: VmDriver,
        directory: VmDirectory,
        peers: Peers,
        handlers: Handlers,
        requests: Requester | None = None,
        vm_net: VmNetConfig | None = None,
    ) -> None:
        self.service = service
        self.net = net
        self.monitor = monitor
        self.driver = driver
        self.directory = directory
        self.peers = peers
        #: (namespace, bridge) -> the network this host should have for it
        self.networks: dict[tuple[str, str], NamespaceNetwork] = {}
        handlers.register(VmOp, self.vm_op)
        handlers.register(MoveVm, self.move)
        handlers.register(RunCmd, self.run_cmd)
        handlers.register(NetOp, self.net_op)
        #: The namespaces' VM networks (tunnels follow the VMs; real hypervisors only)
        self.vm_networks = VmNetworks(self, monitor, requests=requests, peers=peers, config=vm_net)
        if self.vm_networks.enabled:
            driver.networks = self.vm_networks

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The VM networks' rounds (returns at once on test hosts)."""
        await self.vm_networks.run(task_status=task_status)

    @property
    def hv(self) -> Hypervisor:
        return self.monitor.hv

    async def vm_op(self, msg: VmOp) -> VmOpDone:
        mon = self.monitor
        await mon.refresh()
        done: list[str] = []
        errors: list[str] = []
        more = False
        if msg.op == "clear":
            targets = [v for v in mon.vms if v.namespace == msg.namespace]
            limit = min(msg.limit or CLEAR_MAX, CLEAR_MAX)
            more, targets = len(targets) > limit, targets[:limit]
        else:
            targets = []
            for name in msg.names:
                info = mon.find(name, msg.namespace)
                if info is None:
                    errors.append(f"vm not found: {name}")
                else:
                    targets.append(info)

        async def one(v: VmInfo) -> None:
            try:
                if await self._apply(msg.op, v):
                    done.append(v.name)
            except VmNotFound:
                # gone since the listing: a retransmitted request already removed it
                if msg.op in ("clear", "kill", "flush"):
                    done.append(v.name)
                else:
                    errors.append(f"vm not found: {v.name}")
            except HypervisorError as exc:
                errors.append(str(exc)[:500])

        # a few VMs at once: each clear also frees the VM's name in the DHT (a put)
        limiter = trio.CapacityLimiter(OP_PARALLEL)

        async def limited(v: VmInfo) -> None:
            async with limiter:
                await one(v)

        async with trio.open_nursery() as nursery:
            for v in targets:
                nursery.start_soon(limited, v)
        if msg.op == "clear" and not more:
            errors += self._set_networks(
                {k: n for k, n in self.networks.items() if k[0] != msg.namespace}
            )
            errors += self.vm_networks.forget(msg.namespace)
        if not more:  # a clear with more to do reads the host again at its next request
            await mon.refresh()
        return VmOpDone(mon.name, tuple(done), tuple(errors[:64]), more)

    async def _apply(self, op: str, v: VmInfo) -> bool:
        hv, key = self.hv, v.key
        state = v.state
        if op == "start":
            if state is DomainState.PAUSED:
                await hv.resume(key)
            elif state in (DomainState.SHUTOFF, DomainState.CRASHED):
                await hv.start(key)
            else:
                return False
        elif op == "stop":
            if state is not DomainState.RUNNING:
                return False
            await hv.suspend(key)
        elif op == "kill":
            if state not in (DomainState.RUNNING, DomainState.PAUSED, DomainState.BUILDING):
                return False
            await hv.destroy(key)
            await self.driver.forgotten(v.namespace, v.name)
        elif op == "flush":
            if state not in (DomainState.SHUTOFF, DomainState.CRASHED):
                return False
            await hv.undefine(key)
            self.monitor.specs.pop(key, None)
            await self.directory.forget(v.namespace, v.name)
        elif op == "clear":  # a VM gone meanwhile (a retried request) is cleared too
            with contextlib.suppress(InvalidState, VmNotFound):
                await hv.destroy(key)
            with contextlib.suppress(VmNotFound):
                await hv.undefine(key)
            self.monitor.specs.pop(key, None)
            await self.directory.forget(v.namespace, v.name)
            await self.driver.forgotten(v.namespace, v.name)
        else:
            raise HypervisorError(f"unknown vm operation {op!r}")
        return True

    async def move(self, msg: MoveVm) -> Adopted:
        move = MigrateVmTo(0, msg.name, msg.namespace, msg.dst_host, (msg.dst_ip, msg.dst_port))
        with self.monitor.in_flight():
            ok, reason = await self.driver.migrate_vm(move)
        await self.monitor.refresh()
        if ok:
            dst = self.peers.hosts().get(msg.dst_host)
            node_id = dst.node_id if dst else 0
            await self.directory.located(msg.namespace, msg.name, msg.dst_host, node_id)
        return Adopted(ok, reason[:512])

    async def run_cmd(self, msg: RunCmd) -> RunOutput:
        out = await self.service.execute_remote(msg.namespace, list(msg.words))
        return RunOutput(self.monitor.name, bool(out["ok"]), out["text"][:48_000])

    async def net_op(self, msg: NetOp) -> VmOpDone:
        if msg.bridge == VM_BRIDGE and not msg.delete:  # a VM of the namespace is coming
            errors = await self.vm_networks.prepare(msg.namespace, msg.peers)
            return VmOpDone(self.monitor.name, () if errors else (msg.namespace,), tuple(errors))
        want = dict(self.networks)
        name = (msg.namespace, msg.bridge)
        if msg.delete:
            want.pop(name, None)
        else:
            try:
                want[name] = NamespaceNetwork(
                    namespace=f"{msg.namespace}/{msg.bridge}",
                    local_ip=self.peers.contact.host,
                    peers=frozenset(msg.peers),
                    kind=TunnelKind(msg.kind),
                    key=msg.key or None,
                )
            except (ValueError, NetError) as exc:
                return VmOpDone(self.monitor.name, (), (str(exc)[:500],))
        errors = self._set_networks(want)
        done = () if errors else (msg.bridge,)
        return VmOpDone(self.monitor.name, done, tuple(errors))

    def _set_networks(self, want: dict[tuple[str, str], NamespaceNetwork]) -> list[str]:
        try:
            self.net.apply([*want.values(), *self.vm_networks.want.values()])
        except NetError as exc:
            return [str(exc)[:500]]
        self.networks = want
        return []

    def apply_networks(self) -> list[str]:
        """Apply the ``ns bridge`` networks and the VM networks as they are now."""
        return self._set_networks(dict(self.networks))
