"""Which build a benchmark child runs: the source, or the mypyc-compiled hot path
(``dvms.accel``; same source, compiled). Shared by the benchmarks in this folder."""

from __future__ import annotations

import os
import subprocess
import sys

BUILDS = ("source", "compiled")


def parse(value: str) -> list[str]:
    """``source``, ``compiled`` or ``both`` -> the builds to run, in that order."""
    if value == "both":
        return list(BUILDS)
    if value not in BUILDS:
        raise SystemExit(f"--build must be source, compiled or both, not {value!r}")
    return [value]


def prepare(builds: list[str]) -> None:
    """Build (or check) the compiled modules when a run needs them."""
    if "compiled" in builds:
        subprocess.run([sys.executable, "-m", "dvms.accel", "build"], check=True)


def env(build: str) -> dict[str, str]:
    """The environment of a child process running ``build``."""
    out = dict(os.environ)
    out["DVMS_ACCEL"] = "1" if build == "compiled" else "0"
    return out
