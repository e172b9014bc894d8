"""Faithful mode: a few dozen *full* Trio node shells on a simulated network, and the
same script on the engine path, so that both paths can be compared.

The engine path (``dvms.sim.world`` + ``dvms.sim.schedulers.dvms``) calls the sans-I/O cores
directly from one event heap. The faithful path runs what a daemon runs: one
``NodeRunner`` per host (overlay receive/timer loops, host monitor, solver in a worker
thread, driver calls) with its ``WireCodec``, over ``SimNetwork`` datagrams, each host a
``SimHypervisor`` of one shared ``SimCluster``, inside ``trio.run`` under
``MockClock(autojump_threshold=0)``::

    script (both paths)          engine path                 faithful path
    t=0       N hosts, 10 VMs    World + DvmsScheduler       N NodeRunner + SimNetwork
              at base demand     (cores called directly)     (+ SimHypervisor, codec)
    spike_at  hot host's VMs     world.set_vm_units          cluster.set_cpu_demand
              at full demand     -> monitor -> ISP           -> HostMonitor -> ISP
    launch_at a spread vjob      world [[launches]]          runner.launch(...)
    lookup_at random lookups     overlay.lookup (engine)     runner.lookup (Trio)
    end       outcome            FaithfulResult              FaithfulResult

``FaithfulResult.outcome_class()`` is what must agree: every lookup exact (the k closest
ids of all nodes, by brute force), the overload resolved and no host over capacity at
the end, the vjob placed on as many distinct hosts as its spread group has VMs, every VM
on exactly one host. Timings differ on purpose and are not compared: the faithful path
emulates a migration as a re-creation (``test:`` hosts, see
``dvms.runtime.services.vm_driver``) where the engine charges a pre-copy migration, and
Trio orders simultaneous wake-ups its own way (see ``dvms.transport.simnet``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from typing import Any

import trio
import trio.testing

from dvms.hypervisor.simulated import SimCluster, SimHostConfig, SimHypervisor
from dvms.overlay.config import KademliaConfig
from dvms.overlay.core import LookupDone
from dvms.overlay.messages import Contact, register_overlay_messages
from dvms.overlay.records import Identity, ValidatorRegistry
from dvms.partition.config import PartitionConfig
from dvms.partition.core import EventDone
from dvms.partition.messages import LaunchVm, WireConstraint, register_partition_messages
from dvms.placement.spec import VmSpec
from dvms.runtime.messages import register_node_messages
from dvms.runtime.node import NodeRunner
from dvms.runtime.services.monitor import HostMonitor
from dvms.runtime.services.state import state_validators
from dvms.sim.engine import NODE_PORT
from dvms.sim.scenario import scenario_from_dict
from dvms.stack.core import NodeCore, build_cores
from dvms.transport import ConstantLatency, NetworkModel
from dvms.transport.simnet import open_sim_network
from dvms.vivaldi import VivaldiConfig
from dvms.wire.envelope import MessageRegistry, WireCodec

__all__ = ["FaithfulConfig", "FaithfulResult", "run_engine", "run_faithful"]

#: The cluster key of the simulated nodes (a simulation, not a secret).
_KEY = bytes(32)


@dataclass(frozen=True, slots=True)
class FaithfulConfig:
    """The script both paths run. Times in virtual seconds, demand in CPUs per VM."""

    #: Hosts (one node each); "a few dozen" (the issue).
    nodes: int = 24
    seed: int = 23
    #: VMs per host (1 vCPU, 1 GiB each), host CPUs (capacity = cpus * 100 units: 7 =
    #: VMPlaceS's 700 units) and memory.
    vms_per_host: int = 10
    cpus: int = 7
    memory_mib: int = 32768
    #: Every VM's demand at rest (0.6 = VMPlaceS's mean load: hosts at 6 of 7 CPUs).
    base_demand: float = 0.6
    #: At ``spike_at_s`` every VM of ``hot_host`` goes to ``hot_demand`` (10 > 7 CPUs).
    hot_host: int = 0
    hot_demand: float = 1.0
    spike_at_s: float = 20.0
    #: At ``launch_at_s`` a vjob of ``launch_vms`` idle VMs, all in one spread group, is
    #: submitted to host ``nodes // 2``.
    launch_vms: int = 4
    launch_at_s: float = 40.0
    #: At ``lookup_at_s`` ``lookups`` random-target lookups from random nodes.
    lookups: int = 8
    lookup_at_s: float = 60.0
    end_s: float = 90.0
    lan_rtt_s: float = 50e-6
    #: Partition settings shared by both paths (VMPlaceS: lease 4.5 s, min size 4).
    partition: PartitionConfig = field(
        default_factory=lambda: PartitionConfig(lease_s=4.5, min_partition_size=4)
    )


@dataclass(frozen=True, slots=True)
class FaithfulResult:
    path: str  # "engine" or "trio"
    nodes: int
    lookups: int
    lookups_exact: int
    overloads_resolved: int
    overloads_failed: int
    hosts_over_capacity: int  # at the end
    launch_placed: bool
    launch_hosts: int  # distinct hosts of the vjob's VMs
    vms: int  # VMs found on exactly one host
    vms_misplaced: int  # VMs on no host or on several

    def outcome_class(self) -> tuple[Any, ...]:
        """What both paths must agree on (see the module docstring)."""
        return (
            self.nodes,
            self.lookups_exact == self.lookups,
            self.overloads_resolved > 0 and self.overloads_failed == 0,
            self.hosts_over_capacity,
            self.launch_placed,
            self.launch_hosts,
            self.vms,
            self.vms_misplaced,
        )


def _host_name(i: int) -> str:
    return f"h{i:03d}"


def _vm_name(h: int, j: int) -> str:
    return f"vm{h:03d}-{j}"


def _launch_names(cfg: FaithfulConfig) -> tuple[str, ...]:
    return tuple(f"job-{i}" for i in range(cfg.launch_vms))


def _closest(ids: list[int], target: int, k: int) -> set[int]:
    return set(sorted(ids, key=lambda i: i ^ target)[:k])


# -- engine path ---------------------------------------------------------------------------


def run_engine(cfg: FaithfulConfig) -> FaithfulResult:
    """The script on the engine path: ``World`` + the ``dvms`` scheduler."""
    from dvms.sim.schedulers.dvms import DvmsScheduler
    from dvms.sim.world import World

    units = round(cfg.base_demand * 100)
    scn = scenario_from_dict(
        {
            "name": "faithful",
            "seed": cfg.seed,
            "duration_s": cfg.end_s,
            "hosts": {
                "count": cfg.nodes,
                "cpu_capacity": cfg.cpus * 100,
                "memory_mib": cfg.memory_mib,
            },
            "vms": {"per_host": cfg.vms_per_host, "vcpus": 1, "memory_mib": 1024},
            # no random load events: the script sets every demand
            "load": {"mean_interval_per_vm_s": 1e12, "mu": units, "initial": "mu"},
            "topology": {"kind": "lan", "lan_rtt_s": cfg.lan_rtt_s},
            "launches": [
                {
                    "at_s": cfg.launch_at_s,
                    "entry_hosts": [cfg.nodes // 2],
                    "vms": cfg.launch_vms,
                    "spread": cfg.launch_vms,
                }
            ],
        }
    )
    scn = replace(scn, scheduler=replace(scn.scheduler, partition=cfg.partition))
    world = World(scn)
    sched = DvmsScheduler(scn.scheduler)
    world.scheduler_name = sched.name
    sched.attach(world)
    eng = world.engine

    def spike() -> None:
        for v in list(world.host_vms[cfg.hot_host]):
            world.set_vm_units(v, round(cfg.hot_demand * 100), eng.now)

    eng.at(cfg.spike_at_s, spike)

    rng = random.Random(f"{cfg.seed}:lookups")
    done: dict[tuple[int, int], LookupDone] = {}  # (node position, lookup id)
    asked: list[tuple[int, int, int]] = []  # (node position, lookup id, target)
    inner = eng.on_emit

    def on_emit(node: Any, event: Any, now: float) -> None:
        if isinstance(event, LookupDone):
            done[(node.pos, event.result.lookup_id)] = event
        if inner is not None:
            inner(node, event, now)

    eng.on_emit = on_emit

    def lookups() -> None:
        for _ in range(cfg.lookups):
            node = sched.nodes[rng.randrange(cfg.nodes)]
            target = rng.getrandbits(160)
            lid, effects = node.core.overlay.lookup(target, now=eng.now)
            asked.append((node.pos, lid, target))
            eng.apply(node, effects)

    eng.at(cfg.lookup_at_s, lookups)
    world.run()
    summary = world.summary()

    ids = [n.node_id for n in sched.nodes]
    k = KademliaConfig().k
    exact = sum(
        (pos, lid) in done
        and {c.node_id for c in done[(pos, lid)].result.contacts} == _closest(ids, target, k)
        for pos, lid, target in asked
    )
    names = _launch_names(cfg)
    launched = [v for v in world.vm_names if v.startswith("l0e0j0-")]
    hosts = {world.vm_host[world.vm_index[v]] for v in launched}
    misplaced = len(world.check_invariants())
    return FaithfulResult(
        path="engine",
        nodes=cfg.nodes,
        lookups=len(asked),
        lookups_exact=exact,
        overloads_resolved=summary["overloads_resolved"],
        overloads_failed=summary["overloads_failed"],
        hosts_over_capacity=len(world.overloaded_hosts()),
        launch_placed=summary["launch_vms_placed"] == len(names),
        launch_hosts=len(hosts),
        vms=len(world.vm_names) - misplaced,
        vms_misplaced=misplaced,
    )


# -- faithful path ---------------------------------------------------------------------------


def _build_runner(
    i: int,
    cfg: FaithfulConfig,
    net: Any,
    cluster: SimCluster,
    loads: dict[tuple[str, str], float],
    rng: random.Random,
) -> NodeRunner:
    """One node as the daemon builds it (``dvms.runtime.daemon.build_runner``), on a
    simulated transport and hypervisor, with seeded randomness. Its monitor reads the
    shared ``loads`` (see ``_populate``)."""
    name = _host_name(i)
    ident = Identity.from_rng(rng)
    transport = net.new_transport(i, (f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", NODE_PORT))
    addr = transport.local_address
    contact = Contact(ident.node_id, addr[0], addr[1])
    node_rng = random.Random(rng.getrandbits(64))
    monitor = HostMonitor(SimHypervisor(cluster, name), name, "test:///sim")
    monitor.synthetic = loads
    overlay, partition = build_cores(
        contact,
        KademliaConfig(),
        node_rng,
        vivaldi=VivaldiConfig(),
        validators=state_validators(ValidatorRegistry()),
        partition=cfg.partition,
        local_state=monitor.state,
        now=trio.current_time(),
    )
    registry = register_node_messages(
        register_partition_messages(register_overlay_messages(MessageRegistry()))
    )
    return NodeRunner(
        NodeCore(overlay, partition),
        transport,
        WireCodec(_KEY, registry),
        monitor,
        rng=random.Random(node_rng.getrandbits(64)),
        identity=ident,
    )


def _populate(cfg: FaithfulConfig) -> tuple[list[SimCluster], dict[tuple[str, str], float]]:
    """One ``SimCluster`` per host, as each daemon has its own libvirt ``test:///``
    host (a migration between them is emulated by re-creation, see
    ``dvms.runtime.services.vm_driver``), and the VMs' CPU demand as the monitors'
    synthetic load (``dvms debug load``): one dict shared by every monitor, so that a
    VM's load follows it to whichever host re-creates it."""
    clusters, loads = [], {}
    for i in range(cfg.nodes):
        cluster = SimCluster()
        name = _host_name(i)
        cluster.add_host(name, SimHostConfig(cpus=cfg.cpus, memory_mib=cfg.memory_mib))
        for j in range(cfg.vms_per_host):
            vm = _vm_name(i, j)
            cluster.create(name, VmSpec(vm, vcpus=1, memory_mib=1024), now=0.0)
            loads[("", vm)] = cfg.base_demand
        clusters.append(cluster)
    return clusters, loads


async def _script(cfg: FaithfulConfig) -> FaithfulResult:
    rng = random.Random(f"{cfg.seed}:faithful")
    clusters, loads = _populate(cfg)
    model = NetworkModel(ConstantLatency(cfg.lan_rtt_s))
    overloads: list[bool] = []
    async with open_sim_network(model) as net, trio.open_nursery() as nursery:
        runners = [_build_runner(i, cfg, net, clusters[i], loads, rng) for i in range(cfg.nodes)]

        def listen(event: Any) -> None:
            if isinstance(event, EventDone) and event.kind == "overload":
                overloads.append(event.ok)

        seeds: list[tuple[str, int]] = []
        for r in runners:
            r.listeners.append(listen)
            await nursery.start(r.run, list(seeds[:3]))
            if len(seeds) < 3:
                seeds.append(r.transport.local_address)

        await trio.sleep_until(cfg.spike_at_s)
        for j in range(cfg.vms_per_host):
            loads[("", _vm_name(cfg.hot_host, j))] = cfg.hot_demand

        await trio.sleep_until(cfg.launch_at_s)
        names = _launch_names(cfg)
        vms = tuple(LaunchVm(n, "", 1, 1024) for n in names)
        done = await runners[cfg.nodes // 2].launch(vms, (WireConstraint("spread", names),))

        await trio.sleep_until(cfg.lookup_at_s)
        lrng = random.Random(f"{cfg.seed}:lookups")
        ids = [r.core.node_id for r in runners]
        k = KademliaConfig().k
        exact = 0
        for _ in range(cfg.lookups):
            runner = runners[lrng.randrange(cfg.nodes)]
            target = lrng.getrandbits(160)
            result = await runner.lookup(target)
            exact += {c.node_id for c in result.contacts} == _closest(ids, target, k)

        await trio.sleep_until(cfg.end_s)
        nursery.cancel_scope.cancel()

    where: dict[str, list[str]] = {}
    over = 0
    for cluster in clusters:
        for host, vms_on in cluster.vms.items():
            for vm in vms_on:
                where.setdefault(vm, []).append(host)
            demand = sum(min(1.0, loads.get(("", vm), 0.0)) for vm in vms_on)
            over += demand > cfg.cpus + 1e-9
    expected = cfg.nodes * cfg.vms_per_host + (len(names) if done.ok else 0)
    misplaced = sum(len(h) != 1 for h in where.values()) + max(0, expected - len(where))
    return FaithfulResult(
        path="trio",
        nodes=cfg.nodes,
        lookups=cfg.lookups,
        lookups_exact=exact,
        overloads_resolved=sum(overloads),
        overloads_failed=len(overloads) - sum(overloads),
        hosts_over_capacity=over,
        launch_placed=done.ok,
        launch_hosts=len({p.host for p in done.placed}) if done.ok else 0,
        vms=len(where) - sum(len(h) != 1 for h in where.values()),
        vms_misplaced=misplaced,
    )


def run_faithful(cfg: FaithfulConfig) -> FaithfulResult:
    """The script on the faithful path (full node shells, see the module docstring)."""
    clock = trio.testing.MockClock(autojump_threshold=0)
    return trio.run(_script, cfg, clock=clock)
