"""The audit log: which commands it keeps (every control command is classified), and
its hash chain, which names the line a removal or an edit broke."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from pathlib import Path

import pytest

from dvms.hypervisor.simulated import SimCluster, SimHostConfig, SimHypervisor
from dvms.runtime.config import NodeConfig
from dvms.runtime.control import audit
from dvms.runtime.daemon import (
    attach_commands,
    build_daemon,
    build_files,
    build_observability,
    build_runner,
    build_vjobs,
    load_identity,
)
from dvms.transport import ConstantLatency, NetworkModel
from dvms.transport.simnet import open_sim_network


async def test_every_control_command_is_classified(tmp_path: Path) -> None:
    cfg = replace(NodeConfig.local(), state_dir=str(tmp_path), hostname="h0")
    cluster = SimCluster()
    cluster.add_host("h0", SimHostConfig(cpus=4, memory_mib=8192))
    rng = random.Random(3)
    async with open_sim_network(NetworkModel(ConstantLatency(1e-4))) as net:
        transport = net.new_transport(0, ("10.0.0.1", 7400))
        hv = SimHypervisor(cluster, "h0")
        ident = load_identity(tmp_path)
        runner = build_runner(cfg, ident, bytes(32), transport, hv, rng)
        vjobs = build_vjobs(runner, tmp_path, cfg.vjobs, rng=rng)
        daemon = build_daemon(cfg, runner, vjobs, started=0.0, rng=rng)
        obs = build_observability(cfg, runner, vjobs)
        attach_commands(daemon, obs, build_files(cfg, runner, bytes(32), ident, rng))
    names = set(daemon.commands)
    assert {"submit", "ns", "events", "file_add", "debug_load", "audit_show"} <= names
    unclassified = names - audit.CHANGES - audit.READS
    assert not unclassified, f"add these to audit.CHANGES or audit.READS: {sorted(unclassified)}"
    assert not audit.CHANGES & audit.READS
    assert audit.BEFORE <= audit.CHANGES


@pytest.mark.parametrize(
    ("words", "written"),
    [
        (["vm", "info"], False),
        ([".columns", "name,state", "vm", "info"], False),
        (["v", "i"], False),
        (["namespace"], False),
        (["namespace", "foo"], False),
        (["namespace", "foo", "vm", "info"], False),
        (["ns", "hosts"], False),
        (["host"], False),
        (["ns", "schedule", "status"], False),
        (["vm", "launch", "kvm", "a"], True),
        (["namespace", "foo", "vm", "kill", "a"], True),
        (["ns", "add-hosts", "node1"], True),
        (["ns", "schedule"], True),
        (["ns", "hosts", "extra"], True),
        (["clear", "namespace", "foo"], True),
        (["vm", "config", "memory", "512"], True),
        (["nonsense"], True),
    ],
)
def test_ns_lines_that_only_read_are_not_written(words: list[str], written: bool) -> None:
    assert audit.changes("ns", {"words": words}) is written
    assert audit.changes("status", {}) is False
    assert audit.changes("submit", {}) is True
    assert audit.changes("some_new_command", {}) is True  # unknown: written


def _log(tmp_path: Path, n: int) -> Path:
    log = audit.AuditLog(tmp_path / "audit.log")
    for i in range(n):
        log.append({"uid": 0, "pid": 1, "cmd": "vm_kill", "args": {"names": f"vm{i}"},
                    "result": "ok"}, now=1.7e9 + i)  # fmt: skip
    return log.path


def test_an_intact_log_verifies_and_a_restart_continues_the_chain(tmp_path: Path) -> None:
    path = _log(tmp_path, 5)
    log = audit.AuditLog(path)  # a restarted daemon
    log.append({"cmd": "submit", "result": "ok"})
    assert audit.verify(path) == (6, [])
    (tmp_path / "audit.log.head").unlink()  # lost: the chain itself still holds
    assert audit.AuditLog(path).append({"cmd": "x"})["seq"] == 7
    assert audit.verify(path) == (7, [])
    assert audit.tail(path, 2)[-1]["cmd"] == "x"


@pytest.mark.parametrize("line", [1, 3, 5])
def test_a_removed_line_is_named(tmp_path: Path, line: int) -> None:
    path = _log(tmp_path, 6)
    lines = path.read_text().splitlines(keepends=True)
    del lines[line - 1]
    path.write_text("".join(lines))
    _, problems = audit.verify(path)
    assert problems, "removal not found"
    assert problems[0].line == line and f"line {line} removed" in problems[0].what


@pytest.mark.parametrize("line", [1, 4, 6])
def test_an_edited_line_is_named(tmp_path: Path, line: int) -> None:
    path = _log(tmp_path, 6)
    lines = path.read_text().splitlines(keepends=True)
    entry = json.loads(lines[line - 1])
    entry["uid"] = 1000  # hide who did it
    lines[line - 1] = json.dumps(entry, separators=(",", ":")) + "\n"
    path.write_text("".join(lines))
    _, problems = audit.verify(path)
    assert [p.line for p in problems] == [line], problems
    assert "edited" in problems[0].what


def test_a_truncated_log_is_found(tmp_path: Path) -> None:
    path = _log(tmp_path, 4)
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:2]))
    _, problems = audit.verify(path)
    assert len(problems) == 1 and "ends at seq 2, 4 were written" in problems[0].what


def test_args_are_summarised(tmp_path: Path) -> None:
    vms = [{"name": f"vm{i}", "vcpus": 1} for i in range(30)]
    out = audit.summarize({"vms": vms, "names": "x" * 500, "wait": True, "n": 3})
    assert out["vms"].startswith('{"count": 30') and out["names"].endswith("...")
    assert out["wait"] is True and out["n"] == 3
    assert len(out["names"]) == audit.MAX_ARG_TEXT + 3


def test_the_cli_names_the_line_and_fails(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from dvms.cli.main import main

    path = _log(tmp_path, 3)
    assert main(["audit", "verify", str(path)]) == 0
    assert "3 lines, chain intact" in capsys.readouterr().out
    lines = path.read_text().splitlines(keepends=True)
    path.write_text(lines[0] + lines[2])
    assert main(["--json", "audit", "verify", str(path)]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is False and doc["problems"][0].startswith("line 2: seq 3 follows 1")
    assert main(["audit", "verify", str(tmp_path / "nope")]) == 1
    assert "no such file" in capsys.readouterr().err
