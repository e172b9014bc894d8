"""The daemon's HA shell: the watchdog registry, and ``ArmWatchdog``'s absolute time
turned into seconds from now on the runtime's clock, with this host's HA guests."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import pytest
import trio
import trio.testing

from dvms.ha import ArmWatchdog
from dvms.hypervisor.base import DomainState, open_hypervisor
from dvms.partition.messages import LaunchVm
from dvms.placement.hapolicy import HaPolicy
from dvms.placement.spec import VmSpec
from dvms.runtime.capabilities import Handlers
from dvms.runtime.control.commands import restarting_rows
from dvms.runtime.fencer import ProcessWatchdog
from dvms.runtime.messages import HaQuery, HaRow
from dvms.runtime.services.ha import (
    WATCHDOGS,
    HaShell,
    MemoryWatchdog,
    NoWatchdog,
    default_watchdog,
    open_watchdog,
)
from dvms.runtime.services.monitor import HostMonitor
from dvms.runtime.services.vm_driver import VmDriver


def test_the_registry_defaults_by_hypervisor_and_refuses_unknown_names(tmp_path):
    # test:/// guests live in the daemon's process: nothing to stop
    assert isinstance(open_watchdog("", "test:///x", tmp_path), NoWatchdog)
    # a real hypervisor: the fencer process, its files in the state directory (it is
    # started at the first arming, not here)
    wd = open_watchdog("", "qemu+tcp://10.0.0.1/system", tmp_path)
    assert isinstance(wd, ProcessWatchdog)
    assert (wd.uri, wd.state_dir) == ("qemu+tcp://10.0.0.1/system", tmp_path)
    assert wd.pid is None and not list(tmp_path.iterdir())
    assert isinstance(open_watchdog("none", "qemu:///system", tmp_path), NoWatchdog)
    assert isinstance(open_watchdog("memory", "test:///x", tmp_path), MemoryWatchdog)
    assert isinstance(open_watchdog("process", "test:///x", tmp_path), ProcessWatchdog)
    with pytest.raises(ValueError, match="unknown watchdog 'nosuch'"):
        open_watchdog("nosuch", "test:///x", tmp_path)
    assert {"none", "memory", "process"} <= set(WATCHDOGS)
    assert default_watchdog("test:///x") == "none"
    assert default_watchdog("qemu:///system") == "process"


def _shell(watchdog: MemoryWatchdog) -> HaShell:
    owned = {
        ("ns", "a"): SimpleNamespace(fenced=False),
        ("", "b"): SimpleNamespace(fenced=False),
        ("ns", "c"): SimpleNamespace(fenced=True),  # fenced: no longer the watchdog's
    }
    node = SimpleNamespace(ha=SimpleNamespace(owned=owned))

    async def apply(_effects: list) -> None:
        return None

    return HaShell(node, SimpleNamespace(), watchdog, apply=apply)  # type: ignore[arg-type]


async def test_arm_gives_seconds_from_now_and_the_hosts_ha_domains(autojump_clock):
    wd = MemoryWatchdog([])
    shell = _shell(wd)
    await trio.sleep(100.0)
    now = trio.current_time()
    await shell.arm(ArmWatchdog(now + 7.5))
    await shell.arm(ArmWatchdog(None))
    assert wd.calls == [(7.5, ("b", "ns:a")), (None, ())]
    await shell.aclose()
    assert wd.closed


NODE_XML = """<node><cpu><mhz>2000</mhz><model>i686</model><active>4</active><nodes>1</nodes>
  <sockets>1</sockets><cores>4</cores><threads>1</threads></cpu><memory>8388608</memory></node>"""


@pytest.fixture
async def host(tmp_path):
    pytest.importorskip("libvirt", reason="libvirt-python not installed (needs libvirt-dev)")
    path = tmp_path / "h.xml"
    path.write_text(NODE_XML)
    hv = open_hypervisor("libvirt", f"test://{path}", host="h")
    yield hv
    await hv.aclose()


async def test_a_starting_daemon_fences_every_ha_domain_it_finds(host):
    """Its leases may have ended while it was down: the HA copies go (destroyed or
    paused as their metadata says), the others stay."""
    await host.create(VmSpec("plain", namespace="n"))
    await host.create(VmSpec("d", namespace="n", ha_policy=HaPolicy("restart"), ha_generation=3))
    await host.create(VmSpec("p", ha_policy=HaPolicy("restart", fence="pause")))
    mon = HostMonitor(host, "h", "test:///")
    shell = HaShell(SimpleNamespace(ha=None), mon, NoWatchdog(), apply=None)  # type: ignore[arg-type]
    assert sorted(await shell.fence_at_start()) == ["n:d", "p"]
    state = {v.key: (v.state, v.ha_generation) for v in await host.list_vms()}
    assert state == {"n:plain": (DomainState.RUNNING, 0), "p": (DomainState.PAUSED, 1)}


async def test_a_newer_generation_replaces_a_stopped_older_copy(host, tmp_path):
    """A copy fenced by pausing it stays; the VM restarted onto the same host later
    replaces it instead of failing on the name."""
    policy = HaPolicy("restart", fence="pause")
    await host.create(VmSpec("p", ha_policy=policy))
    await host.suspend("p")
    mon = HostMonitor(host, "h", "test:///")
    driver = VmDriver(mon, requests=None, directory=None, handlers=Handlers())  # type: ignore[arg-type]
    newer = LaunchVm.from_spec(VmSpec("p", ha_policy=policy, ha_generation=2))
    assert await driver.create(newer) == (True, "")
    (v,) = await host.list_vms()
    assert (v.state, v.ha_generation) == (DomainState.RUNNING, 2)
    same = LaunchVm.from_spec(VmSpec("p", ha_policy=policy, ha_generation=2))
    ok, why = await driver.create(replace(same, memory_mib=999))
    assert not ok and why, "a running copy is never replaced here"


def _restart(state: str, gen: int, yes: int, vm: LaunchVm) -> SimpleNamespace:
    return SimpleNamespace(state=state, gen=gen, yes=set(range(yes)), vm=vm)


async def test_a_guardian_answers_vm_info_with_the_restarts_it_drives():
    """Only restarts past the first vote (a proposal alone does not mean the owner is
    gone), of the namespace asked, with the size the VM had."""
    small = LaunchVm.from_spec(VmSpec("a", namespace="ns", vcpus=2, memory_mib=512))
    restarts = {
        ("ns", "a"): _restart("launching", 3, 3, small),
        ("ns", "b"): _restart("voting", 2, 1, small),  # proposed only
        ("ns", "c"): _restart("failed", 5, 3, small),
        ("other", "d"): _restart("queued", 2, 3, small),
    }
    node = SimpleNamespace(ha=SimpleNamespace(restarts=restarts))
    shell = HaShell(node, SimpleNamespace(name="h7"), NoWatchdog(), apply=None)  # type: ignore[arg-type]
    reply = await shell.answer(HaQuery("ns"))
    assert reply.host == "h7"
    assert [(r.name, r.state, r.generation, r.vcpus, r.memory_mib) for r in reply.rows] == [
        ("a", "restarting", 3, 2, 512),
        ("c", "failed", 5, 2, 512),
    ]
    everywhere = await shell.answer(HaQuery(None))
    assert sorted(r.name for r in everywhere.rows) == ["a", "c", "d"]


def _row(name: str, state: str, gen: int, ha: str = "ok") -> dict:
    return {"name": name, "namespace": "", "state": state, "generation": gen, "ha": ha}


def test_vm_info_lists_a_vm_being_restarted_until_its_new_copy_runs():
    rows = [
        _row("up", "RUNNING", 4),  # restarted already: generation 4 runs
        _row("old", "PAUSED", 1, "fenced"),  # its fenced copy is not the restart
        _row("new", "RUNNING", 2, "fenced"),  # created, not adopted yet: it runs
    ]
    restarts = [
        HaRow("up", "", "restarting", 4),
        HaRow("old", "", "restarting", 2, 1, 256),
        HaRow("old", "", "restarting", 2, 1, 256),  # two guardians report it
        HaRow("new", "", "restarting", 2),
        HaRow("gone", "", "failed", 3),
        HaRow("gone", "", "restarting", 2),  # an older report
    ]
    out = {r["name"]: r for r in restarting_rows(rows, restarts)}
    assert sorted(out) == ["gone", "old"]
    assert out["old"] == {
        "name": "old",
        "state": "RESTARTING",
        "host": "",
        "namespace": "",
        "vcpus": 1,
        "memory": 256,
        "ha": "restarting",
        "generation": 2,
    }
    assert (out["gone"]["state"], out["gone"]["generation"]) == ("FAILED", 3)
