"""``dvms completion SHELL``: tab completion of commands and flags, for bash, zsh, fish."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "completion",
        help="print the shell code that completes dvms commands",
        description="Print the code that makes SHELL complete dvms's commands, "
        "sub-commands and flags on TAB. For the current shell: "
        'eval "$(dvms completion bash)"; for every new one, add that line to ~/.bashrc '
        "(zsh: ~/.zshrc; fish: dvms completion fish | source).",
    )
    p.add_argument("shell", choices=("bash", "zsh", "fish"), help="the shell to complete in")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import argcomplete

    print(argcomplete.shellcode(["dvms"], shell=args.shell))
    return 0
