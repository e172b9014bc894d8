"""The package installs anywhere: a wheel built from this tree, installed in a fresh
virtualenv outside the repository, runs a shipped simulation, the placement engine and
a local cluster from an unrelated directory, and keeps its state in the platform's
places (never the current directory)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow

MODEL = """
relief = true

[[hosts]]
name = "h1"
cpus = 4
memory = 16384
  [[hosts.vms]]
  name = "hot"
  vcpus = 4
  memory = 2048
  cpu_demand = 3.5
  [[hosts.vms]]
  name = "warm"
  vcpus = 2
  memory = 2048
  cpu_demand = 1.5

[[hosts]]
name = "h2"
cpus = 4
memory = 16384
"""


def _run(cmd: list[str], *, cwd: Path, env: dict[str, str], timeout: float = 300) -> str:
    out = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert out.returncode == 0, f"{cmd} exited {out.returncode}:\n{out.stdout}\n{out.stderr}"
    return out.stdout


def test_a_wheel_installs_in_a_fresh_venv_and_works_from_any_directory(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DVMS_SOCKET")}
    home = tmp_path / "home"
    env |= {"HOME": str(home), "XDG_DATA_HOME": "", "XDG_CONFIG_HOME": ""}
    dist, venv, work = tmp_path / "dist", tmp_path / "venv", tmp_path / "work"
    work.mkdir()
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", dist, ROOT],
         cwd=tmp_path, env=env)  # fmt: skip
    (wheel,) = dist.glob("dvms-*.whl")
    _run([sys.executable, "-m", "venv", venv], cwd=tmp_path, env=env)
    _run([venv / "bin" / "pip", "install", "-q", wheel], cwd=tmp_path, env=env, timeout=600)
    dvms = venv / "bin" / "dvms"

    version = json.loads(_run([dvms, "version", "--json"], cwd=work, env=env))
    assert version["build"] == "installed"
    where = _run([venv / "bin" / "python", "-c", "import dvms; print(dvms.__file__)"],
                 cwd=work, env=env)  # fmt: skip
    assert Path(where.strip()).is_relative_to(venv), "dvms imported from outside the venv"

    sim = json.loads(_run([dvms, "sim", "run", "vmplaces-64", "--scheduler", "dvms", "--json"],
                          cwd=work, env=env))  # fmt: skip
    assert sim["scheduler"] == "dvms"
    assert sim["migrations"] > 0

    (work / "model.toml").write_text(MODEL)
    plan = json.loads(_run([dvms, "solve", "model.toml", "--json"], cwd=work, env=env))
    assert plan["status"] == "solved"

    cluster = work / "cluster"
    _run([dvms, "cluster", "up", "--nodes", "2", "--dir", cluster], cwd=work, env=env)
    try:
        status = json.loads(_run([dvms, "cluster", "status", "--dir", cluster, "--json"],
                                 cwd=work, env=env))  # fmt: skip
        assert [n["state"] for n in status["nodes"]] == ["up", "up"]
    finally:
        _run([dvms, "cluster", "down", "--dir", cluster], cwd=work, env=env)

    # Nothing written to the directory the commands ran in but what they were asked for.
    assert sorted(p.name for p in work.iterdir()) == ["cluster", "model.toml"]
