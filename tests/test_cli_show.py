"""``vm show`` of an HA VM listed by several rows: a fenced older copy, a restart under
way (no host yet) and the running copy are one VM of one namespace, not an ambiguity."""

from __future__ import annotations

import argparse
import json

import pytest

from dvms.cli import show
from dvms.cli.main import UserError


def _vm(host: str, state: str, gen: int, ha: str, namespace: str = "web") -> dict:
    return {"name": "db", "namespace": namespace, "state": state, "host": host,
            "vcpus": 1, "memory": 512, "ha": ha, "generation": gen}  # fmt: skip


def _answers(vms: list[dict]):
    def call(_args, cmd, _body):
        if cmd == "vm_info":
            return {"vms": vms, "unreachable": [], "truncated": []}
        assert cmd == "events"
        return {"events": [], "unreachable": []}

    return call


def _args(**kw) -> argparse.Namespace:
    return argparse.Namespace(name="db", namespace=None, json=True, **kw)


@pytest.mark.parametrize(
    "rows, shown",
    [
        # the restart is listed by its guardian, the old copy paused on its host
        ([_vm("h1", "PAUSED", 1, "fenced"), _vm("", "RESTARTING", 2, "restarting")], ""),
        # restarted: the running copy first, whatever the order of the rows
        ([_vm("h1", "PAUSED", 1, "fenced"), _vm("h3", "RUNNING", 2, "ok")], "h3"),
        ([_vm("h3", "RUNNING", 2, "ok"), _vm("h1", "PAUSED", 1, "fenced")], "h3"),
    ],
)
def test_the_running_or_newest_copy_is_described_and_the_others_listed(
    monkeypatch, capsys, rows, shown
):
    monkeypatch.setattr(show, "_call", _answers(rows))
    assert show.vm_show(_args()) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["vm"]["host"] == shown
    assert len(doc["other_copies"]) == 1 and doc["other_copies"][0] != doc["vm"]


def test_one_name_in_two_namespaces_still_needs_one(monkeypatch):
    rows = [_vm("h1", "RUNNING", 0, "", "web"), _vm("h2", "RUNNING", 0, "", "lab")]
    monkeypatch.setattr(show, "_call", _answers(rows))
    with pytest.raises(UserError, match=r"several namespaces \(lab, web\)"):
        show.vm_show(_args())
