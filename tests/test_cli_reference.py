"""docs/cli.md is the parser's own reference, and every argument of every command says
what it is for."""

from pathlib import Path

from dvms.cli.main import build_parser
from dvms.cli.reference import arguments, commands, render

DOC = Path(__file__).resolve().parents[1] / "docs" / "cli.md"


def test_docs_cli_md_is_generated_from_the_parser() -> None:
    assert DOC.read_text() == render(build_parser()), (
        "docs/cli.md is out of date: python -m dvms.cli.reference > docs/cli.md"
    )


def test_every_command_and_argument_has_help() -> None:
    missing = []
    for words, parser, helptext in commands(build_parser()):
        if not helptext.strip():
            missing.append(" ".join(words))
        missing += [f"{' '.join(words)} {a.dest}" for a in arguments(parser) if not a.help]
    assert not missing, f"no help text: {missing}"


def test_the_reference_lists_nested_commands() -> None:
    names = [" ".join(w) for w, _, _ in commands(build_parser())]
    assert "dvms sim run" in names
    assert "dvms vm launch" in names
    assert "dvms ns-line" not in names  # internal route, no help line


def test_completion_answers_a_partial_command(tmp_path) -> None:
    import os
    import subprocess
    import sys

    out = tmp_path / "completions"
    line = "dvms vm la"
    env = dict(os.environ, _ARGCOMPLETE="1", _ARGCOMPLETE_STDOUT_FILENAME=str(out),
               COMP_LINE=line, COMP_POINT=str(len(line)), _ARGCOMPLETE_IFS=" ")  # fmt: skip
    subprocess.run([sys.executable, "-m", "dvms"], env=env, check=True, timeout=60)
    assert out.read_text().split() == ["launch"]
    code = subprocess.run([sys.executable, "-m", "dvms", "completion", "bash"],
                          capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert "complete " in code
    assert "dvms" in code
