"""Same results as another commit: the reference simulations on this tree and on REV.

    python bench/same_results.py --base REV [--accel] [--quick]

Runs each reference simulation twice, once on this working tree and once on a
temporary git worktree of REV (both with this venv's Python), and compares their JSON
with the wall-clock fields left out. Prints one row per run: identical or the fields
that differ, and both wall times with their ratio (this tree / REV, measured in the same
run). Exits 1 if any result differs. ``--accel`` runs both trees on their own compiled
build (``DVMS_ACCEL=1``; each tree's build is made first if missing or stale).
``--quick`` runs smaller versions (a few seconds each) for a check while editing.

A refactoring is shown not to change behaviour when every row is identical.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MATRIX = "wondernetwork222_avg_rtt_ms.csv"
#: Fields that measure the machine, not the simulation.
WALL_FIELDS = ("wall_s", "virtual_per_wall")

FULL: dict[str, list[str]] = {
    "overlay 2000 loss 5%": [
        "sim", "overlay", "--nodes", "2000", "--seed", "1", "--loss", "0.05",
        "--latency-matrix", "{matrix}", "--duration", "600", "--json",
    ],
    "smoke seed 7": [
        "sim", "run", "smoke", "--scheduler", "dvms", "--seed", "7",
        "--solver-time", "model", "--json",
    ],
    "launch-1000": ["sim", "run", "launch-1000", "--scheduler", "dvms", "--json"],
    "vmplaces-256 seed 23": [
        "sim", "run", "vmplaces-256", "--scheduler", "dvms", "--seed", "23", "--json",
    ],
}  # fmt: skip
QUICK: dict[str, list[str]] = {
    "overlay 300 loss 5%": [
        "sim", "overlay", "--nodes", "300", "--seed", "1", "--loss", "0.05",
        "--latency-matrix", "{matrix}", "--duration", "120", "--json",
    ],
    "vmplaces-64 seed 23": [
        "sim", "run", "vmplaces-64", "--scheduler", "dvms", "--seed", "23", "--json",
    ],
}  # fmt: skip


def _matrix() -> str:
    """The WonderNetwork matrix beside the repository, else the simulator's embedded copy."""
    shared = ROOT.parent / "shared" / "data" / "latency" / MATRIX
    return str(shared) if shared.exists() else "embedded:wondernetwork222"


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in WALL_FIELDS}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def _run(tree: Path, args: list[str], accel: bool) -> tuple[Any, float]:
    env = {**os.environ, "PYTHONPATH": str(tree), "DVMS_ACCEL": "1" if accel else "0"}
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "dvms", *args],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{tree}: dvms {' '.join(args)} failed:\n{proc.stderr[-2000:]}")
    return _strip(json.loads(proc.stdout)), wall


def _build(tree: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    subprocess.run([sys.executable, "-m", "dvms.accel", "build"], cwd=tree, env=env, check=True)


def _differences(a: Any, b: Any) -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    return [] if a == b else ["(whole result)"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", required=True, metavar="REV", help="commit to compare with")
    p.add_argument("--accel", action="store_true", help="both trees on their compiled build")
    p.add_argument("--quick", action="store_true", help="smaller runs, a few seconds each")
    args = p.parse_args()
    runs = QUICK if args.quick else FULL
    matrix = _matrix()
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="dvms-base-") as tmp:
        base = Path(tmp) / "tree"
        subprocess.run(
            ["git", "worktree", "add", "--detach", "-q", str(base), args.base],
            cwd=ROOT,
            check=True,
        )
        try:
            if args.accel:
                _build(ROOT)
                _build(base)
            build = "compiled" if args.accel else "source"
            print(f"this tree ({head}, with any uncommitted change) vs {args.base}, {build}")
            print(f"{'run':24} {'result':40} {'wall s':>8} {'base s':>8} {'ratio':>6}")
            bad = 0
            for name, template in runs.items():
                cmd = [a.format(matrix=matrix) for a in template]
                mine, wall = _run(ROOT, cmd, args.accel)
                theirs, base_wall = _run(base, cmd, args.accel)
                diff = _differences(mine, theirs)
                bad += bool(diff)
                verdict = "identical" if not diff else "DIFFERS: " + ", ".join(diff)[:31]
                ratio = wall / base_wall if base_wall else float("nan")
                print(f"{name:24} {verdict:40} {wall:8.1f} {base_wall:8.1f} {ratio:6.2f}")
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=ROOT)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
