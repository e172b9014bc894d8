"""``dvms sim compare`` runs its runs one by one, in worker processes (--jobs) or on a
Dask cluster (--dask): every run's result is the same whichever way it ran, except the
two fields that time the machine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dvms.cli.main import main
from dvms.sim.campaign import WALL_FIELDS, plan_runs, run_all
from dvms.sim.scenario import load_scenario

TINY = """
name = "tiny"
seed = 4
duration_s = 300
[hosts]
count = 12
"""


def _runs_json(out: Path) -> list[dict]:
    data = json.loads((out / "results.json").read_text())
    runs = data["runs"] if isinstance(data, dict) else data
    return [{k: v for k, v in r.items() if k not in WALL_FIELDS} for r in runs]


def _compare(tmp_path: Path, name: str, *flags: str, capsys) -> list[dict]:
    scn = tmp_path / "tiny.toml"
    scn.write_text(TINY)
    args = ["sim", "compare", str(scn), "--schedulers", "static,dvms", "--seeds", "2",
            "--out", str(tmp_path / name), "--json", *flags]  # fmt: skip
    assert main(args) == 0
    printed = json.loads(capsys.readouterr().out)["runs"]
    return [{k: v for k, v in r.items() if k not in WALL_FIELDS} for r in printed]


def test_worker_processes_give_the_same_runs_as_one_process(tmp_path, capsys):
    serial = _compare(tmp_path, "serial", capsys=capsys)
    parallel = _compare(tmp_path, "parallel", "--jobs", "2", capsys=capsys)
    assert [r["scheduler"] for r in serial] == ["static", "dvms", "static", "dvms"]
    assert [r["seed"] for r in serial] == [4, 4, 5, 5]
    assert json.dumps(serial, sort_keys=True) == json.dumps(parallel, sort_keys=True)


def test_a_dask_cluster_gives_the_same_runs(tmp_path):
    distributed = pytest.importorskip(
        "distributed", reason="the optional Dask extra is not installed: pip install 'dvms[dask]'"
    )
    scn_path = tmp_path / "tiny.toml"
    scn_path.write_text(TINY)
    runs = plan_runs(load_scenario(scn_path), ["static", "dvms"], 2)
    here = run_all(runs)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:  # fmt: skip
        finished: list[int] = []
        there = run_all(runs, dask=cluster.scheduler_address,
                        on_done=lambda n, _run: finished.append(n))  # fmt: skip
    assert finished == [1, 2, 3, 4]

    def strip(records):
        return [{k: v for k, v in r.summary.items() if k not in WALL_FIELDS} for r in records]

    assert json.dumps(strip(here), sort_keys=True) == json.dumps(strip(there), sort_keys=True)
    assert [r.series_y for r in here] == [r.series_y for r in there]


def test_bad_campaign_flags_are_one_line_errors(tmp_path, capsys):
    scn = tmp_path / "tiny.toml"
    scn.write_text(TINY)
    base = ["sim", "compare", str(scn), "--out", str(tmp_path / "o")]
    assert main([*base, "--jobs", "-1"]) == 1
    assert "--jobs" in capsys.readouterr().err
    assert main([*base, "--jobs", "2", "--dask", "tcp://127.0.0.1:1"]) == 1
    assert "not both" in capsys.readouterr().err
    assert main([*base, "--dask", "tcp://127.0.0.1:1", "--seeds", "1"]) == 1
    assert "--dask tcp://127.0.0.1:1" in capsys.readouterr().err
