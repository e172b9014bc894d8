"""The node TOML: profiles, component tables, flags, and one-line errors naming the table."""

from __future__ import annotations

import re
import tomllib
from dataclasses import replace
from pathlib import Path

import pytest

from dvms.configfile import as_table
from dvms.overlay.config import KademliaConfig
from dvms.partition.config import PartitionConfig
from dvms.runtime.config import PROFILES, ConfigError, HostConfig, NodeConfig, load_config

DOC = Path(__file__).resolve().parents[2] / "docs" / "daemon.md"


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "node.toml"
    path.write_text(text)
    return str(path)


def documented_example() -> str:
    """The ```toml block of docs/daemon.md's Configuration section."""
    section = DOC.read_text().split("## Configuration", 1)[1]
    return section.split("```toml\n", 1)[1].split("```", 1)[0]


def test_the_documented_example_is_every_key_at_its_default(tmp_path: Path) -> None:
    text = documented_example()
    assert load_config(write(tmp_path, text)) == NodeConfig()
    data = tomllib.loads(text)
    assert data.pop("profile") == "lan"
    assert data == as_table(NodeConfig.lan())  # complete: no key left out


def test_profiles_differ_only_in_the_overlay() -> None:
    assert NodeConfig() == NodeConfig.lan()
    assert NodeConfig.wan() == replace(NodeConfig(), overlay=KademliaConfig.wan())
    assert NodeConfig.local() == replace(NodeConfig(), overlay=KademliaConfig.local())
    assert {NodeConfig.profile(p) for p in PROFILES} == {
        NodeConfig.lan(),
        NodeConfig.wan(),
        NodeConfig.local(),
    }


def test_the_daemon_defaults_are_the_components_defaults() -> None:
    cfg = load_config(None)
    assert cfg.partition == PartitionConfig() and cfg.partition.lease_s == 3.5
    assert cfg.host == HostConfig(cpus=8, memory_mib=16384)


def test_tables_change_the_profile_and_flags_change_the_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'profile = "wan"\nlisten = "0.0.0.0:7401"\n'
        '[overlay]\nk = 10\n[partition]\nlease_s = 4.5\nrecruitment = "ring"\n'
        "[host]\ncpus = 2\n",
    )
    cfg = load_config(path)
    assert cfg.overlay == replace(KademliaConfig.wan(), k=10)
    assert cfg.partition == PartitionConfig(lease_s=4.5, recruitment="ring")
    assert cfg.host == HostConfig(cpus=2) and cfg.listen == "0.0.0.0:7401"
    flags = {"partition.recruitment": "random", "host.memory_mib": 512, "listen": None}
    cfg = load_config(path, profile="local", overrides=flags)
    assert cfg.overlay == replace(KademliaConfig.local(), k=10)
    assert cfg.partition == PartitionConfig(lease_s=4.5, recruitment="random")
    assert cfg.host == HostConfig(cpus=2, memory_mib=512) and cfg.listen == "0.0.0.0:7401"


def test_service_tables(tmp_path: Path) -> None:
    text = (
        "[runner]\nstop_grace_s = 5.0\n[monitor]\nperiod_s = 0.5\n[state]\nreplicas = 3\n"
        "[vjobs]\nkeeper_period_s = 1\n[namespaces.effects]\nrun_timeout_s = 20.0\n"
        "[vm_driver]\nadopt_attempts = 4\n[control]\nrtt_probes = 5\n[tunnels]\nmtu = 1400\n"
    )
    cfg = load_config(write(tmp_path, text))
    assert (cfg.runner.stop_grace_s, cfg.monitor.period_s, cfg.state.replicas) == (5.0, 0.5, 3)
    assert cfg.vjobs.keeper_period_s == 1.0 and isinstance(cfg.vjobs.keeper_period_s, float)
    assert cfg.namespaces.effects.run_timeout_s == 20.0 and cfg.namespaces.attempts == 8
    assert cfg.vm_driver.adopt_attempts == 4
    assert cfg.control.rtt_probes == 5 and cfg.control.vjob_wait_s == 300.0
    assert cfg.tunnels.mtu == 1400 and cfg.tunnels.vxlan_port == 4789
    with pytest.raises(ConfigError, match=r"\[namespaces\.effects\] unknown key 'run_s'"):
        load_config(write(tmp_path, "[namespaces.effects]\nrun_s = 1\n"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[partition]\nleese_s = 3.0\n", "node.toml: [partition] unknown key 'leese_s' (known: "),
        ("[partition]\nlease_s = 'long'\n", "node.toml: [partition] lease_s: expected a number"),
        ("[overlay]\nk = 2.5\n", "node.toml: [overlay] k: expected an integer, got 2.5"),
        ("[vivaldi]\nce = 0.0\n", "node.toml: [vivaldi] ce and cc must be in (0, 1]"),
        ("[placement]\nload = 'x'\n", "node.toml: [placement] unknown load function 'x'"),
        (
            "[partition]\nkeepalive_s = 4.0\n",
            "node.toml: [partition] keepalive_s must be shorter than lease_s",
        ),
        (
            "[partition]\nrecruitment = 'nearest'\n",
            "node.toml: [partition] recruitment: expected one of vivaldi, ring, random",
        ),
        ("[host]\ncpus = 0\n", "node.toml: [host] cpus and memory_mib must be at least 1"),
        ("[tunnels]\nmtu = 9\n", "node.toml: [tunnels] mtu must be in 68..65535, not 9"),
        ("partition = 3\n", "node.toml: partition: expected a table, got 3"),
        ("seeds = 'a:1'\n", "node.toml: seeds: expected an array, got 'a:1'"),
        ("seeds = ['a']\n", "node.toml: seed 'a' must be host:port"),
        ("nodes = 3\n", "node.toml: unknown key 'nodes' (known: control, files, guests, ha, host,"),
        ("recruitment = 'ring'\n", "node.toml: recruitment: now [partition] recruitment"),
        ("host_cpus = 4\n", "node.toml: host_cpus: now [host] cpus"),
        ("profile = 'moon'\n", "node.toml: profile must be one of lan, wan, local, not 'moon'"),
        ("network = 'ovs'\n", "node.toml: network must be pyroute2 or fake"),
        (
            "watchdog = 'ipmi'\n",
            "node.toml: watchdog must be one of memory, none, process, not 'ipmi'",
        ),
        ("[partition\n", "node.toml: "),
    ],
)
def test_errors_are_one_line_naming_table_and_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)) as err:
        load_config(write(tmp_path, text))
    assert "\n" not in str(err.value)


def test_flag_errors_say_command_line() -> None:
    with pytest.raises(ConfigError, match=r"^command line: listen 'x' must be host:port"):
        load_config(None, overrides={"listen": "x"})
    with pytest.raises(ConfigError, match=r"does not exist"):
        load_config("/nonexistent/node.toml")
