"""Scenario loading: shipped files, defaults, and errors that name the key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dvms.partition.config import PartitionConfig
from dvms.sim.scenario import (
    SCENARIO_DIR,
    Scenario,
    ScenarioError,
    load_scenario,
    scenario_from_dict,
)


@pytest.mark.parametrize("hosts", [64, 256, 1024, 4096])
def test_vmplaces_scenarios_follow_the_reference(hosts: int) -> None:
    scn = load_scenario(f"vmplaces-{hosts}")
    assert scn.name == f"vmplaces-{hosts}"
    assert (scn.hosts.count, scn.hosts.cpu_capacity, scn.hosts.memory_mib) == (hosts, 700, 32768)
    assert (scn.vms.per_host, scn.vms.vcpus, scn.vms.memory_mib) == (10, 1, 1024)
    assert (scn.load.mu, scn.load.sigma, scn.load.mean_interval_per_vm_s) == (60, 20, 300)
    assert (scn.duration_s, scn.seed, scn.monitor_period_s) == (3600, 23, 1.0)
    assert scn.topology.kind == "lan" and scn.topology.lan_rtt_s == pytest.approx(50e-6)
    assert scn.centralized_time_limit_s == min(30.0, hosts / 8)
    assert scn.n_vms == hosts * 10


def test_smoke_and_locality_scenarios() -> None:
    smoke = load_scenario("smoke")
    assert (smoke.hosts.count, smoke.vms.per_host, smoke.duration_s) == (1000, 10, 600)
    loc = load_scenario(SCENARIO_DIR / "locality-4sites.toml")
    assert loc.topology.kind == "sites" and len(loc.topology.sites) == 4
    assert len(loc.topology.wan_rtt_ms) == 4


def test_defaults_are_vmplaces() -> None:
    scn = scenario_from_dict({"hosts": {"count": 8}})
    assert scn.hosts.cpu_capacity == 700 and scn.load.model == "vmplaces"
    assert scn.scheduler.centralized_period_s == 30 and scn.solver_time == "model"


def test_scheduler_partition_is_the_partition_config() -> None:
    """One set of defaults: the daemon's; a scenario sets what differs."""
    assert scenario_from_dict({}).scheduler.partition == PartitionConfig()
    scn = scenario_from_dict({"scheduler": {"partition": {"lease_s": 4.5, "recruitment": "ring"}}})
    assert scn.scheduler.partition == PartitionConfig(lease_s=4.5, recruitment="ring")


def test_shipped_scenarios_keep_the_vmplaces_partition_settings() -> None:
    for path in sorted(SCENARIO_DIR.glob("*.toml")):
        part = load_scenario(path).scheduler.partition
        assert part.lease_s == 4.5 and part.min_partition_size in (4, 8), path.name


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"hosts": {"count": "ten"}}, "[hosts] count: expected an integer, got 'ten'"),
        (
            {"hosts": {"cnt": 3}},
            "[hosts] unknown key 'cnt' (known: count, cpu_capacity, memory_mib)",
        ),
        ({"hostz": {}}, "unknown key 'hostz' (known: duration_s, faults, ha, hosts, images,"),
        ({"hosts": {"count": 0}}, "hosts.count: must be > 0"),
        ({"load": {"mu": "high"}}, "[load] mu: expected a number"),
        ({"load": {"initial": "max"}}, "load.initial"),
        ({"load": {"model": "weibull"}}, "load.model: unknown model"),
        ({"solver_time": "fast"}, "solver_time: expected 'model' or 'measured'"),
        ({"topology": {"kind": "mesh"}}, "topology.kind"),
        (
            {"topology": {"kind": "sites", "sites": ["a", "b"], "wan_rtt_ms": [[0, 1]]}},
            "topology.wan_rtt_ms: must be a 2 x 2 table",
        ),
        ({"topology": {"kind": "matrix"}}, "topology.matrix_file"),
        ({"faults": {"crash": [{"host": 99}]}, "hosts": {"count": 4}}, "faults.crash[0].host"),
        ({"faults": {"site_cut": [{"site": "x"}]}}, "faults.site_cut[0].site: unknown site"),
        ({"faults": {"message_loss": 1.5}}, "faults.message_loss"),
        (
            {"scheduler": {"recruitment": "ring"}},
            "scheduler.recruitment: now [scheduler.partition] recruitment",
        ),
        (
            {"scheduler": {"partition_lease_s": 4.5}},
            "scheduler.partition_lease_s: now [scheduler.partition] lease_s",
        ),
        (
            {"scheduler": {"partition": {"recruitment": "near"}}},
            "[scheduler.partition] recruitment: expected one of vivaldi, ring, random, got 'near",
        ),
        (
            {"scheduler": {"partition": {"leese_s": 4.5}}},
            "[scheduler.partition] unknown key 'leese_s' (known: action_timeout_s,",
        ),
        (
            {"scheduler": {"partition": {"keepalive_s": 5.0}}},
            "[scheduler.partition] keepalive_s must be shorter than lease_s",
        ),
        ({"scheduler": {"dvms": {"join_rate_per_s": 0}}}, "[scheduler.dvms] join_rate_per_s"),
        ({"vms": {"per_host": 40}}, "vms.per_host: the VMs of one host do not fit"),
        ({"duration_s": True}, "duration_s: expected a number"),
    ],
)
def test_errors_name_the_key(data: dict, message: str) -> None:
    with pytest.raises(ScenarioError, match=re.escape(message)):
        scenario_from_dict(data)


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match=r"shipped scenarios: .*vmplaces-64"):
        load_scenario("no-such-scenario")
    bad = tmp_path / "bad.toml"
    bad.write_text("[hosts\ncount = 3\n")
    with pytest.raises(ScenarioError, match=r"bad\.toml"):
        load_scenario(bad)
    ok = tmp_path / "tiny.toml"
    ok.write_text("[hosts]\ncount = 3\n[scheduler.extra]\nfoo = 1\n")
    scn = load_scenario(ok)
    assert scn.name == "tiny" and scn.base_dir == str(tmp_path)
    assert scn.scheduler.extra == {"foo": 1}


def test_matrix_file_relative_to_the_scenario(tmp_path: Path) -> None:
    from dvms.sim.topology import build_topology

    (tmp_path / "m.txt").write_text("0 10 20\n10 0 30\n20 30 0\n")
    f = tmp_path / "s.toml"
    f.write_text('[hosts]\ncount = 6\n[topology]\nkind = "matrix"\nmatrix_file = "m.txt"\n')
    topo = build_topology(load_scenario(f))
    assert topo.site_of == [0, 1, 2, 0, 1, 2]
    assert topo.latency.rtt(0, 2) == pytest.approx(0.020)
    f.write_text('[hosts]\ncount = 6\n[topology]\nkind = "matrix"\nmatrix_file = "nope.txt"\n')
    with pytest.raises(ScenarioError, match=r"topology\.matrix_file: no such file"):
        build_topology(load_scenario(f))


def test_scenario_is_frozen() -> None:
    scn = Scenario()
    with pytest.raises(AttributeError):
        scn.seed = 1  # type: ignore[misc]
