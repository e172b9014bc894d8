"""BtrPlace instances: import, the three shared instances, bad input."""

import gzip
import json
from dataclasses import replace
from pathlib import Path

import pytest

from dvms.placement import PlacementConfig, PlacementError, check_plan, solve_repair
from dvms.placement import constraints as c
from dvms.placement.btrplace import load_instance, parse_instance, plan_actions_json

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "btrplace"
CFG = PlacementConfig.btrplace()


def _instance(name):
    path = DATA / name
    if not path.exists():
        pytest.skip(f"{path} not available")
    return load_instance(path)


def test_testfoo_is_the_swap():
    inst = _instance("IssuesTest.testFoo.json")
    assert inst.snapshot.placement() == {"0": "0", "1": "1"}
    assert {k.kind for k in inst.constraints} == {"ban", "preserve"}
    plan = solve_repair(inst.snapshot, inst.constraints, CFG)
    assert plan.status == "solved"
    assert plan.placement == {"0": "1", "1": "0"}
    moves = sorted((a.vm, a.src, a.dst) for a in plan.actions if a.kind == "migrate")
    assert moves == [("0", "0", "1"), ("1", "1", "0")]
    # 2 leaving + 4 arriving = 6 <= 7: both can run at once
    assert all(a.start == 0 for a in plan.actions)
    assert check_plan(inst.snapshot, inst.constraints, plan.actions, CFG) == []


def test_issue72c_viable_gives_empty_plan():
    inst = _instance("IssuesTest.issue72c.json")
    plan = solve_repair(inst.snapshot, inst.constraints, CFG)
    assert plan.status == "solved" and plan.actions == ()
    assert plan.placement == inst.snapshot.placement()


def test_issue131_plan_exists_and_checks():
    inst = _instance("issue-131-1.json.gz")
    assert len(inst.snapshot.vms) == 136 and len(inst.snapshot.hosts) == 8
    plan = solve_repair(inst.snapshot, inst.constraints, CFG)
    assert plan.status == "solved" and plan.migrations > 0
    assert check_plan(inst.snapshot, inst.constraints, plan.actions, CFG) == []
    # without the plan, the initial placement is not viable
    assert check_plan(inst.snapshot, inst.constraints, [], CFG) != []


def _doc(constraints, running=((0, [0]), (1, [1])), ready=()):
    return {
        "model": {
            "mapping": {
                "onlineNodes": {
                    str(n): {"runningVMs": list(vms), "sleepingVMs": []} for n, vms in running
                },
                "offlineNodes": [],
                "readyVMs": list(ready),
            },
            "attributes": {"nodes": {}, "vms": {"0": {"migrate": 5}}},
            "views": [
                {
                    "id": "shareableResource",
                    "rcId": "cpu",
                    "defCapacity": 8,
                    "defConsumption": 2,
                    "nodes": {},
                    "vms": {"0": 4},
                }
            ],
        },
        "constraints": constraints,
        "objective": {"id": "minimizeMTTR"},
    }


def test_reference_example_boots_the_ready_vm_away_from_vm0():
    doc = _doc(
        [{"id": "running", "vm": 2}, {"id": "spread", "vms": [0, 2], "continuous": True}],
        ready=[2],
    )
    inst = parse_instance(doc)
    vm0 = next(v for v in inst.snapshot.vms if v.name == "0")
    assert vm0.usage == {"cpu": 4} and vm0.durations["migrate"] == 5
    plan = solve_repair(inst.snapshot, inst.constraints, CFG)
    assert [(a.kind, a.vm, a.dst) for a in plan.actions] == [("boot", "2", "1")]
    assert check_plan(inst.snapshot, inst.constraints, plan.actions, CFG) == []


def test_continuous_ban_already_violated_is_infeasible():
    doc = _doc([{"id": "ban", "vm": 0, "nodes": [0], "continuous": True}])
    inst = parse_instance(doc)
    plan = solve_repair(inst.snapshot, inst.constraints, CFG)
    assert plan.status == "infeasible" and "continuous ban" in plan.reason
    discrete = parse_instance(_doc([{"id": "ban", "vm": 0, "nodes": [0], "continuous": False}]))
    assert solve_repair(discrete.snapshot, discrete.constraints, CFG).status == "solved"


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.pop("model"), "missing 'model'"),
        (
            lambda d: d["constraints"].append({"id": "seq", "vms": [0]}),
            "unsupported constraint 'seq'",
        ),
        (
            lambda d: d["constraints"].append({"id": "ban", "vm": 9, "nodes": [0]}),
            r"constraint #0 \(ban\): unknown VM '9'",
        ),
        (
            lambda d: d["constraints"].append({"id": "ban", "vm": 0, "nodes": [7]}),
            r"constraint #0 \(ban\): unknown host '7'",
        ),
        (lambda d: d["model"]["mapping"]["readyVMs"].append(0), "VM 0 is declared twice"),
        (lambda d: d["model"]["views"][0]["vms"].update({"0": -3}), "must be a non-negative"),
        (lambda d: d["model"]["mapping"]["onlineNodes"]["0"]["runningVMs"].append(-1), "ids must"),
    ],
)
def test_bad_instances_name_the_problem(mutate, message):
    doc = _doc([])
    mutate(doc)
    with pytest.raises(PlacementError, match=message):
        inst = parse_instance(doc)
        solve_repair(inst.snapshot, inst.constraints, CFG)


def test_gz_and_malformed_files(tmp_path):
    good = tmp_path / "i.json.gz"
    with gzip.open(good, "wt") as fh:
        json.dump(_doc([]), fh)
    assert len(load_instance(good).snapshot.vms) == 2
    bad = tmp_path / "bad.json"
    bad.write_text('{"model": ')
    with pytest.raises(PlacementError, match=r"bad.json: malformed JSON at line 1"):
        load_instance(bad)
    with pytest.raises(PlacementError, match="no such file"):
        load_instance(tmp_path / "nope.json")


def test_overbook_and_quarantine():
    doc = _doc(
        [
            {"id": "overbook", "node": 1, "rc": "cpu", "ratio": 1.5, "continuous": True},
            {"id": "quarantine", "node": 0},
        ]
    )
    inst = parse_instance(doc)
    host1 = next(h for h in inst.snapshot.hosts if h.name == "1")
    assert host1.overcommit == {"cpu": 1.5}
    kinds = sorted(k.kind for k in inst.constraints)
    assert kinds == ["ban", "root"]
    root = next(k for k in inst.constraints if isinstance(k, c.Root))
    assert root.vms == ("0",)


def test_split_keeps_parts_apart():
    doc = _doc([{"id": "split", "parts": [[0], [1, 2]], "continuous": False}],
               running=((0, [0, 1]), (1, [2])))  # fmt: skip
    doc["model"]["mapping"]["onlineNodes"]["2"] = {"runningVMs": [], "sleepingVMs": []}
    inst = parse_instance(doc)
    assert inst.constraints == (c.Split((("0",), ("1", "2"))),)
    plan = solve_repair(inst.snapshot, inst.constraints, CFG)
    assert plan.status == "solved" and plan.migrations == 1
    assert plan.placement["1"] != plan.placement["0"]
    assert check_plan(inst.snapshot, inst.constraints, plan.actions, CFG) == []
    assert check_plan(inst.snapshot, inst.constraints, [], CFG) != []
    with pytest.raises(PlacementError, match="parts overlap"):
        parse_instance(_doc([{"id": "split", "parts": [[0], [0, 1]]}]))


def test_offline_node_is_emptied_and_checked():
    doc = _doc([{"id": "offline", "node": 0}, {"id": "offline", "node": 0}])
    doc["model"]["mapping"]["onlineNodes"]["2"] = {"runningVMs": [], "sleepingVMs": []}
    inst = parse_instance(doc)
    assert inst.constraints == (c.Offline(frozenset({"0"})),) * 2
    plan = solve_repair(inst.snapshot, inst.constraints, CFG)
    assert plan.status == "solved" and plan.migrations == 1
    assert plan.placement["0"] != "0" and plan.placement["1"] == "1"
    assert check_plan(inst.snapshot, inst.constraints, plan.actions, CFG) == []
    assert any(
        "offline 0 still runs 0" in p for p in check_plan(inst.snapshot, inst.constraints, [], CFG)
    )


def test_offline_node_with_a_root_vm_is_infeasible():
    doc = _doc([{"id": "offline", "node": 0}, {"id": "root", "vm": 0}])
    inst = parse_instance(doc)
    plan = solve_repair(inst.snapshot, inst.constraints, CFG)
    assert plan.status == "infeasible" and "offline" in plan.reason


def _four_nodes(constraints):
    doc = _doc(constraints)
    for n in ("2", "3"):
        doc["model"]["mapping"]["onlineNodes"][n] = {"runningVMs": [], "sleepingVMs": []}
    return doc


def test_split_among_puts_each_part_in_its_own_group():
    among = {"id": "splitAmong", "vParts": [[0], [1]], "pParts": [[0, 1], [2, 3]]}
    inst = parse_instance(_four_nodes([among]))
    groups = (frozenset({"0", "1"}), frozenset({"2", "3"}))
    assert inst.constraints == (c.SplitAmong((("0",), ("1",)), groups),)
    plan = solve_repair(inst.snapshot, inst.constraints, CFG)
    assert plan.status == "solved" and plan.migrations == 1
    assert {plan.placement["0"] in groups[0], plan.placement["1"] in groups[0]} == {True, False}
    assert check_plan(inst.snapshot, inst.constraints, plan.actions, CFG) == []
    assert any("share group" in p for p in check_plan(inst.snapshot, inst.constraints, [], CFG))


def test_continuous_split_among_keeps_parts_in_their_groups():
    among = {"id": "splitAmong", "vParts": [[0], [1]], "pParts": [[0, 2], [1, 3]],
             "continuous": True}  # fmt: skip
    ban = {"id": "ban", "vm": 0, "nodes": [0]}
    inst = parse_instance(_four_nodes([among, ban]))
    plan = solve_repair(inst.snapshot, inst.constraints, CFG)
    assert plan.status == "solved" and plan.placement["0"] == "2"
    assert check_plan(inst.snapshot, inst.constraints, plan.actions, CFG) == []
    trapped = parse_instance(_four_nodes([among, {**ban, "nodes": [0, 2]}]))
    assert solve_repair(trapped.snapshot, trapped.constraints, CFG).status == "infeasible"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [("vParts", [[0], [0, 1]], "vParts overlap"), ("pParts", [[0, 1], [1]], "pParts overlap")],
)
def test_split_among_refuses_overlaps(field, value, message):
    among = {"id": "splitAmong", "vParts": [[0], [1]], "pParts": [[0], [1]], field: value}
    with pytest.raises(PlacementError, match=message):
        parse_instance(_doc([among]))


def test_sleeping_suspends_a_running_vm_on_its_host():
    doc = _doc([{"id": "sleeping", "vm": 0}, {"id": "running", "vm": 2}], ready=[2])
    doc["model"]["attributes"]["vms"]["0"]["suspend"] = 3
    doc["model"]["views"][0]["defCapacity"] = 4  # vm 2 fits on node 0 once vm 0 sleeps
    doc["model"]["views"][0]["vms"]["2"] = 4
    inst = parse_instance(doc)
    plan = solve_repair(inst.snapshot, inst.constraints, CFG)
    assert plan.status == "solved" and "0" not in plan.placement
    suspend = next(a for a in plan.actions if a.kind == "suspend")
    assert (suspend.vm, suspend.src, suspend.dst, suspend.end - suspend.start) == ("0", "0", "0", 3)
    boot = next(a for a in plan.actions if a.kind == "boot")
    assert boot.dst == "0" and boot.start >= suspend.end  # room only once it sleeps
    assert check_plan(inst.snapshot, inst.constraints, plan.actions, CFG) == []
    shutdown = [replace(a, kind="shutdown", dst=None) if a.kind == "suspend" else a
                for a in plan.actions]  # fmt: skip
    assert any(
        "0 is not suspended" in p
        for p in check_plan(inst.snapshot, inst.constraints, shutdown, CFG)
    )
    assert plan_actions_json([suspend])[0] == {"id": "suspendVM", "vm": 0, "start": suspend.start,
                                               "end": suspend.end, "from": 0, "to": 0}  # fmt: skip


def test_sleeping_of_a_ready_vm_is_infeasible():
    inst = parse_instance(_doc([{"id": "sleeping", "vm": 2}], ready=[2]))
    plan = solve_repair(inst.snapshot, inst.constraints, CFG)
    assert plan.status == "infeasible" and "only a running VM can be suspended" in plan.reason


def test_a_full_rack_makes_room_before_everything_moves():
    """A VM confined to its rack (continuous among) must leave a node going offline and
    its rack is full: the VMs of that rack make room, the other rack is left alone."""
    racks = [[0, 1], [2, 3]]
    doc = _four_nodes([
        {"id": "offline", "node": 0},
        {"id": "among", "vms": [0], "parts": racks, "continuous": True},
    ])  # fmt: skip
    mapping = doc["model"]["mapping"]["onlineNodes"]
    mapping["1"]["runningVMs"] = [1, 4]
    mapping["2"]["runningVMs"] = [5]
    doc["model"]["views"][0]["vms"] = {"0": 4, "1": 4, "4": 4, "5": 4}
    inst = parse_instance(doc)
    plan = solve_repair(inst.snapshot, inst.constraints, CFG)
    assert plan.status == "solved" and plan.placement["0"] == "1"
    assert plan.placement["5"] == "2"  # the other rack's VM did not move
    assert check_plan(inst.snapshot, inst.constraints, plan.actions, CFG) == []
