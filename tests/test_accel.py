"""The compiled (mypyc) build of the hot path: same results as the source, and never
used when it is stale.

Builds once into a temporary directory (~30 s), then runs simulations in child
processes with ``DVMS_ACCEL=1`` and without, and compares their JSON.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dvms import accel

# Keys that measure this run's speed or which build ran; everything else must match.
TIMING_KEYS = {
    "wall_s",
    "join_phase_wall_s",
    "steady_wall_s",
    "steady_virtual_per_wall",
    "join_phase_cpu_s",
    "steady_cpu_s",
    "steady_virtual_per_cpu",
    "peak_rss_mb",
    "compiled",
    "virtual_per_wall",
}


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = tmp_path_factory.mktemp("accel")
    try:
        accel.build(where)
    except RuntimeError as exc:
        if "Python.h" in str(exc):
            pytest.skip(f"no Python headers for a C extension build: {exc}")
        raise
    return where


def _run(args: list[str], directory: Path | None, enabled: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env[accel.ENV_ENABLE] = enabled
    if directory is not None:
        env[accel.ENV_DIR] = str(directory)
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=env, check=True, timeout=600
    )


def _json(args: list[str], directory: Path, enabled: str) -> dict:
    out = json.loads(_run(["-m", "dvms", *args], directory, enabled).stdout)
    return {k: v for k, v in out.items() if k not in TIMING_KEYS}, out


def test_build_is_complete_and_current(build: Path) -> None:
    state = accel.check(build)
    assert state.usable, state.reason
    # every compiled module, plus mypyc's shared runtime library
    assert set(accel.COMPILED_MODULES) < set(state.files)


def test_overlay_simulation_identical_in_both_builds(build: Path) -> None:
    args = ["sim", "overlay", "--nodes", "300", "--seed", "5", "--loss", "0.05"]
    args += ["--churn", "0.1", "--duration", "240", "--lookups", "60", "--json", "--timings"]
    source, source_raw = _json(args, build, "0")
    compiled, compiled_raw = _json(args, build, "1")
    assert source_raw["compiled"] is False
    assert compiled_raw["compiled"] is True
    assert source["lookups"] == 60
    assert compiled == source


def test_datacenter_simulation_identical_in_both_builds(build: Path) -> None:
    args = ["sim", "run", "smoke", "--scheduler", "dvms", "--json"]
    source, _ = _json(args, build, "0")
    compiled, _ = _json(args, build, "1")
    assert source["messages"]  # the partition protocol ran
    assert compiled == source


def test_fault_campaign_identical_in_both_builds(build: Path) -> None:
    # crashes and restarts, freezes, loss bursts, duplication, splits and clock offsets
    # on the partition protocol (compiled too): every record and total but the timings
    args = ["sim", "faults", "--scenario", "faults-small", "--runs", "2", "--seed", "3"]
    args += ["--json"]

    def results(enabled: str) -> dict:
        env = {**os.environ, accel.ENV_ENABLE: enabled, accel.ENV_DIR: str(build)}
        cmd = [sys.executable, "-m", "dvms", *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
        assert proc.returncode in (0, 1), proc.stderr  # 1: an invariant was violated
        out = json.loads(proc.stdout)
        out["exit"] = proc.returncode
        for rec in out["records"]:
            del rec["wall_s"], rec["cpu_s"]
        return {k: v for k, v in out.items() if "wall" not in k and "cpu" not in k}

    source, compiled = results("0"), results("1")
    assert sum(source["faults"].values()) > 0 and source["migrations"] > 0
    assert compiled == source


def test_placement_plans_identical_in_both_builds(build: Path) -> None:
    # the greedy repair and both local-search objectives on plan_quality's 8-host
    # instances (one per constraint mix): every plan digested
    root = Path(__file__).resolve().parent.parent
    args = [str(root / "bench" / "plan_digest.py"), "--sizes", "8", "--per-mix", "1"]
    args += ["--repeat", "1", "--evals", "30", "--json"]
    source = json.loads(_run(args, build, "0").stdout)
    compiled = json.loads(_run(args, build, "1").stdout)
    assert source["build"] == "source"
    assert compiled["build"].startswith("compiled")
    digests = [[(r["engine"], r["digest"]) for r in out["rows"]] for out in (source, compiled)]
    assert len(digests[0]) == 3
    assert digests[1] == digests[0]


PROBE = "import dvms.accel as a, dvms.overlay.core as c; print(a.active(), c.__file__)"


def test_compiled_modules_are_served(build: Path) -> None:
    res = _run(["-c", PROBE], build, "1")
    active, path = res.stdout.split()
    assert active == "True" and path.startswith(str(build)), res.stdout
    assert res.stderr == ""


@pytest.mark.parametrize(
    ("path", "edit"),
    [
        ("dvms/overlay/routing.py", "changed"),  # a compiled module
        ("dvms/overlay/config.py", "changed"),  # one they were compiled against
        ("dvms/overlay/config.py", "new"),  # a module the build never saw
    ],
)
def test_stale_build_is_refused(build: Path, tmp_path: Path, path: str, edit: str) -> None:
    stale = tmp_path / "stale"
    shutil.copytree(build, stale)
    manifest = json.loads((stale / "manifest.json").read_text())
    if edit == "changed":
        manifest["sources"][path] = "0" * 64
    else:
        del manifest["sources"][path]
    (stale / "manifest.json").write_text(json.dumps(manifest))
    res = _run(["-c", PROBE], stale, "1")
    assert res.stdout.split()[0] == "False"
    assert f"stale: {path} changed since the build" in res.stderr
    assert "running the source" in res.stderr


def test_missing_build_and_bad_switch_explained(tmp_path: Path) -> None:
    res = _run(["-c", PROBE], tmp_path / "nothing", "1")
    assert res.stdout.split()[0] == "False"
    assert "no build in" in res.stderr and "make accel" in res.stderr
    res = _run(["-c", PROBE], tmp_path / "nothing", "yes")
    assert res.stdout.split()[0] == "False"
    assert "DVMS_ACCEL='yes' is not 0 or 1" in res.stderr


def test_build_for_another_python_is_refused(build: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    shutil.copytree(build, other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["cache_tag"] = "cpython-39"
    (other / "manifest.json").write_text(json.dumps(manifest))
    state = accel.check(other)
    assert not state.usable and "built for cpython-39" in state.reason


HINTS = """
import dvms.overlay.core, dvms.overlay.messages as m, dataclasses
from dvms.wire.schema import _type_hints
classes = [
    c for c in vars(m).values()
    if isinstance(c, type) and dataclasses.is_dataclass(c) and c.__module__ == m.__name__
]
print(all(hasattr(c, "__mypyc_attrs__") for c in classes))
print(sorted((c.__name__, repr(_type_hints(c))) for c in classes))
"""


def test_wire_schema_of_compiled_messages_is_the_written_one(build: Path) -> None:
    # mypyc keeps erased runtime annotations (tuple, no MaxLen); the schema must still
    # see the written ones, or a compiled node would refuse to start or check less
    source = _run(["-c", HINTS], build, "0").stdout.splitlines()
    compiled = _run(["-c", HINTS], build, "1").stdout.splitlines()
    assert source[0] == "False" and compiled[0] == "True"
    assert "MaxLen(n=40)" in source[1]
    assert compiled[1] == source[1]
