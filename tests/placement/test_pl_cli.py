"""``dvms solve``: MODEL.toml and --btrplace, text and JSON, errors."""

import json
from pathlib import Path

import pytest

from dvms.cli.main import main

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "btrplace"

MODEL = """
relief = true

[config]
load = "cpucommit"

[[hosts]]
name = "h1"
cpus = 4
memory = 16384
  [[hosts.vms]]
  name = "hot1"
  vcpus = 4
  memory = 2048
  cpu_demand = 3.5
  [[hosts.vms]]
  name = "hot2"
  vcpus = 2
  memory = 2048
  cpu_demand = 1.5

[[hosts]]
name = "h2"
cpus = 4
memory = 16384

[[hosts]]
name = "h3"
cpus = 4
memory = 16384

[vjob]
name = "web"
  [[vjob.vms]]
  name = "web[1-2]"
  memory = 1024
  [[vjob.constraints]]
  kind = "spread"
  vms = "web[1-2]"
"""


def run_json(capsys, *argv):
    code = main(["solve", *argv, "--json"])
    captured = capsys.readouterr()
    return code, json.loads(captured.out) if captured.out else None, captured.err


@pytest.mark.parametrize(
    ("name", "migrations"),
    [
        ("IssuesTest.testFoo.json", 2),
        ("IssuesTest.issue72c.json", 0),
        ("issue-131-1.json.gz", None),
    ],
)
def test_btrplace_instances(capsys, name, migrations):
    path = DATA / name
    if not path.exists():
        pytest.skip("shared data not available")
    code, out, _ = run_json(capsys, "--btrplace", str(path))
    assert code == 0
    assert out["status"] == "solved" and out["viable"] is True
    assert isinstance(out["solve_s"], float)
    if migrations is not None:
        assert out["migrations"] == migrations
    else:
        assert out["migrations"] > 0 and out["actions"]
    if name == "IssuesTest.testFoo.json":
        assert out["placement"] == {"0": 1, "1": 0}
        assert {(a["vm"], a["from"], a["to"]) for a in out["actions"]} == {(0, 0, 1), (1, 1, 0)}
    if name == "IssuesTest.issue72c.json":
        assert out["actions"] == [] and len(out["placement"]) == 20


def test_model_launch_then_relief(tmp_path, capsys):
    path = tmp_path / "model.toml"
    path.write_text(MODEL)
    code, out, err = run_json(capsys, str(path))
    assert code == 0, err
    assert out["status"] == "solved" and out["viable"] is True
    launched = out["launched"]
    assert set(launched) == {"web1", "web2"} and launched["web1"] != launched["web2"]
    # h1 is overloaded (5 CPUs of demand on 4): one VM leaves it
    assert out["migrations"] >= 1
    assert out["placement"]["hot1"] == "h1" or out["placement"]["hot2"] == "h1"
    kinds = [a["kind"] for a in out["actions"]]
    assert kinds[:2] == ["boot", "boot"]


def test_model_text_output(tmp_path, capsys):
    path = tmp_path / "model.toml"
    path.write_text(MODEL)
    assert main(["solve", str(path)]) == 0
    text = capsys.readouterr().out
    assert "final placement viable" in text and "launched: web1@" in text


def test_model_infeasible_exit_3_and_explains(tmp_path, capsys):
    path = tmp_path / "model.toml"
    path.write_text(MODEL.replace('kind = "spread"', 'kind = "fence"\n  hosts = ["h1"]')
                    .replace('name = "web[1-2]"\n  memory = 1024',
                             'name = "web[1-2]"\n  memory = 8000'))  # fmt: skip
    code, out, _ = run_json(capsys, str(path))
    assert code == 3 and out["status"] == "infeasible"
    assert out["reason"].startswith("no host fits web")


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        (("memory = 16384", "memory = -5"), "hosts[0].memory: expected an integer >= 0"),
        (('kind = "spread"', 'kind = "sprade"'), "sprade"),
        (('[[hosts]]\nname = "h2"', '[[hosts]]\nname = "h1"'), "duplicate host 'h1'"),
        (
            (
                "cpus = 4\nmemory = 16384\n  [[hosts.vms]]",
                "cpus = 4\nmemory = 16384\n  colour = 1\n  [[hosts.vms]]",
            ),
            "unknown key 'colour'",
        ),
    ],
)
def test_model_bad_input(tmp_path, capsys, patch, message):
    path = tmp_path / "model.toml"
    text = MODEL.replace(*patch, 1)
    assert text != MODEL
    path.write_text(text)
    assert main(["solve", str(path)]) == 1
    captured = capsys.readouterr()
    assert message in captured.err and captured.out == ""


def test_usage_errors(tmp_path, capsys):
    assert main(["solve"]) == 1
    assert "either MODEL.toml or --btrplace" in capsys.readouterr().err
    bad = tmp_path / "x.json"
    bad.write_text("[1, 2")
    assert main(["solve", "--btrplace", str(bad)]) == 1
    assert "malformed JSON" in capsys.readouterr().err


SCRIPTED = """
[[hosts]]
name = "n1"
cpus = 8
memory = 16384

[[hosts]]
name = "n2"
cpus = 8
memory = 16384

[[hosts]]
name = "n3"
cpus = 8
memory = 16384
  [[hosts.vms]]
  name = "old"

[vjob]
name = "app"
script = '''
ban(web[1..3], {@n1});
'''
  [[vjob.vms]]
  name = "db"
  schedule = "n2"
  coschedule = 0
  [[vjob.vms]]
  name = "web[1-3]"
"""


def test_model_with_script_and_minimega_fields(tmp_path, capsys):
    path = tmp_path / "model.toml"
    path.write_text(SCRIPTED)
    code, out, err = run_json(capsys, str(path))
    assert code == 0, err
    assert out["launched"]["db"] == "n2"
    # n1 is banned, n2 is reserved by the coschedule-0 db: every web VM lands on n3
    assert {out["launched"][f"web{i}"] for i in (1, 2, 3)} == {"n3"}
    assert out["viable"] is True and out["migrations"] == 0


def test_global_json_flag_works_too(capsys):
    path = DATA / "IssuesTest.testFoo.json"
    if not path.exists():
        pytest.skip("shared data not available")
    assert main(["--json", "solve", "--btrplace", str(path)]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "solved"


def test_local_search_flags_reach_the_engine(tmp_path, capsys, monkeypatch):
    """``--local-search N`` and ``--objective`` set the engine's local search; a
    BtrPlace instance's declared objective is the default and is optimised unless
    ``--local-search 0``; a model's [config] is overridden."""
    import dvms.placement.modelfile as modelfile
    import dvms.placement.repair as repair
    from dvms.placement.config import INSTANCE_OBJECTIVE_EVALS

    assert INSTANCE_OBJECTIVE_EVALS > 0  # the default this test is about

    seen = []
    solve, solve_model = repair.solve_repair, modelfile.solve_model

    def spy(snapshot, constraints=(), config=None, **kw):
        seen.append((config.local_search_evals, config.objective))
        return solve(snapshot, constraints, config, **kw)

    def spy_model(model):
        seen.append((model.config.local_search_evals, model.config.objective))
        return solve_model(model)

    monkeypatch.setattr(repair, "solve_repair", spy)
    monkeypatch.setattr(modelfile, "solve_model", spy_model)
    path = DATA / "IssuesTest.testFoo.json"
    if not path.exists():
        pytest.skip("shared data not available")
    assert json.loads(path.read_text())["objective"]["id"] == "minimizeMTTR"
    code, out, _ = run_json(capsys, "--btrplace", str(path), "--local-search", "50")
    assert code == 0 and out["viable"] is True and seen.pop() == (50, "mttr")
    code, _, _ = run_json(capsys, "--btrplace", str(path), "--objective", "migrations")
    assert code == 0 and seen.pop() == (INSTANCE_OBJECTIVE_EVALS, "migrations")
    code, _, _ = run_json(capsys, "--btrplace", str(path))
    assert code == 0 and seen.pop() == (INSTANCE_OBJECTIVE_EVALS, "mttr")
    code, _, _ = run_json(capsys, "--btrplace", str(path), "--local-search", "0")
    assert code == 0 and seen.pop() == (0, "mttr")

    model = tmp_path / "model.toml"
    searched = 'load = "cpucommit"\nlocal_search_evals = 9'
    model.write_text(MODEL.replace('load = "cpucommit"', searched))
    code, out, _ = run_json(capsys, str(model))
    assert code == 0 and seen.pop() == (9, "migrations")
    code, out, _ = run_json(capsys, str(model), "--local-search", "0", "--objective", "mttr")
    assert code == 0 and out["viable"] is True and seen.pop() == (0, "mttr")


def test_local_search_flag_errors(capsys):
    assert main(["solve", "--btrplace", "x.json", "--local-search", "-1"]) == 1
    assert "--local-search must be >= 0, not -1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["solve", "--btrplace", "x.json", "--objective", "fast"])
    assert "invalid choice: 'fast'" in capsys.readouterr().err


def test_the_command_knows_the_engines_objectives():
    from dvms.cli.solve import OBJECTIVES
    from dvms.placement.config import OBJECTIVES as ENGINE

    assert OBJECTIVES == ENGINE
