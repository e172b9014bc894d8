"""The session of docs/daemon.md, line by line as written, on a 4-node local cluster:
every shipped vjob (``examples/vjobs/*.toml``) is placed, each after the others, and all
its VMs run where its namespace says; ``submit`` says where to look for them."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from dvms.placement.vjob import load_vjob

pytest.importorskip("libvirt", reason="libvirt-python not installed (needs libvirt-dev)")

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples" / "vjobs").glob("*.toml"))


def session() -> list[str]:
    """The lines of the docs/daemon.md block that starts a 4-node cluster."""
    text = (ROOT / "docs" / "daemon.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)```", text, re.S)
    block = next(b for b in blocks if "cluster up --nodes 4" in b)
    return [line for line in block.splitlines() if line.strip()]


def run(line: str, tmp: Path) -> subprocess.CompletedProcess:
    words = shlex.split(line.replace("/tmp/c", str(tmp / "c")))
    assert words[0] == "dvms"
    return subprocess.run([sys.executable, "-m", "dvms", *words[1:]], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)  # fmt: skip


def running(sock: str, namespace: str) -> dict[str, str]:
    cmd = [sys.executable, "-m", "dvms", "--socket", sock, "--json", "vm", "info", "--all"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=60)
    rows = json.loads(out.stdout)["vms"]
    return {r["name"]: r["state"] for r in rows if r["namespace"] == namespace}


def test_every_example_is_submitted_by_the_docs_session(tmp_path):
    lines = session()
    submitted = {Path(w).name for line in lines for w in line.split() if w.endswith(".toml")}
    # the session submits every shipped example
    assert submitted == {p.name for p in EXAMPLES}
    try:
        for line in lines:
            out = run(line, tmp_path)
            assert out.returncode == 0, f"{line}\n{out.stdout}{out.stderr}"
            if " submit " in line:
                vjob = load_vjob(ROOT / line.split()[-1])
                sock = str(tmp_path / "c" / "node1" / "dvms.sock")
                states = running(sock, vjob.namespace)
                assert {vm.name: "RUNNING" for vm in vjob.vms}.items() <= states.items()
                where = (f"dvms namespace {vjob.namespace} vm info" if vjob.namespace
                         else "dvms vm info --all")  # fmt: skip
                assert where in out.stdout
            if "namespace shop vm info" in line:
                assert "web1" in out.stdout and "cache" in out.stdout
    finally:
        subprocess.run([sys.executable, "-m", "dvms", "cluster", "down", "--dir",
                        str(tmp_path / "c")], capture_output=True, timeout=120)  # fmt: skip
