"""``dvms sim run`` / ``dvms sim compare`` end to end on a tiny scenario."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from dvms.cli.main import main

TINY = """
name = "tiny"
seed = 4
duration_s = 600
[hosts]
count = 12
"""

KEYS = (
    "hosts",
    "vms",
    "overload_events",
    "overloads_resolved",
    "overloads_failed",
    "cumulated_violation_s",
    "migrations",
    "mean_partition_size",
    "invariant_violations",
    "launch_requests",
    "launches_placed",
    "launch_latency_p50_s",
    "launch_latency_p99_s",
    "violations",
    "mean_violation_s",
    "mean_migration_s",
    "monitor_period_s",
    "inter_site_operations",
    "solver_s",
    "reconfiguration_s",
    "virtual_per_wall",
    "wall_s",
)


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    return path


def test_run_json_has_every_key(tiny: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sim", "run", str(tiny), "--scheduler", "centralized", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    missing = [k for k in KEYS if k not in out]
    assert not missing
    assert (out["hosts"], out["vms"], out["seed"], out["scheduler"]) == (12, 120, 4, "centralized")
    assert out["invariant_violations"] == 0


def test_run_seed_and_solver_time_override(tiny: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["sim", "run", str(tiny), "--scheduler", "static", "--json", "--seed", "9"]
    assert main([*args, "--solver-time", "measured"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["seed"], out["solver_time"]) == (9, "measured")


def test_run_human_output_and_files(tiny: Path, tmp_path: Path, capsys) -> None:
    out_dir = tmp_path / "out"
    assert main(["sim", "run", str(tiny), "--scheduler", "static", "--out", str(out_dir)]) == 0
    text = capsys.readouterr().out
    assert "tiny under static: 12 hosts, 120 VMs" in text
    assert json.loads((out_dir / "result.json").read_text())["scheduler"] == "static"
    assert (out_dir / "violation_over_time.png").stat().st_size > 1000


def test_unknown_scheduler_lists_known_ones(tiny: Path, capsys) -> None:
    assert main(["sim", "run", str(tiny), "--scheduler", "nope"]) == 1
    err = capsys.readouterr().err
    assert "unknown scheduler 'nope'" in err and "centralized" in err and "static" in err


def test_bad_scenario_is_a_user_error(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[hosts]\ncount = -1\n")
    assert main(["sim", "run", str(bad)]) == 1
    assert "hosts.count: must be > 0" in capsys.readouterr().err


def test_compare_writes_results_table_and_figures(tiny: Path, tmp_path: Path, capsys) -> None:
    out_dir = tmp_path / "cmp"
    argv = ["sim", "compare", str(tiny), "--schedulers", "static,centralized", "--seeds", "2"]
    assert main([*argv, "--out", str(out_dir)]) == 0
    text = capsys.readouterr().out
    assert "| cumulated violation time (s) |" in text
    results = json.loads((out_dir / "results.json").read_text())
    assert [(r["scheduler"], r["seed"]) for r in results] == [
        ("static", 4),
        ("centralized", 4),
        ("static", 5),
        ("centralized", 5),
    ]
    with (out_dir / "results.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 4 and "cumulated_violation_s" in rows[0]
    table = (out_dir / "table.md").read_text()
    assert "static (2 runs)" in table and "centralized (2 runs)" in table
    for name in (
        "violation_over_time",
        "violation_cdf",
        "partition_sizes",
        "cumulated_violation",
    ):
        assert (out_dir / f"{name}.png").stat().st_size > 1000


def test_scaling_reads_run_and_compare_results(tmp_path: Path, capsys) -> None:
    run = {"scheduler": "dvms", "hosts": 1024, "seed": 23, "cumulated_violation_s": 2048.0}
    rows = [
        {"scheduler": "dvms", "hosts": 256, "seed": s, "cumulated_violation_s": v}
        for s, v in ((23, 512.0), (24, 768.0))
    ]
    (tmp_path / "run.json").write_text(json.dumps(run))
    (tmp_path / "results.json").write_text(json.dumps(rows))
    png = tmp_path / "scaling.png"
    files = [str(tmp_path / "results.json"), str(tmp_path / "run.json")]
    assert main(["sim", "scaling", *files, "--out", str(png)]) == 0
    assert png.stat().st_size > 1000
    out = capsys.readouterr().out
    assert "256 seed 24:     3.00 s/host" in out and "1024 seed 23:     2.00 s/host" in out
    (tmp_path / "bad.json").write_text(json.dumps({"scheduler": "dvms"}))
    assert main(["sim", "scaling", str(tmp_path / "bad.json"), "--out", str(png)]) == 1


def test_a_bad_out_directory_is_refused_before_the_run(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    """``--out`` naming a file was found only after the whole simulation, as a
    traceback: it is checked first now, and no scenario runs."""
    import dvms.sim.run

    def no_run(*args: object, **kw: object) -> None:
        raise AssertionError("the simulation ran before --out was checked")

    monkeypatch.setattr(dvms.sim.run, "run_scenario", no_run)
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    for cmd in (
        ["sim", "run", str(tiny), "--scheduler", "static", "--out", str(a_file)],
        ["sim", "compare", str(tiny), "--schedulers", "static", "--out", str(a_file)],
        ["sim", "run", str(tiny), "--scheduler", "static", "--out", str(a_file / "sub")],
    ):
        assert main(cmd) == 1
        err = capsys.readouterr().err
        assert f"--out {cmd[-1]}:" in err and "Traceback" not in err, err
