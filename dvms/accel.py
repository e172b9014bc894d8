"""An optional compiled build of the hot paths (mypyc), same source.

A simulation of 10,000 nodes spends nearly all its time in a handful of modules: the
event engine, the Kademlia core and routing table, the Vivaldi client and the node
core that wires them. py-spy shows a flat profile there (no function above 5 %): what
is left is the interpreter's cost per call and per attribute. mypyc compiles those
modules, unchanged and type-checked, to C extensions; a simulation then runs 1.4-1.7x
faster and gives byte-identical results (``tests/test_accel.py`` checks both builds
against each other). The placement engine's solver modules (workspace, filters,
search, plan scheduler, repair, local search) are compiled too: a repair of a small
partition is mostly fixed per-call cost, and gives the same plans in both builds. So
are the partition protocol's core (``dvms.partition.core``, ``base``, ``membership``,
``acting``), recruitment and directory client, the overlay's RPC counters and the
simulator's invariant checker, metrics and solver glue (hot in a fault campaign,
``dvms sim faults``).

One rule for compiled modules that mypy does not enforce: never read an attribute
again after a call that may reset it while mypy still holds it narrowed by an earlier
check (``if self.lead is not lead`` after sending an action, which may end the plan).
mypy keeps the narrowed type across the call, and compiled code checks that type at
run time ("Lead object expected; got None"). Re-read the attribute into a local, or
check it through a method (the partition core's ``_leading``).

Nothing changes unless asked for:

    make accel                      # = python -m dvms.accel build
    DVMS_ACCEL=1 dvms sim overlay ...

The build lives outside the source tree (``build/accel/`` next to the package, or
``$DVMS_ACCEL_DIR``) with a manifest holding the SHA-256 of every module of the package
(the compiled ones were checked against all the others). With ``DVMS_ACCEL=1``,
``import dvms`` installs an import hook serving the compiled modules from the build only
if every digest still matches the source and the build is for this Python; otherwise it
says why on stderr and the source runs. A stale build is never used, so an edit cannot
be shadowed by an old compiled copy.

Limits of compiled modules (mypyc): their classes cannot be monkeypatched or subclassed
from interpreted code. The test suite runs the source; it also passes whole on the
compiled build (``make accel && DVMS_ACCEL=1 make test``), daemons included.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

__all__ = [
    "COMPILED_MODULES",
    "ENV_DIR",
    "ENV_ENABLE",
    "active",
    "build",
    "build_dir",
    "check",
    "enable",
    "source_annotations",
]

#: The modules compiled, in the order given to mypyc (one shared runtime library).
#: Chosen by profile: together they take ~75 % of a datacenter simulation and ~95 % of
#: an overlay simulation; the ``dvms.placement`` ones ~95 % of a repair. Each must
#: type-check under mypy. The wire schema of the compiled message classes is read from
#: their source (``source_annotations``).
COMPILED_MODULES: tuple[str, ...] = (
    "dvms.effects",
    "dvms.requests",
    "dvms.sim.engine",
    "dvms.overlay.core",
    "dvms.overlay.routing",
    "dvms.overlay.lookup",
    "dvms.overlay.messages",
    "dvms.overlay.records",
    "dvms.vivaldi.client",
    "dvms.vivaldi.coordinate",
    "dvms.transport.netmodel",
    "dvms.stack.core",
    "dvms.placement.load",
    "dvms.placement.filters",
    "dvms.placement.workspace",
    "dvms.placement.arrivals",
    "dvms.placement.search",
    "dvms.placement.plan",
    "dvms.placement.localsearch",
    "dvms.placement.repair",
    "dvms.overlay.rpcstats",
    "dvms.partition.base",
    "dvms.partition.membership",
    "dvms.partition.acting",
    "dvms.partition.core",
    "dvms.partition.recruit",
    "dvms.partition.directory",
    "dvms.sim.invariants",
    "dvms.sim.metrics",
    "dvms.sim.partition_glue",
)

#: Environment variable turning the compiled build on: "1" on, "0" or unset off.
ENV_ENABLE = "DVMS_ACCEL"
#: Environment variable naming the build directory (default ``build/accel`` beside the
#: package's source tree).
ENV_DIR = "DVMS_ACCEL_DIR"

_MANIFEST = "manifest.json"
_ROOT = Path(__file__).resolve().parent.parent
_finder: _CompiledFinder | None = None


def build_dir() -> Path:
    """Where the build is read from and written to."""
    env = os.environ.get(ENV_DIR)
    return Path(env) if env else _ROOT / "build" / "accel"


def _source(module: str) -> Path:
    return _ROOT.joinpath(*module.split(".")).with_suffix(".py")


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _source_digests() -> dict[str, str]:
    """SHA-256 of every module of the package, by path. The compiled modules were
    type-checked and compiled against all of them (a changed config class or message
    type matters as much as a changed hot module), so any change makes a build stale."""
    pkg = _ROOT / "dvms"
    return {str(p.relative_to(_ROOT)): _digest(p) for p in sorted(pkg.rglob("*.py"))}


@dataclass(frozen=True)
class BuildState:
    """What :func:`check` found: ``usable`` or the reason it is not."""

    usable: bool
    reason: str
    #: Module name -> extension file, for every module served from the build (the
    #: mypyc runtime library included).
    files: dict[str, Path]


def check(directory: Path | None = None) -> BuildState:
    """Is the build in ``directory`` complete, for this Python, and built from the
    current source?"""
    directory = directory or build_dir()
    manifest_path = directory / _MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text())
    except FileNotFoundError:
        return BuildState(False, f"no build in {directory} (run `make accel`)", {})
    except (OSError, ValueError) as exc:
        return BuildState(False, f"unreadable manifest {manifest_path}: {exc}", {})
    if manifest.get("cache_tag") != sys.implementation.cache_tag:
        return BuildState(
            False,
            f"built for {manifest.get('cache_tag')}, this is {sys.implementation.cache_tag}",
            {},
        )
    modules = manifest.get("modules", {})
    if sorted(modules) != sorted(COMPILED_MODULES):
        return BuildState(False, "built for another module list (rebuild: `make accel`)", {})
    built, now = manifest.get("sources", {}), _source_digests()
    changed = sorted(p for p in built.keys() | now.keys() if built.get(p) != now.get(p))
    if changed:
        more = f" (and {len(changed) - 1} more)" if len(changed) > 1 else ""
        return BuildState(False, f"stale: {changed[0]} changed since the build{more}", {})
    files = {name: directory / entry["file"] for name, entry in modules.items()}
    runtime = manifest.get("runtime")
    if runtime:
        files[runtime["module"]] = directory / runtime["file"]
    missing = [str(p) for p in files.values() if not p.exists()]
    if missing:
        return BuildState(False, f"missing {missing[0]}", {})
    return BuildState(True, "ok", files)


def source_annotations(cls: type) -> dict[str, str]:
    """The annotations of a compiled class's body as written in its source module
    (mypyc keeps only erased runtime types; the wire schema needs the written ones)."""
    tree = ast.parse(_source(cls.__module__).read_text())
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == cls.__qualname__:
            return {
                st.target.id: ast.unparse(st.annotation)
                for st in node.body
                if isinstance(st, ast.AnnAssign) and isinstance(st.target, ast.Name)
            }
    raise LookupError(f"class {cls.__qualname__} not found in {cls.__module__}'s source")


class _CompiledFinder(importlib.abc.MetaPathFinder):
    """Serves the compiled modules (and their runtime library) from the build."""

    def __init__(self, files: dict[str, Path]) -> None:
        self.files = files

    def find_spec(
        self, fullname: str, path: object = None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        so = self.files.get(fullname)
        if so is None:
            return None
        loader = importlib.machinery.ExtensionFileLoader(fullname, str(so))
        return importlib.util.spec_from_file_location(fullname, str(so), loader=loader)


def enable(directory: Path | None = None) -> str | None:
    """Serve the compiled modules from now on. Returns None when done, else why not
    (the source then keeps running). Must run before any of them is imported."""
    global _finder
    if _finder is not None:
        return None
    state = check(directory)
    if not state.usable:
        return state.reason
    loaded = [m for m in COMPILED_MODULES if m in sys.modules]
    if loaded:
        return f"{loaded[0]} was imported before the compiled build was enabled"
    _finder = _CompiledFinder(state.files)
    sys.meta_path.insert(0, _finder)
    return None


def enable_from_env() -> None:
    """Called by ``import dvms``: honour ``DVMS_ACCEL``; explain on stderr when the
    build cannot be used."""
    value = os.environ.get(ENV_ENABLE, "")
    if value in ("", "0"):
        return
    if value != "1":
        print(f"dvms: {ENV_ENABLE}={value!r} is not 0 or 1; running the source", file=sys.stderr)
        return
    reason = enable()
    if reason is not None:
        print(
            f"dvms: {ENV_ENABLE}=1 but the compiled build is unusable: {reason}; "
            "running the source",
            file=sys.stderr,
        )


def active() -> bool:
    """True when the hot modules in use are the compiled ones."""
    mod = sys.modules.get("dvms.overlay.core")
    return mod is not None and str(getattr(mod, "__file__", "")).endswith(
        tuple(importlib.machinery.EXTENSION_SUFFIXES)
    )


_BUILD_SCRIPT = """
import sys
from setuptools import setup
from mypyc.build import mypycify
out, tmp, paths = sys.argv[1], sys.argv[2], sys.argv[3:]
setup(
    name="dvms-accel",
    ext_modules=mypycify(paths, opt_level="3", target_dir=tmp + "/c"),
    script_args=["-q", "build_ext", "--build-lib", out, "--build-temp", tmp],
)
"""


def build(directory: Path | None = None) -> Path:
    """Compile :data:`COMPILED_MODULES` into ``directory`` and write its manifest.
    Needs mypy (mypyc), setuptools, a C compiler and the Python headers."""
    directory = (directory or build_dir()).resolve()
    try:
        import mypyc  # noqa: F401
    except ImportError as exc:
        raise RuntimeError(
            "mypyc is not installed: `pip install mypy` (make accel does it)"
        ) from exc
    sources = _source_digests()
    paths = [str(_source(m).relative_to(_ROOT)) for m in COMPILED_MODULES]
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    directory.mkdir(parents=True, exist_ok=True)
    (directory / _MANIFEST).unlink(missing_ok=True)
    # a previous build's runtime library has another name: leave exactly one behind
    shutil.rmtree(directory / "dvms", ignore_errors=True)
    for old in directory.glob("*__mypyc*"):
        old.unlink()
    with tempfile.TemporaryDirectory(prefix="dvms-accel-") as tmp:
        proc = subprocess.run(
            [sys.executable, "-c", _BUILD_SCRIPT, str(directory), tmp, *paths],
            cwd=_ROOT,  # mypyc names modules after their paths from here
            capture_output=True,
            text=True,
            check=False,
        )
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-20:])
        raise RuntimeError(f"mypyc build failed:\n{tail}")
    modules = {}
    for name in COMPILED_MODULES:
        rel = Path(*name.split(".")).with_suffix(suffix)
        if not (directory / rel).exists():
            raise RuntimeError(f"mypyc build produced no {rel}")
        modules[name] = {"file": str(rel)}
    runtimes = list(directory.glob(f"*__mypyc{suffix}"))
    if len(runtimes) > 1:
        raise RuntimeError(f"mypyc build left {len(runtimes)} runtime libraries")
    runtime = (
        {"module": runtimes[0].name[: -len(suffix)], "file": runtimes[0].name} if runtimes else None
    )
    manifest = {
        "cache_tag": sys.implementation.cache_tag,
        "modules": modules,
        "runtime": runtime,
        "sources": sources,
    }
    (directory / _MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return directory


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m dvms.accel",
        description="Build or inspect the compiled (mypyc) build of the hot paths.",
    )
    ap.add_argument("action", choices=("build", "status"))
    ap.add_argument(
        "--dir", type=Path, default=None, help=f"build directory (default {build_dir()})"
    )
    args = ap.parse_args(argv)
    if args.action == "build":
        state = check(args.dir)
        if state.usable:
            print(f"compiled build up to date in {args.dir or build_dir()}")
            return 0
        try:
            where = build(args.dir)
        except RuntimeError as exc:
            print(f"dvms.accel: {exc}", file=sys.stderr)
            return 1
        print(f"compiled {len(COMPILED_MODULES)} modules into {where}; use it with {ENV_ENABLE}=1")
        return 0
    state = check(args.dir)
    print("usable" if state.usable else f"unusable: {state.reason}")
    return 0 if state.usable else 1


if __name__ == "__main__":
    raise SystemExit(main())
