"""``vm launch``: a batch whose launch event failed is launched again (``[namespaces.effects]
batch_attempts``, after ``batch_backoff_s``, doubled), and a batch that fails every
attempt is reported by its VMs, its host and the reason."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from dvms.namespace.config import VmConfig
from dvms.namespace.effects import Launch, PlacedVm
from dvms.partition.events import EventDone
from dvms.runtime.services.hostside import EffectRunner, EffectsConfig


class Launcher:
    """Fails the first ``fail`` launches of each batch (by its first VM) with ``reason``."""

    def __init__(self, fail: dict[str, int], reason: str = "only 1 node(s) could be recruited"):
        self.fail = dict(fail)
        self.reason = reason
        self.calls: list[tuple[float, tuple[str, ...]]] = []

    async def launch(self, vms: Any, constraints: Any) -> EventDone:
        names = tuple(v.name for v in vms)
        self.calls.append((trio.current_time(), names))
        left = self.fail.get(names[0], 0)
        if left:
            self.fail[names[0]] = left - 1
            return EventDone(1, "launch", False, self.reason, 0.0, 0.0)
        return EventDone(1, "launch", True, "", 0.0, 0.0)


class Service:
    def __init__(self) -> None:
        self.failed: dict[str, str] | None = None

    async def launched(self, namespace: str, schedule: int, failed: dict[str, str]) -> None:
        self.failed = failed


def runner(launcher: Launcher, service: Service) -> EffectRunner:
    cfg = EffectsConfig(launch_batch=2, batch_attempts=3, batch_backoff_s=1.0)
    run = EffectRunner(service, requests=None, peers=None, launcher=launcher, config=cfg)  # type: ignore[arg-type]

    async def verb(namespace: str, verb: str, vms: Any) -> list[str]:
        return []  # the stop after the launch: no hosts here

    run._verb = verb  # type: ignore[method-assign]
    return run


def launch(*names: str, host: str = "node1") -> Launch:
    return Launch("big", tuple(PlacedVm(n, host, "kvm", VmConfig()) for n in names), 0)


async def test_a_failed_batch_is_launched_again_after_a_back_off(autojump_clock):
    launcher, service = Launcher({"vm3": 2}), Service()
    errors = await runner(launcher, service).run([launch("vm1", "vm2", "vm3", "vm4")])
    assert errors == []
    assert service.failed == {}
    batches = [names for _, names in launcher.calls]
    assert batches == [("vm1", "vm2"), ("vm3", "vm4"), ("vm3", "vm4"), ("vm3", "vm4")]
    times = [t for t, _ in launcher.calls]
    assert times[2] - times[1] == pytest.approx(1.0)  # batch_backoff_s
    assert times[3] - times[2] == pytest.approx(2.0)  # doubled


async def test_a_batch_that_fails_every_attempt_is_named_with_its_host_and_reason(autojump_clock):
    launcher, service = Launcher({"vm1": 5, "vm5": 5}, reason="every node busy"), Service()
    errors = await runner(launcher, service).run([launch("vm1", "vm2", "vm3", "vm4", "vm5")])
    assert len(launcher.calls) == 3 + 1 + 3
    assert errors == [
        "vm launch: vm[1-2,5] (3 VMs, host node1) not launched after 3 attempt(s): every node busy"
    ]
    assert service.failed == {n: "every node busy" for n in ("vm1", "vm2", "vm5")}


def test_batch_attempts_must_be_positive():
    with pytest.raises(ValueError, match="batch_attempts"):
        EffectsConfig(batch_attempts=0)
