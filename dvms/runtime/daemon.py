"""``dvms node run``: one node of a cluster, as a Trio program.

Start-up: create the state directory (0700), load or create the node identity
(``identity.key``, Ed25519, so the node id survives restarts), load the cluster key, open
the hypervisor (default: a ``test:///`` host of its own, ``host.xml`` in the state dir),
bind the UDP transport, write ``node.json`` (id, address, pid, name) for tools, then run
the node runner (overlay + partitions, ``node.py``), its services and the control socket
(``control/commands.py``) until SIGINT/SIGTERM.

This module composes the node: it builds every service and hands each the capabilities
of the runner it uses (``capabilities.py``), its config (defaults) and a random source
seeded from the operating system (``daemon_rng``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import random
import secrets
import signal
from functools import partial
from pathlib import Path
from typing import Any

import trio

from dvms.ha import Fence, HaCore, register_ha_messages
from dvms.hypervisor.base import Hypervisor, open_hypervisor
from dvms.hypervisor.net import Reconciler, open_net_backend
from dvms.overlay.core import OverlayCore
from dvms.overlay.messages import Contact, register_overlay_messages
from dvms.overlay.records import Identity, ValidatorRegistry
from dvms.partition.messages import register_partition_messages
from dvms.runtime.config import ConfigError, NodeConfig, parse_hostport
from dvms.runtime.control.commands import Daemon
from dvms.runtime.control.server import serve_control
from dvms.runtime.messages import HaQuery, register_node_messages
from dvms.runtime.node import NodeRunner
from dvms.runtime.services.files import FileService
from dvms.runtime.services.ha import HaCollector, HaShell, Watchdog, ha_effects, open_watchdog
from dvms.runtime.services.hostside import HostSide
from dvms.runtime.services.http import open_http_listeners
from dvms.runtime.services.keys import KeyService, load_node_keyring
from dvms.runtime.services.monitor import HostMonitor
from dvms.runtime.services.namespaces import NamespaceService
from dvms.runtime.services.observe import Observability
from dvms.runtime.services.revocations import RevocationService, revocation_validator
from dvms.runtime.services.state import state_validators
from dvms.runtime.services.vjobs import VjobConfig, VjobService
from dvms.stack.core import NodeCore, build_cores
from dvms.stack.limits import PeerLimiter
from dvms.transport.udp import MAX_UDP_PAYLOAD, UdpConfig, UdpTransport
from dvms.wire.envelope import MessageRegistry, WireCodec, WireConfig
from dvms.wire.keys import Keyring

__all__ = [
    "TEST_HOST_XML",
    "StateDirInUse",
    "attach_commands",
    "attach_ha",
    "build_daemon",
    "build_files",
    "build_observability",
    "build_registry",
    "build_runner",
    "build_vjobs",
    "close_ha",
    "daemon_rng",
    "load_identity",
    "lock_state_dir",
    "run_node",
    "write_test_host",
]

log = logging.getLogger("dvms.node")


class StateDirInUse(ConfigError):
    """Another running node holds this state directory."""


def lock_state_dir(state_dir: Path) -> int:
    """Hold ``state_dir`` for this process (an exclusive ``flock`` on ``state_dir/lock``,
    which also records our pid) and return the lock's file descriptor; the lock ends
    with it, or with the process. Two nodes on one state dir would share the node id
    and the control socket, so the second is refused, naming the first's pid."""
    path = state_dir / "lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise StateDirInUse(
            f"state dir {state_dir} is in use by another dvms node (pid {holder}); "
            "give each node its own --state-dir"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def daemon_rng() -> random.Random:
    """A daemon's random source: seeded from the operating system, so that two daemons
    (or two runs of one) draw different request ids, vjob ids and back-offs."""
    return random.Random(secrets.randbits(128))


def load_identity(state_dir: Path) -> Identity:
    path = state_dir / "identity.key"
    if path.exists():
        return Identity.from_private_bytes(bytes.fromhex(path.read_text().strip()))
    ident = Identity.generate()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(ident.private_bytes().hex() + "\n")
    return ident


#: The default hypervisor: a libvirt test-driver host description (CPUs, memory in KiB).
TEST_HOST_XML = """<node>
  <cpu><mhz>2000</mhz><model>i686</model><active>{cpus}</active><nodes>1</nodes>
       <sockets>1</sockets><cores>{cpus}</cores><threads>1</threads></cpu>
  <memory>{kib}</memory>
</node>
"""


def write_test_host(cfg: NodeConfig) -> None:
    """Write the default test host's description (each start: the flags may change)."""
    path = cfg.state_path / "host.xml"
    host = cfg.host
    path.write_text(TEST_HOST_XML.format(cpus=host.cpus, kib=host.memory_mib * 1024))


def build_registry() -> MessageRegistry:
    """Every message type a daemon sends and answers, by type code."""
    return register_ha_messages(
        register_node_messages(
            register_partition_messages(register_overlay_messages(MessageRegistry()))
        )
    )


def build_runner(
    cfg: NodeConfig,
    ident: Identity,
    key: bytes | Keyring,
    transport: UdpTransport,
    hv: Hypervisor,
    rng: random.Random | None = None,
) -> NodeRunner:
    """The node's cores and their Trio runner (not started) on ``transport`` and ``hv``;
    ``key``: the cluster keyring (or one key) its datagrams are signed and checked with;
    its random sources are drawn from ``rng`` (default: ``daemon_rng()``)."""
    rng = rng or daemon_rng()
    addr = transport.local_address
    contact = Contact(ident.node_id, addr[0], addr[1])
    monitor = HostMonitor(hv, cfg.name, cfg.hypervisor_uri, config=cfg.monitor)
    overlay, partition = build_cores(
        contact,
        cfg.overlay,
        random.Random(rng.getrandbits(64)),
        vivaldi=cfg.vivaldi,
        validators=state_validators(
            ValidatorRegistry([revocation_validator(cfg.operator_public_keys)])
        ),
        partition=cfg.partition,
        placement=cfg.placement,
        local_state=monitor.state,
        now=trio.current_time(),
    )
    registry = build_registry()
    # as large as the transport carries (64 KiB on UDP): a partition's messages carry
    # their events' VMs and their members' host states
    wire = WireConfig(max_datagram=transport.max_datagram, replay_entries=cfg.limits.replay_entries)
    codec = WireCodec(key, registry, wire)
    limits = PeerLimiter(cfg.limits, drops=codec.drops, now=trio.current_time())
    ha = HaCore(
        contact,
        partial(_guardian_candidates, overlay),
        cfg.ha,
        random.Random(rng.getrandbits(64)),
        now=trio.current_time(),
    )
    runner = NodeRunner(
        NodeCore(overlay, partition, identity=ident, ha=ha, limits=limits),
        transport,
        codec,
        monitor,
        rng=random.Random(rng.getrandbits(64)),
        identity=ident,
        config=cfg.runner,
        state_config=cfg.state,
        driver_config=cfg.vm_driver,
    )
    attach_ha(runner, open_watchdog(cfg.watchdog, cfg.hypervisor_uri, cfg.state_path))
    return runner


def _guardian_candidates(overlay: OverlayCore, key: int, n: int) -> list[Contact]:
    """The ``n`` contacts closest to ``key`` whose last RPC did not fail, then, if there
    are fewer, the closest others: in a small cluster a peer that missed one RPC while
    a host was busy is a better guardian than none (a silent one is replaced later)."""
    table = overlay.table
    out = table.closest(key, n, healthy=True)
    if len(out) < n:
        have = {c.node_id for c in out}
        out += [c for c in table.closest(key, n + len(out)) if c.node_id not in have]
    return out[:n]


def attach_ha(runner: NodeRunner, watchdog: Watchdog) -> HaShell:
    """The HA shell of ``runner`` (whose ``NodeCore`` has an ``HaCore``): it carries out
    fences and the watchdog, adopts the HA VMs the host creates (``docs/ha.md``)."""
    shell = HaShell(runner.node, runner.monitor, watchdog, apply=runner.apply, spawn=runner.spawn)
    effects = ha_effects(shell)
    runner.carry_out({Fence: effects.pop(Fence)}, first=True)
    runner.carry_out(effects)
    runner.listeners.append(shell.on_event)
    runner.handlers.register(HaQuery, shell.answer)
    runner.driver.ha = shell
    runner.monitor.ha_status = shell.status
    runner.ha = shell
    return shell


def build_vjobs(
    runner: NodeRunner,
    state_dir: Path,
    config: VjobConfig | None = None,
    rng: random.Random | None = None,
) -> VjobService:
    """The vjob service of ``runner`` (journal in ``state_dir``; not started)."""
    return VjobService(
        state_dir,
        host_name=runner.monitor.name,
        state=runner.state,
        requests=runner,
        peers=runner,
        dht=runner,
        launcher=runner,
        directory=runner,
        spawn=runner.spawn,
        handlers=runner.handlers,
        rng=rng or daemon_rng(),
        config=config,
    )


def build_observability(cfg: NodeConfig, runner: NodeRunner, vjobs: VjobService) -> Observability:
    """The event stream and (with ``cfg.metrics``) the metrics of ``runner``, listening
    to its events and ``vjobs``' changes (not started)."""
    obs = Observability(
        name=runner.monitor.name,
        overlay=runner.core,
        codec=runner.codec,
        partition=runner.partition,
        partitions=runner.partitions,
        monitor=runner.monitor,
        requests=runner,
        peers=runner,
        handlers=runner.handlers,
        pending_vms=vjobs.pending_vms,
        metrics=bool(cfg.metrics),
        config=cfg.observe,
    )
    runner.listeners.append(obs.on_event)
    vjobs.listeners.append(obs.on_vjob)
    if obs.metrics is not None and runner.ha is not None:
        obs.metrics.registry.register(HaCollector(runner.ha))
    return obs


def build_daemon(
    cfg: NodeConfig,
    runner: NodeRunner,
    vjobs: VjobService,
    *,
    started: float,
    rng: random.Random | None = None,
) -> Daemon:
    """The namespace services of ``runner`` and the control commands over them."""
    namespaces = NamespaceService(
        host_name=runner.monitor.name,
        state=runner.state,
        requests=runner,
        peers=runner,
        launcher=runner,
        rng=rng or daemon_rng(),
        config=cfg.namespaces,
        placement=cfg.placement,
        launches=runner.monitor.launches,
    )
    vjobs.namespaces = namespaces  # one model of a namespace's VMs for submit and vm launch
    host_side = HostSide(
        namespaces,
        Reconciler(open_net_backend(cfg.network_backend), cfg.tunnels),
        monitor=runner.monitor,
        driver=runner.driver,
        directory=runner,
        peers=runner,
        handlers=runner.handlers,
        requests=runner,
    )
    try:
        daemon = _daemon(cfg, runner, vjobs, started, namespaces, host_side)
    except ValueError as exc:  # an unknown control group
        raise ConfigError(f"[control] {exc}") from None
    daemon.bounds = runner.bounds
    daemon.before = runner.due_timers
    if runner.ha is not None:
        daemon.commands["debug_ha"] = runner.ha.command
    return daemon


def _daemon(
    cfg: NodeConfig,
    runner: NodeRunner,
    vjobs: VjobService,
    started: float,
    namespaces: NamespaceService,
    host_side: HostSide,
) -> Daemon:
    return Daemon(
        cfg,
        started=started,
        overlay=runner.core,
        codec=runner.codec,
        partition=runner.partition,
        partitions=runner.partitions,
        monitor=runner.monitor,
        requests=runner,
        peers=runner,
        dht=runner,
        vjobs=vjobs,
        namespaces=namespaces,
        host_side=host_side,
        config=cfg.control,
    )


def build_files(
    cfg: NodeConfig,
    runner: NodeRunner,
    key: bytes | Keyring,
    ident: Identity,
    rng: random.Random,
) -> FileService:
    """The file service of ``runner`` (store under the state dir; not started)."""
    return FileService(
        Path(cfg.state_dir),
        key=key,
        identity=ident,
        dht=runner,
        requests=runner,
        state=runner.state,
        handlers=runner.handlers,
        rtt=runner.core.predicted_rtt,
        joined=runner.wait_joined,
        rng=rng,
        config=cfg.files,
        defined=lambda: set(runner.monitor.specs) | {v.key for v in runner.monitor.vms},
        address_of=lambda node_id: _peer_host(runner, node_id),
    )


def attach_commands(daemon: Daemon, obs: Observability, files: FileService) -> trio.Event:
    """The control commands of the services built besides the daemon's own, and
    ``leave``: the event it returns is set when a user asks the node to leave."""
    daemon.commands["events"] = obs.command
    daemon.commands.update(files.commands())
    leave_asked = trio.Event()

    async def leave(_args: dict[str, Any]) -> dict[str, Any]:
        leave_asked.set()  # the stop runs beside, as on SIGTERM; this answer goes first
        return {"name": daemon.cfg.name, "leaving": True}

    daemon.commands["leave"] = leave
    return leave_asked


def _peer_host(runner: NodeRunner, node_id: int) -> str | None:
    entry = runner.core.table.index.get(node_id)
    return entry.contact.host if entry is not None else None


async def run_node(
    cfg: NodeConfig, *, task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED
) -> None:
    state = cfg.state_path
    state.mkdir(parents=True, exist_ok=True, mode=0o700)
    lock = lock_state_dir(state)
    try:
        await _run_node(cfg, state, task_status)
    finally:
        with contextlib.suppress(OSError):
            os.close(lock)


async def _run_node(
    cfg: NodeConfig, state: Path, task_status: trio.TaskStatus[tuple[str, int]]
) -> None:
    ident = load_identity(state)
    ring = load_node_keyring(cfg.key_path, state)
    host, port = parse_hostport(cfg.listen, what="listen")
    seeds = [parse_hostport(s, what="seed") for s in cfg.seeds]
    if not cfg.hypervisor:
        write_test_host(cfg)
    if cfg.hypervisor_uri.startswith("test:"):
        hv = open_hypervisor("libvirt", cfg.hypervisor_uri, host=cfg.name)
    else:
        domain = cfg.guests.domain_config()
        hv = open_hypervisor("libvirt", cfg.hypervisor_uri, host=cfg.name, domain=domain)
    # 64 KiB datagrams: a partition view carries its events' VMs, a HostReply 512 VMs.
    udp = UdpConfig(max_datagram=MAX_UDP_PAYLOAD, receive_buffer_bytes=cfg.udp_receive_buffer)
    transport = await UdpTransport.bind(host, port, config=udp)
    async with transport, hv:
        addr = transport.local_address
        rng = daemon_rng()
        runner = build_runner(cfg, ident, ring, transport, hv, rng)
        vjobs = build_vjobs(runner, state, cfg.vjobs, rng=random.Random(rng.getrandbits(64)))
        daemon = build_daemon(
            cfg, runner, vjobs, started=trio.current_time(), rng=random.Random(rng.getrandbits(64))
        )
        obs = build_observability(cfg, runner, vjobs)
        http: list[trio.SocketListener] = []
        # the codec's keyring: file streams follow `dvms keys` changes too
        files = build_files(cfg, runner, ring, ident, random.Random(rng.getrandbits(64)))
        leave_asked = attach_commands(daemon, obs, files)
        keys = KeyService(
            runner.codec,
            state,
            host_name=cfg.name,
            requests=runner,
            peers=runner,
            handlers=runner.handlers,
        )
        daemon.commands["keys"] = keys.command
        revocations = RevocationService(
            cfg.operator_public_keys,
            state,
            codec=runner.codec,
            overlay=runner.core,
            identity=ident,
            requests=runner,
            peers=runner,
            dht=runner,
            handlers=runner.handlers,
            joined=runner.wait_joined,
        )
        daemon.commands["revoke"] = revocations.command
        runner.driver.prepare = files.prepare_vm
        runner.image_roots = files.with_images
        files.on_held = runner.monitor.set_images
        files.host_name = runner.monitor.name
        info = {
            "node_id": f"{ident.node_id:040x}",
            "address": f"{addr[0]}:{addr[1]}",
            "name": cfg.name,
            "hypervisor": cfg.hypervisor_uri,
        }
        if cfg.metrics:
            mhost, mport = parse_hostport(cfg.metrics, what="metrics")
            http, bound = await open_http_listeners(mhost, mport)
            shown = f"[{mhost}]" if ":" in mhost else mhost
            info["metrics"] = f"http://{shown}:{bound}/metrics"
        (state / "node.json").write_text(json.dumps({**info, "pid": os.getpid()}) + "\n")
        log.info("node %s (%s) listening on %s:%d", cfg.name, info["node_id"][:12], *addr)
        if "metrics" in info:
            log.info(
                "metrics, /healthz and /readyz on %s", info["metrics"].removesuffix("/metrics")
            )
        try:
            if runner.ha is not None:  # before the node joins: no outdated copy runs
                await runner.ha.fence_at_start()
            async with trio.open_nursery() as nursery:
                await nursery.start(obs.run, http)
                await nursery.start(runner.run, seeds)
                await nursery.start(revocations.run)
                await nursery.start(vjobs.run)
                await nursery.start(files.run)
                await nursery.start(
                    partial(serve_control, access=daemon.access),
                    str(cfg.control_socket),
                    daemon.handle,
                )
                await nursery.start(daemon.host_side.run)
                nursery.start_soon(_stop_on_signal, nursery.cancel_scope, runner, leave_asked)
                task_status.started(addr)
        finally:
            await close_ha(runner)
    log.info("node stopped")


#: How long a stopping daemon waits for its watchdog to say goodbye, seconds (ours: the
#: fencer answers within its request timeout, 1 s).
HA_CLOSE_TIMEOUT_S = 2.0


async def close_ha(runner: NodeRunner) -> None:
    """Tell the host's watchdog that the daemon leaves (``Watchdog.aclose``), also when
    it stops by cancellation or an error: the fencer exits once nothing is armed, and
    an armed one still fences the guests at its deadline first (docs/ha.md)."""
    if runner.ha is None:
        return
    with trio.CancelScope(shield=True), trio.move_on_after(HA_CLOSE_TIMEOUT_S):
        try:
            await runner.ha.aclose()
        except Exception as exc:  # a stopping daemon logs it and goes on stopping
            log.warning("ha: closing the watchdog failed: %r", exc)


async def _stop_on_signal(scope: trio.CancelScope, runner: NodeRunner, asked: trio.Event) -> None:
    """First SIGTERM/SIGINT, or ``asked`` (``dvms node leave``): finish or release
    partitions, tell the routing table's peers we leave, then exit; a second signal exits
    at once."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as first:

            async def by_signal() -> None:
                async for sig in signals:
                    name = signal.Signals(sig).name
                    log.info("received %s, releasing partitions and stopping", name)
                    break
                first.cancel_scope.cancel()

            async def by_request() -> None:
                await asked.wait()
                log.info("asked to leave: releasing partitions and stopping")
                first.cancel_scope.cancel()

            first.start_soon(by_signal)
            first.start_soon(by_request)
        async with trio.open_nursery() as inner:

            async def second_signal() -> None:
                async for _ in signals:
                    log.info("second signal: stopping now")
                    inner.cancel_scope.cancel()
                    return

            inner.start_soon(second_signal)
            await runner.stop()
            inner.cancel_scope.cancel()
        scope.cancel()
