"""What ``dvms lab up`` writes, checked without root: every host's node.toml loads as a
real host whose HA watchdog is the fencer, with the lab's ``[ha]`` overrides, and
``lab_vjob(ha=True)`` is a vjob of HA guests."""

from __future__ import annotations

import tomllib
from pathlib import Path

from dvms.ha import HaConfig
from dvms.placement.vjob import vjob_from_dict
from dvms.runtime.config import load_config
from dvms.runtime.lab import LabConfig, _node_toml, lab_vjob


def test_a_lab_host_runs_the_fencer_with_the_labs_ha_parameters(tmp_path: Path) -> None:
    cfg = LabConfig(ha=(("lease_s", 6.0), ("renew_period_s", 1.0)))
    path = tmp_path / "node.toml"
    path.write_text(_node_toml(tmp_path, 2, "10.231.0.2", cfg))
    node = load_config(str(path))
    assert node.watchdog == "process"
    assert node.hypervisor_uri == "qemu+tcp://10.231.0.2/system"
    assert (node.ha.lease_s, node.ha.renew_period_s) == (6.0, 1.0)
    assert node.ha.guardians == HaConfig().guardians  # the rest at HaConfig's defaults
    path.write_text(_node_toml(tmp_path, 2, "10.231.0.2", LabConfig()))
    assert load_config(str(path)).ha.lease_s == 10.0


def test_lab_vjob_asks_for_ha_guests_only_when_told() -> None:
    text = lab_vjob("file:lab/kernel", "file:lab/initrd", 3, spread=False, ha=True)
    spec = vjob_from_dict(tomllib.loads(text), where="vjob.toml")
    assert [v.ha_policy is not None and v.ha_policy.enabled for v in spec.vms] == [True] * 3
    plain = vjob_from_dict(tomllib.loads(lab_vjob("k", "i", 2)), where="vjob.toml")
    assert [v.ha_policy for v in plain.vms] == [None, None]
