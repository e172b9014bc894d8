"""dvms vjob validate: a vjob file checked without a cluster."""

import json

from dvms.cli.main import main

GOOD = """
name = "shop"
namespace = "s"
[[vms]]
name = "web[1-3]"
vcpus = 2
memory = 1024
[[constraints]]
kind = "spread"
vms = "web[1-3]"
"""


def test_validate_says_what_the_file_asks_for(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("DVMS_SOCKET", raising=False)
    path = tmp_path / "v.toml"
    path.write_text(GOOD)
    assert main(["vjob", "validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert "valid vjob shop in namespace s: 3 VMs (web1, web2, web3), 6 vCPUs, 3072 MiB" in out
    assert main(["vjob", "validate", str(path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["valid"] is True
    assert data["constraints"] == [{"kind": "spread", "vms": ["web1", "web2", "web3"],
                                    "hosts": [], "soft": False}]  # fmt: skip


def test_validate_names_the_problem_and_exits_1(tmp_path, capsys):
    path = tmp_path / "v.toml"
    path.write_text(GOOD.replace("vcpus = 2", "vcpus = 0"))
    assert main(["vjob", "validate", str(path)]) == 1
    err = capsys.readouterr().err
    assert "vms[0].vcpus" in err and "must be >= 1" in err
    assert main(["vjob", "validate", str(tmp_path / "missing.toml")]) == 1
    assert "cannot read" in capsys.readouterr().err
