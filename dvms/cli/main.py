"""Entry point of the ``dvms`` command.

Each command group lives in its own module exposing ``register(subparsers)``; that
function adds its sub-parser(s) and sets ``func`` (called with the parsed namespace,
returns the exit code). Errors meant for the user are raised as ``UserError`` and
printed as one line on stderr with exit code 1; argparse usage errors exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from dvms import __version__

# Command-group modules, in the order they appear in `dvms --help`.
COMMAND_MODULES = (
    "dvms.cli.keygen",
    "dvms.cli.keys",
    "dvms.cli.node",
    "dvms.cli.vm",
    "dvms.cli.files",
    "dvms.cli.cluster",
    "dvms.cli.events",
    "dvms.cli.audit",
    "dvms.cli.lab",
    "dvms.cli.debug",
    "dvms.cli.sim",
    "dvms.cli.solve",
    "dvms.cli.version",
    "dvms.cli.completion",
)


class UserError(Exception):
    """A problem with the user's input or environment: printed, never a traceback."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dvms",
        description="Peer-to-peer distributed VM scheduler (Kademlia + Vivaldi + DVMS).",
    )
    parser.add_argument("--version", action="version", version=f"dvms {__version__}")
    parser.add_argument(
        "--socket",
        help="control socket of the node to talk to (default: $DVMS_SOCKET, else the "
        "socket of a node run with the default state dir)",
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def _minimega_flags(argv: list[str]) -> list[str]:
    """minimega's output flags lead a command (``.columns name,state vm info``); argparse
    cannot take them as a command word, so such a line goes to the interpreter whole."""
    i = 0
    while i < len(argv) and argv[i].startswith("--"):
        i += 1 if "=" in argv[i] else 2
    if i < len(argv) and argv[i].startswith(".") and len(argv[i]) > 1:
        return [*argv[:i], "ns-line", *argv[i:]]
    return argv


def _take_json(argv: list[str]) -> tuple[list[str], bool]:
    """``--json`` is accepted anywhere on the line, before or after the subcommand and
    its arguments (not after ``--``): it is taken out and applied after parsing."""
    end = argv.index("--") if "--" in argv else len(argv)
    found = "--json" in argv[:end]
    return [a for a in argv[:end] if a != "--json"] + argv[end:], found


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    if "_ARGCOMPLETE" in os.environ:
        # the shell asks for completions (dvms completion): answer and exit
        import argcomplete

        argcomplete.autocomplete(parser)
    words, as_json = _take_json(list(sys.argv[1:] if argv is None else argv))
    args = parser.parse_args(_minimega_flags(words))
    if as_json:
        args.json = True
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"dvms: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `dvms ... | head`: the reader went away; not an error worth a traceback.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
