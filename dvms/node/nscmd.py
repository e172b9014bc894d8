"""minimega's namespace API on a daemon: ``dvms.namespace.execute`` with the cluster as
the hypervisors report it, and its effects carried out through partitions.

::

    words --gather HostQuery--> Cluster(hosts, vms, local) --execute--> Result
    Launch(ns, vms on assigned hosts) --> one partition launch event whose VMs are pinned
        (a fence each) to the interpreter's hosts --> launch_finished(failed=...)
    Kill(ns, vms)                    --> KillVms to every node

The namespace state (hosts, VM configs, queue, schedule status) and the active namespace
are kept by the node you talk to, in memory. Not yet: replication of the state in DHT
records (another node does not see this node's namespaces), and the effects Start, Stop,
Flush, Migrate, SetBridge, DelBridge, ClearNamespace, RunOnHosts: a command that would
produce one is refused with its state unchanged.
"""

from __future__ import annotations

import random
import time
from dataclasses import replace
from typing import Any

from dvms.namespace import (
    Cluster,
    Context,
    Kill,
    Launch,
    Result,
    Session,
    State,
    execute,
    launch_finished,
    render_json,
    render_text,
)
from dvms.node.messages import HostQuery, HostReply, KillVms
from dvms.node.runner import NodeRunner
from dvms.partition.messages import LaunchVm, WireConstraint
from dvms.placement import Host, Vm

__all__ = ["NamespaceService"]

_SUPPORTED = (Launch, Kill)


class NamespaceService:
    def __init__(self, runner: NodeRunner) -> None:
        self.runner = runner
        self.state = State()
        self.session = Session()
        self._rng = random.Random()

    async def cluster(self) -> Cluster:
        replies, _ = await self.runner.gather(HostQuery(None))
        hosts = [r for r in replies if isinstance(r, HostReply)]
        return Cluster(
            hosts=tuple(Host(h.name, cpus=h.cpus, memory_mib=h.memory_mib) for h in hosts),
            vms=tuple(
                Vm(v.name, v.namespace, v.vcpus, v.memory_mib, host=h.name)
                for h in hosts
                for v in h.vms
            ),
            local=self.runner.monitor.name,
        )

    async def execute(self, words: list[str]) -> dict[str, Any]:
        ctx = Context(
            self.state,
            await self.cluster(),
            self.session,
            now=time.time(),
            bridge_key=self._rng.getrandbits(24),
        )
        result = execute(words, ctx)
        unsupported = sorted({type(e).__name__ for e in result.effects} - _names(_SUPPORTED))
        if result.ok and unsupported:
            result = Result(
                ctx.state,
                ctx.session,
                error=f"not supported by the daemon yet: {', '.join(unsupported)}",
            )
        if result.ok:
            self.state, self.session = result.state, result.session
        errors: list[str] = []
        for eff in result.effects:
            if isinstance(eff, Launch):
                errors += await self._launch(eff)
            elif isinstance(eff, Kill):
                names = tuple(name for name, _host in eff.vms)
                await self.runner.gather(KillVms(eff.namespace, names))
        out = render_json(result)
        out["text"] = render_text(result)
        if errors:
            out["ok"], out["error"] = False, "; ".join(errors)
            out["text"] += "".join(f"E: {e}\n" for e in errors)
        return out

    async def _launch(self, eff: Launch) -> list[str]:
        # The interpreter chose each host (colocate and schedule included): pin each VM
        # there with a fence on its qualified key. (A ``schedule`` field would do, but
        # dvms/partition/solve.py resolves minimega's fields without the namespace.)
        vms = tuple(
            LaunchVm.from_spec(
                replace(vm.config.spec(vm.name, eff.namespace), schedule=None, colocate=None)
            )
            for vm in eff.vms
        )
        pins = tuple(
            WireConstraint("fence", (_key(eff.namespace, vm.name),), (vm.host,)) for vm in eff.vms
        )
        done = await self.runner.launch(vms, pins)
        failed = {} if done.ok else {vm.name: done.reason for vm in eff.vms}
        self.state = launch_finished(
            self.state, eff.namespace, eff.schedule, failed, now=time.time()
        )
        return [f"vm launch: {done.reason}"] if not done.ok else []


def _key(namespace: str, name: str) -> str:
    return f"{namespace}/{name}" if namespace else name


def _names(types: tuple[type, ...]) -> set[str]:
    return {t.__name__ for t in types}
