"""The import rules of the package's layers (``docs/architecture.md``), checked over every
module by walking its AST: imports inside functions and under ``TYPE_CHECKING`` count.

A rule broken anywhere fails ``test_package_follows_the_layer_rules`` with the file,
the line and the import; ``test_checker_*`` show the checker does catch each kind of
break on a made-up module.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "dvms"

#: Modules that import nothing from dvms but each other (``accel``: nothing at all).
KERNEL = (
    "dvms.effects",
    "dvms.names",
    "dvms.ranges",
    "dvms.requests",
    "dvms.configfile",
    "dvms.accel",
)
#: Pure algorithms and drivers, each over the kernel and the ones listed before it.
_LIBS: dict[str, tuple[str, ...]] = {
    "dvms.wire": (),
    "dvms.vivaldi": (),
    "dvms.placement": (),
    "dvms.namespace": ("dvms.placement",),
    "dvms.transport": ("dvms.wire",),
    "dvms.hypervisor": ("dvms.placement", "dvms.namespace"),
}
#: Pure libraries the protocol cores build on; the drivers (transport, hypervisor) do
#: I/O and are used only by the runtime and the simulator.
_LOWER = ("dvms.wire", "dvms.vivaldi", "dvms.placement", "dvms.namespace")
_DRIVERS = ("dvms.transport", "dvms.hypervisor")
_CORES = (
    *KERNEL,
    *_LOWER,
    "dvms.overlay",
    "dvms.partition",
    "dvms.files",
    "dvms.ha",
    "dvms.stack",
)

#: Package (or module) -> what it may import from dvms, by prefix. The most specific
#: entry for a module applies.
ALLOWED: dict[str, tuple[str, ...]] = {
    **{k: (*KERNEL,) for k in KERNEL},
    "dvms.accel": (),
    **{lib: (*KERNEL, *deps) for lib, deps in _LIBS.items()},
    "dvms.overlay": (*KERNEL, *_LOWER),
    "dvms.partition": (*KERNEL, *_LOWER, "dvms.overlay"),
    "dvms.files": (*KERNEL, *_LOWER, "dvms.overlay"),
    "dvms.ha": (*KERNEL, *_LOWER, "dvms.overlay", "dvms.partition"),
    "dvms.stack": _CORES,
    "dvms.runtime": (*_CORES, *_DRIVERS),
    "dvms.sim": (*_CORES, *_DRIVERS),
    # Faithful mode runs the daemon's own Trio node on a simulated network.
    "dvms.sim.faithful": (*_CORES, *_DRIVERS, "dvms.sim", "dvms.runtime"),
    "dvms.testing": (*_CORES, *_DRIVERS, "dvms.sim"),
    # The CLI talks to daemons through the client (and starts them), runs simulations
    # and the placement engine; it never reaches into protocol cores or services.
    "dvms.cli": (
        "dvms.cli",
        "dvms.runtime.client",
        "dvms.runtime.choices",
        "dvms.runtime.config",
        "dvms.runtime.daemon",
        "dvms.runtime.localcluster",
        "dvms.runtime.lab",
        "dvms.sim",
        "dvms.placement",
        "dvms.namespace.render",
        "dvms.namespace.effects",
        "dvms.wire.keys",
        "dvms.wire.revocation",
        "dvms.runtime.control.audit",  # `audit verify PATH` checks a log without a node
        "dvms.names",
        "dvms.ranges",
        "dvms.accel",
        "dvms",
    ),
    "dvms.demo": (
        "dvms.cli",
        "dvms.runtime.client",
        "dvms.runtime.localcluster",
        "dvms.sim",
    ),
    "dvms.__main__": ("dvms.cli",),
    "dvms": ("dvms.accel",),
}

#: Sans-I/O packages: no event loop, no clock, no sockets, no threads or processes
#: (``accel`` is a build tool: it runs the compiler).
SANS_IO = tuple(m for m in _CORES if m != "dvms.accel")
FORBIDDEN_IN_SANS_IO = ("trio", "time", "socket", "asyncio", "threading", "subprocess")


def _rule_for(module: str) -> tuple[str, tuple[str, ...]]:
    best = max((k for k in ALLOWED if module == k or module.startswith(k + ".")), key=len)
    return best, ALLOWED[best]


def _covered(name: str, prefixes: tuple[str, ...]) -> bool:
    """``name`` is one of ``prefixes`` or inside one (``dvms`` itself covers only the
    package's own ``__init__``)."""
    return any(name == p or (p != "dvms" and name.startswith(p + ".")) for p in prefixes)


def _is_module(name: str) -> bool:
    rel = PACKAGE.parent.joinpath(*name.split("."))
    return rel.with_suffix(".py").exists() or rel.is_dir()


def _imports(module: str, tree: ast.AST) -> list[tuple[int, str]]:
    """(line, module) of every import in ``tree``: ``from m import x`` counts as an
    import of ``m.x`` when that is a module of the package, else of ``m``."""
    out: list[tuple[int, str]] = []
    package = module.rsplit(".", 1)[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            for a in node.names:
                sub = f"{base}.{a.name}"
                out.append((node.lineno, sub if _is_module(sub) else base))
    return out


def check_source(module: str, source: str, where: str = "") -> list[str]:
    """Every broken rule in ``source``, the text of module ``module``."""
    rule, allowed = _rule_for(module)
    sans_io = _covered(module, SANS_IO)
    problems: list[str] = []
    for line, name in _imports(module, ast.parse(source)):
        top = name.split(".")[0]
        if top == "dvms":
            if _covered(name, (module, rule, *allowed)):
                continue
            problems.append(
                f"{where or module}:{line}: {module} imports {name} "
                f"({rule} may import only: {', '.join(allowed) or 'nothing from dvms'})"
            )
        elif sans_io and top in FORBIDDEN_IN_SANS_IO:
            problems.append(
                f"{where or module}:{line}: {module} is sans-I/O and imports {name} "
                "(clocks, sockets and the event loop belong to dvms.runtime)"
            )
    return sorted(set(problems))


def _modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out.append((".".join(parts), path))
    return out


def test_package_follows_the_layer_rules() -> None:
    problems: list[str] = []
    for module, path in _modules():
        where = str(path.relative_to(PACKAGE.parent))
        problems += check_source(module, path.read_text(), where)
    assert not problems, "layer rules broken:\n" + "\n".join(problems)


def test_every_module_has_a_rule() -> None:
    for module, _ in _modules():
        assert _rule_for(module)[0], module


@pytest.mark.parametrize(
    ("module", "source", "why"),
    [
        ("dvms.partition.core", "import trio", "sans-I/O"),
        ("dvms.overlay.core", "from time import monotonic", "sans-I/O"),
        ("dvms.stack.core", "def f():\n    import socket", "sans-I/O"),
        ("dvms.partition.core", "from dvms.sim.engine import Engine", "dvms.sim.engine"),
        ("dvms.partition.core", "from dvms.runtime import node", "dvms.runtime"),
        ("dvms.overlay.core", "from dvms.partition.messages import Isp", "dvms.partition"),
        ("dvms.stack.core", "from dvms.testing.cluster import FakeCluster", "dvms.testing"),
        ("dvms.sim.world", "from dvms.runtime.node import NodeRunner", "dvms.runtime"),
        ("dvms.sim.world", "from dvms.testing import InvariantChecker", "dvms.testing"),
        ("dvms.cli.vm", "from dvms.partition.messages import LaunchVm", "dvms.partition"),
        ("dvms.cli.vm", "from dvms.runtime.services import vjobs", "dvms.runtime.services"),
        ("dvms.effects", "from dvms.wire.envelope import WireCodec", "dvms.wire"),
        ("dvms.placement.model", "from dvms.overlay.messages import Contact", "dvms.overlay"),
        ("dvms.runtime.node", "from dvms.cli.main import UserError", "dvms.cli"),
        ("dvms.partition.core", "from ..sim import engine", "dvms.sim"),
    ],
)
def test_checker_catches(module: str, source: str, why: str) -> None:
    problems = check_source(module, source)
    assert len(problems) == 1 and why in problems[0], problems


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("dvms.partition.core", "from dvms.overlay.core import OverlayCore"),
        ("dvms.stack.core", "from dvms.partition.core import PartitionCore"),
        ("dvms.runtime.node", "import trio\nfrom dvms.stack.core import NodeCore"),
        ("dvms.sim.faithful", "from dvms.runtime.node import NodeRunner"),
        ("dvms.testing.cluster", "from dvms.sim.engine import Engine"),
        ("dvms.cli.vm", "from dvms.runtime.client import call"),
        ("dvms.sim.world", "import time"),
    ],
)
def test_checker_allows(module: str, source: str) -> None:
    assert check_source(module, source) == []
