"""``dvms version``: the release, the build it runs from and its platform."""

from __future__ import annotations

import argparse
import platform
import subprocess
from pathlib import Path

from dvms import __version__


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "version",
        help="print the version and build",
        description="Print dvms's version, the build it runs from (the git commit of a "
        "source checkout, with -dirty if it has local changes, or 'installed' for a "
        "package), Python's version and whether the compiled simulator is on.",
    )
    p.set_defaults(func=run)


def build() -> str:
    """The git commit of the checkout this package runs from, else ``installed``."""
    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return "installed"
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "describe", "--always", "--dirty", "--abbrev=12"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "source"
    return out.stdout.strip() or "source"


def info() -> dict[str, str]:
    from dvms import accel

    return {
        "version": __version__,
        "build": build(),
        "python": platform.python_version(),
        "accel": "on" if accel.active() else "off",
    }


def run(args: argparse.Namespace) -> int:
    data = info()
    if args.json:
        from dvms.cli.output import emit

        emit(data)
    else:
        print(
            f"dvms {data['version']} (build {data['build']}, Python {data['python']}, "
            f"compiled simulator {data['accel']})"
        )
    return 0
