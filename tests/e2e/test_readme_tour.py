"""The README's five-minute tour, run as written: every command of its ``sh`` block, in
order, on a fresh local cluster, and what the README says to look at is there."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MARK = "@@tour-step@@"


def tour_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## A five-minute tour", 1)[1]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    lines = [re.sub(r"\s+#.*$", "", line).strip() for line in block.splitlines()]
    return [line for line in lines if line]


def test_the_tour_commands_are_the_ones_the_readme_shows() -> None:
    cmds = tour_commands()
    assert cmds[0].startswith("dvms cluster up --nodes 4 --dir tour")
    assert cmds[-1] == "dvms cluster down --dir tour"
    assert any(c.startswith("dvms submit examples/") for c in cmds)


def test_the_readme_tour_runs_as_written(tmp_path: Path) -> None:
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    cmds = tour_commands()
    script = "set -e\n" + "".join(
        f"echo {shlex.quote(f'{MARK} {i}')}\n{cmd}\n" for i, cmd in enumerate(cmds)
    )
    env = {k: v for k, v in os.environ.items() if k not in ("DVMS_SOCKET", "DVMS_NAMESPACE")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["COLUMNS"] = "200"
    try:
        run = subprocess.run(
            ["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
            timeout=600,
        )  # fmt: skip
    finally:
        if (tmp_path / "tour" / "cluster.json").exists() or (tmp_path / "tour").exists():
            subprocess.run(["dvms", "cluster", "down", "--dir", "tour"], cwd=tmp_path,
                           env=env, capture_output=True, timeout=120)  # fmt: skip
    steps = {
        int(m.group(1)): body
        for m, body in zip(
            re.finditer(rf"^{MARK} (\d+)$", run.stdout, re.M),
            re.split(rf"^{MARK} \d+$\n?", run.stdout, flags=re.M)[1:],
            strict=True,
        )
    }
    done = max(steps, default=-1)
    assert run.returncode == 0, (
        f"tour stopped at `{cmds[done]}` (exit {run.returncode}):\n"
        f"{steps.get(done, '')}\n{run.stderr[-2000:]}"
    )
    out = {cmds[i]: body for i, body in steps.items()}

    status = out["dvms status"]
    assert "joined" in status
    assert not re.search(r"[{}\[\]']", status), f"Python reprs in status:\n{status}"

    shop = out["dvms namespace shop vm info"]
    web_hosts = {line.split("|")[0].strip() for line in shop.splitlines() if "| web" in line}
    assert len(web_hosts) == 4, f"the web VMs are not spread over 4 hosts:\n{shop}"

    parts = out["dvms partitions --all"]
    assert re.search(r"overload:\S+\s*\|\s*\d+\s*\|\s*solved", parts), parts
    loads = [c for c in cmds if c.startswith("dvms debug loads")]
    final = out[loads[-1]] if loads else ""
    assert "node4" in final
    assert not re.search(r"\|\s*yes\s*\|", final), f"a host is still overloaded:\n{final}"
    assert "solved" in out["dvms solve examples/models/overload.toml"]
