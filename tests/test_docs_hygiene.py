"""The project's files speak of dvms as it is, to its users and the next engineer: no
development history (sessions, commit hashes, issue numbers) and no path or link outside
the repository. History belongs in commit messages; a measurement's commit belongs on its
stamp line in docs/results.md, the one place commits are named."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Text written for readers: the README, every page, example and deployment file.
PAGES = sorted(
    {ROOT / "README.md"}
    | {p for d in ("docs", "examples", "deploy", "dvms") for p in (ROOT / d).rglob("*.md")}
    | {p for d in ("examples", "deploy") for p in (ROOT / d).rglob("*") if p.is_file()}
)
#: Code, whose comments, docstrings and help texts are read too.
CODE = sorted((ROOT / "dvms").rglob("*.py"))

OUTSIDE = re.compile(
    r"\.\./shared|shared/(?:reference|data)\b|/work/"
    # the research notes the project started from, and their section numbers
    r"|\b(?:real-infra|dvms-isp|btrplace|minimega|overlay|peer-schedulers|style-anchors)\.md\b"
    r"|\b(?:reference|minimega|BtrPlace|DVMS) §"
)
#: A link to a named host outside (not loopback, localhost or a template like {host}).
LINK = re.compile(r"https?://(?!dvms\.invalid/)[A-Za-z][\w-]*(?:\.[\w-]+)*\.[A-Za-z]{2,}")
ISSUE = re.compile(r"\b[Ii]ssues?:? ?#?\d+\b|(?<![\w&/(\[#])#\d+(?![\w.-])")
HISTORY = re.compile(
    r"\b(?:this|last|previous|earlier|next) session\b|\bsession \d+\b|\bwave \d\b", re.I
)
COMMIT = re.compile(r"\b(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{7,12}\b")


def _problems(path: Path, rules: dict[str, re.Pattern[str]]) -> list[str]:
    out = []
    for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        for what, rule in rules.items():
            m = rule.search(line)
            if m:
                out.append(f"{path.relative_to(ROOT)}:{n}: {what}: {m.group(0)!r}")
    return out


def test_pages_name_no_history_and_nothing_outside_the_repository() -> None:
    problems = []
    for page in PAGES:
        rules = {"path outside": OUTSIDE, "link outside": LINK, "issue number": ISSUE,
                 "history": HISTORY}  # fmt: skip
        if page.suffix == ".md" and page != ROOT / "docs" / "results.md":
            rules["commit hash"] = COMMIT
        problems += _problems(page, rules)
    assert not problems, "\n".join(problems)


def test_code_comments_name_nothing_outside_the_repository() -> None:
    problems = []
    for src in CODE:
        problems += _problems(src, {"path outside": OUTSIDE, "link outside": LINK,
                                    "issue number": ISSUE, "history": HISTORY})  # fmt: skip
    assert not problems, "\n".join(problems)


def test_results_tables_are_stamped() -> None:
    """Every table of docs/results.md follows a stamp line: command · commit · machine."""
    lines = (ROOT / "docs" / "results.md").read_text().splitlines()
    stamp = re.compile(r"^`[^`]+`.* · commit [0-9a-f]{7,40} · .+")
    last_stamp, unstamped = None, []
    for n, line in enumerate(lines):
        if stamp.match(line):
            last_stamp = n
        elif line.startswith("|---"):
            if last_stamp is None:
                unstamped.append(f"docs/results.md:{n}: {lines[n - 1]}")
        elif line.startswith("## "):
            last_stamp = None
    assert not unstamped, "tables without a stamp line:\n" + "\n".join(unstamped)


@pytest.mark.parametrize(
    ("text", "bad"),
    [
        ("see ../shared/reference/minimega.md", True),
        ("Issue: #5. Measurements", True),
        ("fixed in the last session", True),
        ("(minimega issue #1298)", True),
        ("the recipe of real-infra.md §2", True),
        ("minimega §2.4 step 3", True),
        ("see §2 of this page", False),
        ("[vjob files](#1-vjob-toml-files)", False),
        ("a VM named #0.41", False),
        ("https://example.org", True),
        ("http://127.0.0.1:9400/metrics", False),
        ('f"http://{host}:{port}/metrics"', False),
    ],
)
def test_the_rules_catch_what_they_are_for(text: str, bad: bool) -> None:
    hit = any(r.search(text) for r in (OUTSIDE, LINK, ISSUE, HISTORY))
    assert hit is bad
