"""A node with no state_dir or key_file in its config uses the platform's places
(``/var/lib/dvms`` and ``/etc/dvms/cluster.key`` as root, the user's XDG directories
otherwise), never the current directory; the CLI finds such a node's socket by itself."""

from __future__ import annotations

from pathlib import Path

import pytest

from dvms.cli.main import main
from dvms.runtime import config as config_mod
from dvms.runtime.config import NodeConfig, default_key_file, default_state_dir, load_config
from dvms.wire.keys import load_key


@pytest.fixture
def as_user(monkeypatch, tmp_path):
    monkeypatch.setattr(config_mod, "_is_root", lambda: False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("DVMS_SOCKET", raising=False)
    return tmp_path


def test_root_uses_the_system_places(monkeypatch):
    monkeypatch.setattr(config_mod, "_is_root", lambda: True)
    assert default_state_dir() == Path("/var/lib/dvms")
    assert default_key_file() == Path("/etc/dvms/cluster.key")
    assert NodeConfig().control_socket == Path("/var/lib/dvms/dvms.sock")


def test_a_user_gets_the_xdg_places(as_user):
    assert default_state_dir() == as_user / "data" / "dvms"
    assert default_key_file() == as_user / "config" / "dvms" / "cluster.key"


def test_xdg_unset_falls_back_to_home(monkeypatch, tmp_path):
    monkeypatch.setattr(config_mod, "_is_root", lambda: False)
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_state_dir() == tmp_path / ".local" / "share" / "dvms"
    assert default_key_file() == tmp_path / ".config" / "dvms" / "cluster.key"


def test_the_defaults_never_name_the_current_directory(as_user, monkeypatch, tmp_path):
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    cfg = load_config(None)
    for path in (cfg.state_path, cfg.key_path, cfg.control_socket):
        assert path.is_absolute()
        assert cwd not in path.parents
    assert cfg.state_path == default_state_dir()


def test_an_explicit_state_dir_and_key_file_win(as_user, tmp_path):
    cfg = load_config(None, overrides={"state_dir": "/srv/n1", "key_file": "/srv/k"})
    assert cfg.state_path == Path("/srv/n1")
    assert cfg.key_path == Path("/srv/k")
    assert cfg.control_socket == Path("/srv/n1/dvms.sock")


def test_keygen_without_a_file_writes_where_nodes_look(as_user, capsys):
    assert main(["keygen"]) == 0
    assert load_key(default_key_file())
    assert str(default_key_file()) in capsys.readouterr().out


def test_the_cli_names_the_default_socket_when_no_node_runs(as_user, capsys):
    assert main(["status"]) == 1
    err = capsys.readouterr().err
    assert "--socket" in err
    assert str(default_state_dir() / "dvms.sock") in err
