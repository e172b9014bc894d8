"""``dvms debug loads --dir``: a node that is down must not hide the others."""

import json

from dvms.cli import debug
from dvms.cli.main import main
from dvms.runtime.client import ControlError


def test_loads_reports_the_nodes_that_answer_and_names_the_silent_one(
    tmp_path, monkeypatch, capsys
):
    socks = {"node1": "/s1", "node2": "/s2", "node3": "/s3"}
    monkeypatch.setattr(debug, "_sockets", lambda d: socks)

    def fake_call(sock, cmd, args, timeout):
        if sock == "/s2":
            raise ControlError("node at /s2 is not running (connection refused)")
        host = {"/s1": "node1", "/s3": "node3"}[sock]
        return {"host": host, "capacity": 8, "demand": 1.0, "overloaded": False,
                "partition": "free", "vms": []}  # fmt: skip

    monkeypatch.setattr(debug, "call", fake_call)
    assert main(["debug", "loads", "--dir", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert "node1" in out and "node3" in out
    assert "no answer from node2: node at /s2 is not running" in err
    assert main(["--json", "debug", "loads", "--dir", str(tmp_path)]) == 0
    out, _ = capsys.readouterr()
    assert [h["host"] for h in json.loads(out)["hosts"]] == ["node1", "node3"]


def test_loads_with_no_node_answering_is_an_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(debug, "_sockets", lambda d: {"node1": "/s1"})

    def down(sock, cmd, args, timeout):
        raise ControlError("no node control socket at /s1")

    monkeypatch.setattr(debug, "call", down)
    assert main(["debug", "loads", "--dir", str(tmp_path)]) == 1
    assert "no node of the cluster answered" in capsys.readouterr().err
