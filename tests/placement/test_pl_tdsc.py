"""BtrPlace's TDSC benchmark family: the checker accepts the engine's plan on every
shared instance, cut down to two racks so the suite stays fast (the full instances run
in ``bench/placement.py``, rows (f)).

A cut keeps the nodes of two of the 20 racks the ``among`` constraints choose from
(every node when an instance has no ``among``: the first 500), the VMs running there,
one ready VM in ten, and every constraint restricted to what is kept -- the same
kinds, modes and proportions as the full instance.
"""

import gzip
import json
from pathlib import Path

import pytest

from dvms.placement import PlacementConfig, check_plan, solve_repair
from dvms.placement import constraints as c
from dvms.placement.btrplace import parse_instance

TDSC = Path(__file__).resolve().parents[3] / "shared" / "data" / "btrplace" / "tdsc"
NAMES = [
    "li-r3-p5000-c0",
    "li-r4-p5000-c66",
    "li-r5-p5000-c100",
    "nr-r3-p5000-c0",
    "nr-r3-p5000-c33",
    "nr-r4-p5000-c33",
    "nr-r5-p5000-c66",
    "nr-r6-p5000-c100",
]
CFG = PlacementConfig.btrplace()


def _cut(doc: dict, racks: int = 2) -> dict:
    """A smaller instance of the same family (see the module docstring)."""
    mapping = doc["model"]["mapping"]
    amongs = [k for k in doc["constraints"] if k["id"] == "among"]
    if amongs:
        nodes = {n for part in amongs[0]["parts"][:racks] for n in part}
    else:
        every = sorted([*map(int, mapping["onlineNodes"]), *mapping.get("offlineNodes", [])])
        nodes = set(every[: 250 * racks])
    online = {n: v for n, v in mapping["onlineNodes"].items() if int(n) in nodes}
    running = {vm for v in online.values() for vm in v["runningVMs"] + v["sleepingVMs"]}
    ready = [vm for vm in mapping.get("readyVMs", []) if vm % 10 == 0]
    vms = running | set(ready)
    cons = []
    for k in doc["constraints"]:
        k = dict(k)
        if "node" in k and k["node"] not in nodes:
            continue
        if "vm" in k and k["vm"] not in vms:
            continue
        if "vms" in k:
            k["vms"] = [v for v in k["vms"] if v in vms]
            if not k["vms"]:
                continue
        if "nodes" in k:
            k["nodes"] = [n for n in k["nodes"] if n in nodes]
        if k["id"] == "among":
            k["parts"] = [p for p in ([n for n in p if n in nodes] for p in k["parts"]) if p]
        cons.append(k)
    views = []
    for view in doc["model"]["views"]:
        view = dict(view)
        if view.get("id") == "shareableResource":
            view["nodes"] = {n: a for n, a in view["nodes"].items() if int(n) in nodes}
            view["vms"] = {v: a for v, a in view["vms"].items() if int(v) in vms}
        views.append(view)
    model = {
        **doc["model"],
        "views": views,
        "mapping": {
            "onlineNodes": online,
            "offlineNodes": [n for n in mapping.get("offlineNodes", []) if n in nodes],
            "readyVMs": ready,
        },
    }
    return {**doc, "model": model, "constraints": cons}


@pytest.fixture(scope="module", params=NAMES)
def cut(request):
    path = TDSC / f"{request.param}.json.gz"
    if not path.exists():
        pytest.skip(f"{path} not available")
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return request.param, parse_instance(_cut(json.load(fh)), source=request.param)


def test_the_checker_accepts_the_plan_of_every_tdsc_cut(cut):
    name, inst = cut
    kinds = {k.kind for k in inst.constraints}
    assert len(inst.snapshot.hosts) == 500 and len(inst.snapshot.vms) > 500
    if name.startswith("nr"):  # state constraints: VMs to boot, nodes to keep offline
        assert {"running", "offline"} <= kinds
    if not name.endswith("-c0"):
        assert {"spread", "among"} <= kinds
    plan = solve_repair(inst.snapshot, inst.constraints, CFG)
    assert plan.status == "solved", plan.reason
    assert check_plan(inst.snapshot, inst.constraints, plan.actions, CFG) == []
    boots = {a.vm for a in plan.actions if a.kind == "boot"}
    forced = {key for k in inst.constraints if isinstance(k, c.Running) for key in k.vms}
    ready = {vm.key for vm in inst.snapshot.vms if vm.state == "ready"}
    assert boots == forced & ready


def test_the_checker_refuses_a_tdsc_cut_left_as_it_is(cut):
    """Not a vacuous pass: the cut needs a plan (VMs to boot or overloaded nodes)."""
    _, inst = cut
    assert check_plan(inst.snapshot, inst.constraints, [], CFG) != []
