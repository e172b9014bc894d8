"""The HA policy where users write it: vjob files and ``vm config``."""

from __future__ import annotations

import pytest

from dvms.namespace import Cluster, Console
from dvms.placement import Host
from dvms.placement.hapolicy import HaPolicy
from dvms.placement.vjob import VjobError, vjob_from_dict


def _vjob(**vm: object) -> dict:
    return {"name": "j", "vms": [{"name": "a[1-2]", **vm}]}


def test_vjob_ha_keys_become_the_policy() -> None:
    spec = vjob_from_dict(
        _vjob(ha="restart", ha_priority="high", ha_fence="pause", ha_restart_attempts=5),
        where="j.toml",
    )
    assert spec.vms[0].ha_policy == HaPolicy("restart", "high", 5, 5.0, "pause")
    assert vjob_from_dict(_vjob(), where="j.toml").vms[0].ha_policy is None
    assert vjob_from_dict(_vjob(ha="off"), where="j.toml").vms[0].ha_policy is None


@pytest.mark.parametrize(
    ("vm", "message"),
    [
        ({"ha": "always"}, "j.toml: vms[0].ha: expected one of off, restart, got 'always'"),
        ({"ha_priority": "urgent"}, "vms[0].ha_priority: expected one of high, medium, low"),
        ({"ha_restart_attempts": 0}, "vms[0].ha_restart_attempts: expected an integer from 1"),
        ({"ha_fence": "kill"}, "vms[0].ha_fence: expected one of destroy, pause, got 'kill'"),
    ],
)
def test_vjob_bad_ha_values_name_the_key(vm: dict, message: str) -> None:
    with pytest.raises(VjobError) as err:
        vjob_from_dict(_vjob(**vm), where="j.toml")
    assert message in str(err.value) and "\n" not in str(err.value)


def _console() -> Console:
    hosts = tuple(Host(f"mm{i}", cpus=8, memory_mib=65536) for i in range(1, 4))
    return Console(Cluster(hosts=hosts, local="mm1"))


def test_vm_config_ha_fields() -> None:
    con = _console()
    for line in ("vm config ha restart", "vm config ha_priority high", "vm config ha_fence pause"):
        result = con.execute(line)
        assert result.ok, result.error
    result = con.execute("vm config ha_priority urgent")
    assert result.error == "vm config ha_priority: expected one of high, medium, low, got `urgent`"
    result = con.execute("vm config ha_restart_backoff_s soon")
    assert (
        result.error == "vm config ha_restart_backoff_s: expected a number of seconds, got `soon`"
    )
    dump = con.execute("vm config")
    assert "HA:" in str(dump.output) and "priority=high" in str(dump.output)
