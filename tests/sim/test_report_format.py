"""Tables and figures of ``dvms sim`` are for people: metrics in words with units,
numbers rounded, no spread where there is one seed, no Vivaldi map of a single site."""

from __future__ import annotations

from pathlib import Path

import pytest

from dvms.cli.main import main
from dvms.sim.report import RunRecord, for_people, format_table


@pytest.mark.parametrize(
    ("x", "text"),
    [(4316.217, "4,316"), (176845.0, "176,845"), (0.49312, "0.493"), (21.14, "21.1"),
     (12.0, "12"), (0.0, "0"), (1.5, "1.5")],
)  # fmt: skip
def test_numbers_are_rounded_for_people(x, text):
    assert for_people(x) == text


def _record(scheduler: str, violation: float) -> RunRecord:
    return RunRecord({"scheduler": scheduler, "cumulated_violation_s": violation,
                      "violations": 3, "wall_s": 1.23456})  # fmt: skip


def test_the_table_speaks_words_and_shows_a_spread_only_over_several_seeds():
    one = format_table([_record("dvms", 4316.217)])
    assert "| cumulated violation time (s) | 4,316 |" in one
    assert "±" not in one
    two = format_table([_record("dvms", 4000.0), _record("dvms", 4200.0)])
    assert "| cumulated violation time (s) | 4,100 ± 141 |" in two
    assert "cumulated_violation_s" not in two


TINY = """
name = "tiny"
seed = 4
duration_s = 120
[hosts]
count = 12
"""


def test_a_single_site_run_draws_no_vivaldi_map(tmp_path: Path, capsys):
    scn = tmp_path / "tiny.toml"
    scn.write_text(TINY)
    assert main(["sim", "run", str(scn), "--out", str(tmp_path / "out"), "--json"]) == 0
    written = {p.name for p in (tmp_path / "out").iterdir()}
    assert "result.json" in written
    assert "vivaldi_map.png" not in written
