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


def build_label() -> str:
    """Which build of the placement engine this process runs: ``compiled`` when its
    modules are served by the mypyc build (``DVMS_ACCEL=1`` and a current build),
    else ``source`` (with the reason when the compiled build was asked for)."""
    import importlib.machinery

    from dvms import accel
    from dvms.placement import workspace

    if str(workspace.__file__).endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)):
        return "compiled (mypyc, DVMS_ACCEL=1)"
    if os.environ.get(accel.ENV_ENABLE) == "1":
        state = accel.check()
        why = state.reason if not state.usable else "the placement engine is not compiled"
        return f"source (DVMS_ACCEL=1 but {why})"
    return "source"
