"""Every command's --json is one JSON object, with typed values and ISO-8601 times
(dvms/cli/output.py). Each leaf command of the parser is run here with --json, or
listed in NOT_RUN with the reason; a new command must join one or the other."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from dvms.cli.main import build_parser
from dvms.cli.output import TIME_KEYS
from dvms.cli.reference import commands

pytest.importorskip("libvirt", reason="libvirt-python not installed (needs libvirt-dev)")

ROOT = Path(__file__).resolve().parents[2]

#: Commands not run here, and why.
NOT_RUN = {
    "node run": "runs a daemon in the foreground; prints logs, not a document",
    "completion": "prints shell code for the shell to evaluate",
    "sim faithful": "a 24-node faithful run takes ~10 s; it emits through the same function",
    "sim overlay": "a network simulation; tests/sim/test_overlay_sim.py parses its --json",
    "lab up": "starts real hypervisor hosts (root, ~20 s); emits through the same function",
    "lab status": "needs a lab (root); emits through the same function",
    "lab down": "needs a lab (root); emits through the same function",
    "node revoke": "needs nodes configured with an operator key: tests/e2e/test_e2e_revoke.py "
    "runs it with --json",
}

TINY = 'name = "tiny"\nseed = 4\nduration_s = 120\n[hosts]\ncount = 12\n'
VJOB = 'name = "shape"\nnamespace = "shape"\n[[vms]]\nname = "j[1-2]"\nmemory = 512\n'


def _leaves() -> set[str]:
    out = set()
    for words, parser, _ in commands(build_parser()):
        if not any(isinstance(a, argparse._SubParsersAction) for a in parser._actions):
            out.add(" ".join(words[1:]))
    return out


def _run(tmp: Path, *argv: str) -> tuple[int, object, str]:
    env = {k: v for k, v in os.environ.items() if k != "DVMS_NAMESPACE"}
    env["DVMS_SOCKET"] = str(tmp / "c" / "node1" / "dvms.sock")
    out = subprocess.run([sys.executable, "-m", "dvms", "--json", *argv], cwd=tmp, env=env,
                         capture_output=True, text=True, timeout=180)  # fmt: skip
    try:
        doc = json.loads(out.stdout)
    except json.JSONDecodeError:
        doc = None
    return out.returncode, doc, out.stdout + out.stderr


def _check(doc: object, where: str) -> None:
    assert isinstance(doc, dict), f"{where}: --json printed {type(doc).__name__}, not an object"

    def walk(value: object, key: str) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                assert isinstance(k, str)
                walk(v, k)
        elif isinstance(value, list):
            for v in value:
                walk(v, key)
        elif key in TIME_KEYS and value is not None:
            assert isinstance(value, str) and value.endswith("Z"), f"{where}: {key}={value!r}"
            datetime.fromisoformat(value)

    walk(doc, "")


def test_every_command_prints_one_object_with_iso_times(tmp_path: Path) -> None:
    (tmp_path / "tiny.toml").write_text(TINY)
    (tmp_path / "v.toml").write_text(VJOB)
    (tmp_path / "s.mm").write_text("vm config memory 256\nvm info\n")
    (tmp_path / "f.bin").write_bytes(bytes(range(256)) * 4096)
    model = ROOT / "examples" / "models" / "overload.toml"
    c = str(tmp_path / "c")
    runs = {
        "keygen": ["keygen", str(tmp_path / "k.key")],
        "cluster up": ["cluster", "up", "--nodes", "3", "--dir", c, "--timeout", "90"],
        "status": ["status"],
        "peers": ["peers"],
        "submit": ["submit", "v.toml"],
        "vjob list": ["vjob", "list"],
        "vjob show": ["vjob", "show", "shape"],
        "vjob validate": ["vjob", "validate", "v.toml"],
        "vm info": ["vm", "info", "--all"],
        "vm show": ["vm", "show", "j1", "--namespace", "shape"],
        "host show": ["host", "show", "node2"],
        "vm config": ["namespace", "shape", "vm", "config", "vcpus", "1"],  # via namespace
        "vm launch": ["vm", "launch", "kvm", "m1"],
        "vm start": ["vm", "start", "m1"],
        "vm stop": ["vm", "stop", "m1"],
        "vm migrate": ["vm", "migrate", "m1", "node2"],
        "vm kill": ["vm", "kill", "m1"],
        "vm flush": ["vm", "flush"],
        "namespace": ["namespace"],
        "ns": ["ns", "hosts"],
        "script": ["script", "s.mm"],
        "host": ["host"],
        "partitions": ["partitions", "--all"],
        "events": ["events", "--all"],
        "audit show": ["audit", "show"],
        "audit verify": ["audit", "verify"],
        "rtt": ["rtt", "node2"],
        "members": ["members"],
        "keys list": ["keys", "list"],
        "keys install": ["keys", "install", "k.key"],
        "keys use": ["keys", "use", "k.key"],
        "keys remove": ["keys", "remove", "c/cluster.key"],
        "cluster status": ["cluster", "status", "--dir", c],
        "debug load": ["debug", "load", "--dir", c, "j1", "0.5", "--namespace", "shape"],
        "debug loads": ["debug", "loads", "--dir", c],
        "debug capacity": ["debug", "capacity", "0"],
        "vjob stop": ["vjob", "stop", "shape"],
        "vjob remove": ["vjob", "remove", "shape"],
        "clear": ["clear", "namespace", "shape"],
        "solve": ["solve", str(model)],
        "version": ["version"],
        "sim run": ["sim", "run", "tiny.toml"],
        "sim compare": ["sim", "compare", "tiny.toml", "--seeds", "1", "--out", "cmp"],
        "sim scaling": ["sim", "scaling", "cmp/results.json", "--out", "s.png"],
        "sim faults": ["sim", "faults", "--scenario", "tiny.toml", "--runs", "1"],
        "file add": ["file", "add", "f.bin", "--name", "shape/f"],
        "file get": ["file", "get", "shape/f", "--wait"],
        "file list": ["file", "list"],
        "file status": ["file", "status"],
        "file providers": ["file", "providers", "shape/f"],
        "file delete": ["file", "delete", "shape/f"],
        "node leave": ["node", "leave"],  # node1 stops; down stops the others
        "cluster down": ["cluster", "down", "--dir", c],
    }
    missing = _leaves() - set(runs) - set(NOT_RUN)
    assert not missing, f"commands neither run nor excused here: {sorted(missing)}"
    failures = []
    try:
        for name, argv in runs.items():
            code, doc, text = _run(tmp_path, *argv)
            if doc is None:
                failures.append(f"{name} (exit {code}): not JSON: {text[:300]}")
                continue
            try:
                _check(doc, name)
            except AssertionError as exc:
                failures.append(str(exc))
    finally:
        subprocess.run([sys.executable, "-m", "dvms", "cluster", "down", "--dir", c],
                       capture_output=True, timeout=120)  # fmt: skip
    assert not failures, "\n".join(failures)
