"""The daemon builds its node from ``NodeConfig``: each component's table reaches the
part that uses it. Here ``[placement]``: the partition solver's requests and the
namespace commands run with the node's ``PlacementConfig``, not the engine's defaults."""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

from dvms.hypervisor.simulated import SimCluster, SimHostConfig, SimHypervisor
from dvms.placement import PlacementConfig
from dvms.runtime.config import NodeConfig
from dvms.runtime.daemon import build_daemon, build_runner, build_vjobs, load_identity
from dvms.transport import ConstantLatency, NetworkModel
from dvms.transport.simnet import SimNetConfig, open_sim_network


async def test_placement_reaches_the_partition_solver_and_the_ns_commands(
    tmp_path: Path,
) -> None:
    placement = replace(PlacementConfig(), memory_overcommit=0.5)
    cfg = replace(NodeConfig.local(), state_dir=str(tmp_path), hostname="h0", placement=placement)
    cluster = SimCluster()
    cluster.add_host("h0", SimHostConfig(cpus=4, memory_mib=8192))
    rng = random.Random(3)
    async with open_sim_network(NetworkModel(ConstantLatency(1e-4))) as net:
        transport = net.new_transport(0, ("10.0.0.1", 7400))
        hv = SimHypervisor(cluster, "h0")
        runner = build_runner(cfg, load_identity(tmp_path), bytes(32), transport, hv, rng)
        vjobs = build_vjobs(runner, tmp_path, cfg.vjobs, rng=rng)
        daemon = build_daemon(cfg, runner, vjobs, started=0.0, rng=rng)
    assert runner.partition is not None and runner.partition.placement is placement
    assert daemon.namespaces.placement is placement


async def test_the_codec_carries_what_the_transport_does(tmp_path: Path) -> None:
    """A partition member reports its host's VMs in one MemberState: with 8 KiB
    datagrams a host with more than ~300 VMs could never join a partition."""
    from dvms.partition.messages import HostState, MemberState, VmState

    cfg = replace(NodeConfig.local(), state_dir=str(tmp_path), hostname="h0")
    cluster = SimCluster()
    cluster.add_host("h0", SimHostConfig(cpus=4, memory_mib=8192))
    net_cfg = SimNetConfig(max_datagram=65507)
    async with open_sim_network(NetworkModel(ConstantLatency(1e-4)), config=net_cfg) as net:
        transport = net.new_transport(0, ("10.0.0.1", 7400))
        hv = SimHypervisor(cluster, "h0")
        runner = build_runner(
            cfg, load_identity(tmp_path), bytes(32), transport, hv, random.Random(1)
        )
    assert runner.codec.config.max_datagram == transport.max_datagram == 65507
    vms = tuple(VmState(f"vm-{i}", "big", 1, 1, 0.0) for i in range(1000))
    msg = MemberState(1, 1, HostState("h0", 1024, 1 << 20, vms))
    assert 8192 < len(runner.codec.encode(msg, sender=1, rid=1, now=0.0)) <= 65507


async def test_a_stopping_daemon_closes_its_ha_watchdog(tmp_path: Path) -> None:
    """``HaShell.aclose`` reaches the watchdog when the daemon stops (here by
    cancellation, the path every stop takes through ``run_node``): the fencer is told
    the daemon leaves, and exits once nothing is armed."""
    import trio

    from dvms.runtime.daemon import run_node
    from dvms.runtime.services.ha import WATCHDOGS, MemoryWatchdog, register_watchdog
    from dvms.wire.keys import write_key

    key = write_key(tmp_path / "cluster.key", bytes(range(32)))
    wd = MemoryWatchdog([])
    register_watchdog("test-close", lambda _uri, _state: wd)
    try:
        cfg = replace(
            NodeConfig.local(),
            state_dir=str(tmp_path),
            hostname="h0",
            listen="127.0.0.1:0",
            key_file=str(key),
            watchdog="test-close",
        )
        async with trio.open_nursery() as nursery:
            await nursery.start(run_node, cfg)
            assert not wd.closed
            nursery.cancel_scope.cancel()
        assert wd.closed
    finally:
        del WATCHDOGS["test-close"]
