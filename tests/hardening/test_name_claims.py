"""VM names are claimed atomically (``services/vmnames.py``): 50 submits of one VM name
at once, 5 from each of 10 real daemons on loopback: exactly one is placed, the other 49
are refused naming the winner's vjob and node. Once that VM is gone its name is free
again."""

from __future__ import annotations

import re
import shutil
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from dvms.partition.messages import LaunchVm
from dvms.runtime.client import ControlError, call
from dvms.runtime.localcluster import cluster_down, cluster_up

pytest.importorskip("libvirt", reason="libvirt-python not installed (needs libvirt-dev)")

NODES = 10
PER_NODE = 5


@pytest.fixture(scope="module")
def socks() -> Iterator[list[str]]:
    d = Path(tempfile.mkdtemp(prefix="dvms-claims-"))
    try:
        rows = cluster_up(d / "c", NODES, metrics=False)
        yield [r["socket"] for r in rows]
    finally:
        cluster_down(d / "c")
        shutil.rmtree(d, ignore_errors=True)


def _submit(sock: str, vm: str, tag: str) -> dict[str, Any]:
    body = {
        "vms": [asdict(LaunchVm(vm, "", 1, 256))],
        "constraints": [],
        "name": tag,
        "namespace": "",
        "wait": True,
    }
    return call(sock, "submit", body, timeout=180)


def test_fifty_submits_of_one_name_at_once_one_wins(socks: list[str]) -> None:
    results: list[tuple[str, Any]] = []
    lock = threading.Lock()
    start = threading.Barrier(NODES * PER_NODE)

    def one(i: int) -> None:
        sock = socks[i % NODES]
        start.wait()
        try:
            got: Any = _submit(sock, "race1", f"race-{i}")
        except ControlError as exc:
            got = exc
        with lock:
            results.append((f"node{i % NODES + 1}", got))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(NODES * PER_NODE)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    won = [(n, r) for n, r in results if isinstance(r, dict) and r.get("ok")]
    refused = [(n, r) for n, r in results if isinstance(r, ControlError)]
    assert len(won) == 1, results
    assert len(refused) == NODES * PER_NODE - 1, [r for r in results if r not in refused]
    winner_node, winner = won[0]
    assert winner["placed"][0]["name"] == "race1"
    for _, exc in refused:
        text = str(exc)
        m = re.search(r"claimed by vjob (\w+) submitted on (\w+)", text)
        assert m is not None, text
        assert m.groups() == (winner["id"], winner_node), text
    # exactly one VM of that name runs in the cluster
    vms = call(socks[3], "vm_info", {}, timeout=60)["vms"]
    assert [v["name"] for v in vms].count("race1") == 1
    # once it is gone, its name is claimed again (the stale claim is taken over)
    killed = call(socks[5], "vm_kill", {"names": "race1"}, timeout=60)
    assert [k["name"] for k in killed["killed"]] == ["race1"]
    again = _submit(socks[7], "race1", "race-again")
    assert again["ok"], again
