"""The daemon's HA shell: the watchdog registry, and ``ArmWatchdog``'s absolute time
turned into seconds from now on the runtime's clock, with this host's HA guests."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import trio
import trio.testing

from dvms.ha import ArmWatchdog
from dvms.runtime.services.ha import (
    WATCHDOGS,
    HaShell,
    MemoryWatchdog,
    NoWatchdog,
    open_watchdog,
)


def test_the_registry_opens_none_by_default_and_refuses_unknown_names():
    assert isinstance(open_watchdog("", "test:///x"), NoWatchdog)
    assert isinstance(open_watchdog("memory", "test:///x"), MemoryWatchdog)
    with pytest.raises(ValueError, match="unknown watchdog 'nosuch'"):
        open_watchdog("nosuch", "test:///x")
    assert {"none", "memory"} <= set(WATCHDOGS)


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
