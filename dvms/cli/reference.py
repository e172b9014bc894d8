"""The CLI reference (``docs/cli.md``), generated from the parser so it never drifts.

``python -m dvms.cli.reference > docs/cli.md`` rewrites it; a test fails when the file
and the parser disagree, or when an argument has no help text.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator

HEADER = """\
# Command reference

Every `dvms` command with its arguments, generated from the command's own parser
(`python -m dvms.cli.reference > docs/cli.md`). `--socket PATH` (the node to talk to;
default `$DVMS_SOCKET`, else the node run with the default state dir) and `--json` (one
JSON document on stdout) are accepted by every command, before or after its words.
Errors are one line on stderr starting with `dvms:`, exit status 1; a usage error
exits 2.

With `--json`, every command prints one JSON object on stdout: a list is named by a
plural key (`{"nodes": [...]}`, `{"vjobs": [...]}`, `{"peers": [...]}`), values are
typed (numbers, `true`/`false`, lists, objects; units in the key where needed:
`memory_mib`, `duration_s`), times are ISO-8601 in UTC with milliseconds
(`"started": "2026-12-06T21:25:01.123Z"`), keys are sorted.
"""


def commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ("dvms",)
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser, str]]:
    """Every (command words, parser, one-line help) below ``parser``, depth first, in
    the order of ``dvms --help``. Commands without a help line (internal) are skipped."""
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        helps = {c.dest: c.help or "" for c in action._choices_actions}
        for name, sub in action.choices.items():
            if name not in helps:
                continue
            yield (*path, name), sub, helps[name]
            yield from commands(sub, (*path, name))


def arguments(parser: argparse.ArgumentParser) -> Iterator[argparse.Action]:
    """The arguments of one command, without -h and sub-command lists."""
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
            continue
        if action.help == argparse.SUPPRESS:
            continue
        yield action


def _spelling(action: argparse.Action) -> str:
    if action.option_strings:
        flags = ", ".join(action.option_strings)
        if action.nargs == 0:
            return f"`{flags}`"
        meta = action.metavar or action.dest.upper()
        return f"`{flags} {meta}`"
    meta = action.metavar or action.dest
    return f"`{meta}`" + (" ..." if action.nargs in ("*", "+", argparse.REMAINDER) else "")


def _help(action: argparse.Action) -> str:
    text = (action.help or "").replace("|", "\\|")
    if action.choices is not None and not isinstance(action.choices, dict):
        text += f" (one of: {', '.join(str(c) for c in action.choices)})"
    return text


def render(parser: argparse.ArgumentParser) -> str:
    out = [HEADER]
    for words, sub, helptext in commands(parser):
        has_children = any(isinstance(a, argparse._SubParsersAction) for a in sub._actions)
        out.append(f"\n## `{' '.join(words)}`\n\n")
        out.append(f"{(sub.description or helptext).strip()}\n")
        if has_children:
            continue
        usage = sub.format_usage().removeprefix("usage: ").strip()
        out.append(f"\n```\n{' '.join(usage.split())}\n```\n")
        rows = [f"| {_spelling(a)} | {_help(a)} |" for a in arguments(sub)]
        if rows:
            out.append("\n| argument | meaning |\n|---|---|\n" + "\n".join(rows) + "\n")
    return "".join(out)


def main() -> None:
    from dvms.cli.main import build_parser

    print(render(build_parser()), end="")


if __name__ == "__main__":
    main()
