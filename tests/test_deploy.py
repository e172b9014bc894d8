"""deploy/ holds what a real host needs: node.toml loads as written (a real libvirt
hypervisor, pyroute2 networks), and the systemd unit runs a command dvms accepts, with
that file."""

from __future__ import annotations

import configparser
import shlex
from pathlib import Path

from dvms.cli.main import build_parser
from dvms.runtime.config import load_config

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


def test_the_annotated_node_toml_loads_as_a_real_host() -> None:
    cfg = load_config(str(DEPLOY / "node.toml"))
    assert cfg.hypervisor == "qemu:///system"
    assert cfg.network_backend == "pyroute2"
    assert cfg.key_path == Path("/etc/dvms/cluster.key")
    assert cfg.control_socket == Path("/var/lib/dvms/dvms.sock")


def test_the_systemd_unit_runs_dvms_node_run_with_that_file() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read(DEPLOY / "dvms.service")
    exec_start = shlex.split(unit["Service"]["ExecStart"])
    assert exec_start[0].endswith("/dvms")
    args = build_parser().parse_args(exec_start[1:])
    assert args.config == "/etc/dvms/node.toml"
    assert Path(args.config).name == "node.toml"
    assert unit["Service"]["StateDirectory"] == "dvms"  # = /var/lib/dvms, node.toml's
