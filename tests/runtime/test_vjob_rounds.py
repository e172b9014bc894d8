"""A vjob is placed whole or not at all (``VjobService._place``), against a scripted
node (``FakeNode`` stands for every capability the service takes): a refused launch
that left some VMs created is followed by a launch of the rest; a vjob still incomplete
after ``launch_rounds`` is rolled back; a refusal on names that belong to other VMs
removes nothing."""

from __future__ import annotations

import random
from dataclasses import asdict

import trio

from dvms.overlay.messages import Contact
from dvms.partition.events import EventDone, Placed
from dvms.partition.messages import LaunchVm, WireConstraint
from dvms.runtime.capabilities import Handlers
from dvms.runtime.messages import HostReply, KillVms, VmRow
from dvms.runtime.services.state import UNCHANGED, Versioned
from dvms.runtime.services.vjobs import NAME_TAKEN, VjobConfig, VjobService


class FakeState:
    def __init__(self) -> None:
        self.values: dict[str, object] = {}

    async def read(self, name):
        return Versioned(self.values.get(name), 1 if name in self.values else 0)

    async def update(self, name, fn):
        new, result = fn(self.values.get(name))
        if new is not UNCHANGED:
            self.values[name] = new
        return self.values.get(name), result


class FakeNode:
    """Hosts h1..h3; ``outcomes`` scripts each launch: (ok, reason, VMs it creates)."""

    def __init__(self, outcomes) -> None:
        self.outcomes = list(outcomes)
        self.vms: dict[str, str] = {}  # name -> host
        self.launched: list[tuple[str, ...]] = []
        self.killed: list[tuple[str, ...]] = []
        self.state = FakeState()
        self.contact = Contact(1, "127.0.0.1", 9)

    async def launch(self, vms, constraints):
        self.launched.append(tuple(v.name for v in vms))
        ok, reason, creates = self.outcomes.pop(0)
        for i, name in enumerate(creates):
            self.vms[name] = f"h{i % 3 + 1}"
        placed = tuple(Placed(n, "ns", self.vms[n]) for n in creates) if ok else ()
        return EventDone(7, "launch", ok, reason, 0.0, 1.0, placed, 3)

    async def gather(self, msg):
        if isinstance(msg, KillVms):
            self.killed.append(msg.names)
            for n in msg.names:
                self.vms.pop(n, None)
            return [], []
        rows = {h: [] for h in ("h1", "h2", "h3")}
        for n, h in self.vms.items():
            rows[h].append(VmRow(n, "ns", "running", 1, 64))
        return [HostReply(h, 8, 1024, "test:///", tuple(r)) for h, r in rows.items()], []

    async def get(self, name):
        return None  # no directory records: only live hosts count


def body(names):
    vms = [LaunchVm(n, "ns", 1, 64) for n in names]
    spread = WireConstraint("spread", tuple(f"ns/{n}" for n in names))
    return {"vms": [asdict(v) for v in vms], "constraints": [asdict(spread)]}


async def place(runner, names, tmp_path):
    service = VjobService(
        tmp_path,
        host_name="h1",
        state=runner.state,
        requests=runner,
        peers=runner,
        dht=runner,
        launcher=runner,
        directory=runner,
        spawn=None,
        handlers=Handlers(),
        rng=random.Random(1),
        config=VjobConfig(launch_rounds=3),
    )
    record = {"id": "j1", "owner": service._owner_of(runner.contact), "body": body(names)}
    runner.state.values["vjob/j1"] = {**record, "state": "placing", "history": []}
    await service._place("j1", record, False)
    return runner.state.values["vjob/j1"]


def test_a_partly_created_vjob_is_completed_by_a_second_launch(tmp_path):
    runner = FakeNode([(False, "lease expired", ["a"]), (True, "", ["b", "c"])])
    rec = trio.run(place, runner, ["a", "b", "c"], tmp_path)
    assert rec["state"] == "done", rec
    assert runner.launched == [("a", "b", "c"), ("b", "c")]
    assert sorted(p[0] for p in rec["placed"]) == ["a", "b", "c"]
    assert runner.killed == []


def test_a_vjob_that_stays_incomplete_is_rolled_back(tmp_path):
    runner = FakeNode([(False, "lease expired", ["a"]), (False, "no solution", ["b"])] * 2)
    rec = trio.run(place, runner, ["a", "b", "c"], tmp_path)
    assert rec["state"] == "failed"
    assert len(runner.launched) == 3  # launch_rounds
    assert "rolled back 2 VMs" in rec["reason"], rec["reason"]
    assert runner.killed == [("a", "b")] and runner.vms == {}
    assert rec["placed"] == []


def test_a_refusal_on_names_in_use_removes_nothing(tmp_path):
    runner = FakeNode([(False, f"{NAME_TAKEN}: ns/a (runs on h2)", [])])
    runner.vms["a"] = "h2"  # another vjob's VM of that name
    rec = trio.run(place, runner, ["a", "b"], tmp_path)
    assert rec["state"] == "failed" and rec["reason"].startswith(NAME_TAKEN)
    assert runner.killed == [] and runner.vms == {"a": "h2"}
