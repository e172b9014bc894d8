"""vjob TOML files: loading, defaults, and every validation error (dvms/placement/vjob.py)."""

import copy
import re
from pathlib import Path

import pytest

from dvms.placement.spec import ConstraintSpec
from dvms.placement.vjob import VjobError, load_vjob, vjob_from_dict

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "vjobs"

BASE = {
    "name": "shop",
    "vms": [
        {"name": "web[1-4]", "vcpus": 2, "memory": 4096, "networks": ["100"]},
        {"name": "db1", "image": "db.qcow2", "coschedule": 0, "tags": {"role": "db"}},
    ],
}


def build(**changes):
    d = copy.deepcopy(BASE)
    d.update(changes)
    return d


def test_vms_expand_ranges_and_take_defaults():
    vjob = vjob_from_dict(build(namespace="prod"), where="shop.toml")
    assert vjob.name == "shop" and vjob.namespace == "prod"
    assert [vm.name for vm in vjob.vms] == ["web1", "web2", "web3", "web4", "db1"]
    web1, db1 = vjob.vms[0], vjob.vms[4]
    assert (web1.vcpus, web1.memory_mib, web1.networks, web1.namespace) == (
        2,
        4096,
        ("100",),
        "prod",
    )
    assert (db1.vcpus, db1.memory_mib, db1.disk, db1.coschedule) == (1, 2048, "db.qcow2", 0)
    assert db1.tags == (("role", "db"),)
    assert web1.coschedule == -1 and web1.schedule is None and web1.colocate is None
    assert vjob.constraints == ()


def test_constraint_tables():
    vjob = vjob_from_dict(
        build(
            constraints=[
                {"kind": "spread", "vms": "web[1-4]"},
                {"kind": "Ban", "vms": ["web1", "db1"], "hosts": "@n[1-2]"},
                {"kind": "among", "vms": "web[1-2]", "groups": ["n[1-2]", ["n3", "n4"]]},
                {"kind": "gather", "vms": "web[3-4]", "soft": True, "weight": 2},
                {"kind": "resourceCapacity", "hosts": "n1", "resource": "cpu", "amount": 8},
                {"kind": "capacity", "hosts": "n[1-4]", "amount": 10},
                {"kind": "preserve", "vms": "db1", "resource": "mem", "amount": 0},
                {"kind": "fence", "vms": "db1", "hosts": "n9", "continuous": False},
                {"kind": "root", "vms": "db1", "comment": "never move the database"},
            ]
        ),
        where="x",
    )
    c = vjob.constraints
    assert c[0] == ConstraintSpec("spread", vms=("web1", "web2", "web3", "web4"))
    assert c[1] == ConstraintSpec("ban", vms=("web1", "db1"), hosts=("n1", "n2"))
    assert c[2].groups == (("n1", "n2"), ("n3", "n4"))
    assert (c[3].soft, c[3].weight, c[3].continuous) == (True, 2.0, False)
    assert (c[4].kind, c[4].resource, c[4].amount, c[4].continuous) == (
        "resourcecapacity", "cpu", 8, True,
    )  # fmt: skip
    assert (c[5].kind, c[5].continuous) == ("runningcapacity", False)  # discrete only
    assert (c[6].kind, c[6].amount, c[6].continuous) == ("preserve", 0, False)
    assert (c[7].kind, c[7].continuous) == ("fence", False)
    assert (c[8].kind, c[8].continuous) == ("root", True)
    assert all(x.where is None for x in c)


def test_script_constraints_follow_the_tables_and_keep_positions():
    vjob = vjob_from_dict(
        build(
            constraints=[{"kind": "lonely", "vms": "db1"}],
            script="$web = web[1..4];\n  >>spread($web);\nprefer fence(db1, @n1);",
        ),
        where="x",
    )
    kinds = [(c.kind, c.continuous, c.soft, c.where) for c in vjob.constraints]
    assert kinds == [
        ("lonely", True, False, None),
        ("spread", False, False, (2, 5)),
        ("fence", False, True, (3, 8)),
    ]


def test_script_namespace_is_adopted_or_must_match():
    vjob = vjob_from_dict(build(script="namespace lab; spread(web1);"), where="x")
    assert vjob.namespace == "lab" and {vm.namespace for vm in vjob.vms} == {"lab"}
    same = vjob_from_dict(build(namespace="lab", script="namespace lab;"), where="x")
    assert same.namespace == "lab"
    with pytest.raises(VjobError, match=r"script's namespace `lab` differs .* `prod`"):
        vjob_from_dict(build(namespace="prod", script="namespace lab;"), where="x")


def test_meta_and_description():
    vjob = vjob_from_dict(build(description="d", meta={"owner": "ops"}), where="x")
    assert vjob.meta == {"description": "d", "owner": "ops"}


def test_load_vjob_reads_toml(tmp_path):
    path = tmp_path / "v.toml"
    path.write_text('name = "v"\n[[vms]]\nname = "a[1-2]"\nmemory = 512\n')
    vjob = load_vjob(path)
    assert [(vm.name, vm.memory_mib) for vm in vjob.vms] == [("a1", 512), ("a2", 512)]


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.toml")), ids=lambda p: p.name)
def test_examples_load(path):
    vjob = load_vjob(path)
    assert vjob.vms and vjob.constraints


def test_plasma_example_keeps_the_slides_constraints_on_four_hosts():
    vjob = load_vjob(EXAMPLES / "plasma.toml")
    assert [vm.name for vm in vjob.vms] == [f"VM{i}" for i in range(1, 8)]
    by_kind = {}
    for c in vjob.constraints:
        by_kind.setdefault(c.kind, []).append(c)
    assert [c.hosts for c in by_kind["ban"]] == [("node4",)]
    assert by_kind["ban"][0].vms == tuple(f"VM{i}" for i in range(1, 8))
    assert by_kind["fence"][0].vms == ("VM4", "VM5")
    assert by_kind["fence"][0].hosts == ("node1", "node2")
    assert [c.vms for c in by_kind["spread"]] == [
        ("VM1", "VM2", "VM3"),
        ("VM4", "VM5"),
        ("VM6", "VM7"),
    ]
    assert by_kind["among"][0].groups == (("node1", "node2"), ("node3", "node4"))


def _mutate(path, value):
    """Set (value=None: delete) a key path such as ``vms.0.vcpus`` in a copy of BASE.

    A numeric last segment inserts into the array (created when missing)."""
    d = copy.deepcopy(BASE)
    *parents, last = path.split(".")
    node = d
    for key, child in zip(parents, [*parents[1:], last], strict=False):
        empty = [] if child.isdigit() else {}
        node = node[int(key)] if isinstance(node, list) else node.setdefault(key, empty)
    if isinstance(node, list):
        node.insert(int(last), value)
    elif value is None:
        del node[last]
    else:
        node[last] = value
    return d


SPREAD9 = {"kind": "spread", "vms": "web9"}

ERRORS = [
    # (key path to set, value, expected key path in the message, problem)
    ("name", None, "name", r"missing \(required\)"),
    ("name", 3, "name", "expected a string, got an integer"),
    ("name", "a b", "name", "invalid namespace name `a b`"),
    ("namespace", "x/y", "namespace", "character '/'"),
    ("nam", "x", "nam", "did you mean 'name'"),
    ("vms", [], "vms", "at least one VM"),
    ("vms", {"a": 1}, "vms", "expected an array of tables"),
    ("vms.0.vcpu", 2, "vms[0].vcpu", r"unknown key \(did you mean 'vcpus'"),
    ("vms.0.script", "x", "vms[0].script", "move script = ... above the first"),
    ("vms.0.vcpus", 0, "vms[0].vcpus", "must be >= 1, got 0"),
    ("vms.0.vcpus", True, "vms[0].vcpus", "expected an integer, got a boolean"),
    ("vms.0.vcpus", 1.5, "vms[0].vcpus", "expected an integer, got a float"),
    ("vms.0.memory", -5, "vms[0].memory", "must be >= 1, got -5"),
    ("vms.0.coschedule", -2, "vms[0].coschedule", "must be >= -1, got -2"),
    ("vms.0.networks", "100", "vms[0].networks", "expected an array"),
    ("vms.0.networks", [100], "vms[0].networks[0]", "expected a string, got an integer"),
    ("vms.0.tags", {"a": 1}, "vms[0].tags.a", "expected a string"),
    ("vms.1.disk", "a.qcow2", "vms[1].image", "either disk or image"),
    ("vms.0.name", None, "vms[0].name", r"missing \(required\)"),
    ("vms.0.name", "web[1-", "vms[0].name", "unterminated '\\[' at char 4"),
    ("vms.0.name", "web1,web1", "vms[0].name", "`web1` is specified twice"),
    ("vms.0.name", ",", "vms[0].name", "empty item"),
    ("vms.0.name", "", "vms[0].name", "'' names no VM"),
    ("vms.0.name", "all", "vms[0].name", "`all` is a reserved word"),
    ("vms.0.name", "[1-3]", "vms[0].name", "`1` is an integer"),
    ("vms.0.name", "a;b", "vms[0].name", "character ';'"),
    ("vms.2", {"name": "web3"}, "vms[2].name", "duplicate VM name `web3` .* vms\\[0\\]"),
    ("vms.0.schedule", "n 1", "vms[0].schedule", "invalid host name"),
    ("vms.0.colocate", "x y", "vms[0].colocate", "invalid vm name"),
    ("vms.1.colocate", "db1", "vms[1].colocate", "`db1` cannot colocate with itself"),
    ("constraints", {"kind": "spread"}, "constraints", "expected an array of tables"),
    ("constraints.0", {"vms": "web1"}, "constraints[0].kind", r"missing \(required\)"),
    ("constraints.0", {"kind": "splt"}, "constraints[0].kind", "unknown constraint 'splt'"),
    ("constraints.0", {"kind": "split"}, "constraints[0].kind", "not supported by dvms"),
    ("constraints.0", {"kind": "colocate"}, "constraints[0].kind", "a per-VM field: set colocate"),
    ("constraints.0", {"kind": "spread", "vm": "a"}, "constraints[0].vm", "did you mean 'vms'"),
    ("constraints.0", {"kind": "spread"}, "constraints[0].vms", "missing: spread\\(vms\\)"),
    ("constraints.0", SPREAD9, "constraints[0].vms", "unknown VM `web9`"),
    ("constraints.0", {"kind": "spread", "vms": ""}, "constraints[0].vms", "at least one VM"),
    ("constraints.0", {"kind": "spread", "vms": 1}, "constraints[0].vms", "expected a string"),
    ("constraints.0", {"kind": "spread", "vms": ["web1", 2]}, "constraints[0].vms[1]", "string"),
    ("constraints.0", {"kind": "spread", "vms": "w[1"}, "constraints[0].vms", "unterminated"),
    (
        "constraints.0",
        {"kind": "spread", "vms": "web1", "hosts": "n1"},
        "constraints[0].hosts",
        "does not apply to spread\\(vms\\)",
    ),
    ("constraints.0", {"kind": "ban", "vms": "web1", "hosts": ""}, "constraints[0].hosts", "host"),
    (
        "constraints.0",
        {"kind": "ban", "vms": "web1", "hosts": "a b"},
        "constraints[0].hosts",
        "invalid host name",
    ),
    (
        "constraints.0",
        {"kind": "among", "vms": "web1", "groups": "n1"},
        "constraints[0].groups",
        "expected an array",
    ),
    (
        "constraints.0",
        {"kind": "among", "vms": "web1", "groups": ["n[1-2]", "n2"]},
        "constraints[0].groups",
        "'n2' is in group 1 and group 2",
    ),
    (
        "constraints.0",
        {"kind": "among", "vms": "web1", "groups": []},
        "constraints[0].groups",
        "at least one group",
    ),
    (
        "constraints.0",
        {"kind": "preserve", "vms": "web1", "resource": "", "amount": 1},
        "constraints[0].resource",
        "must name a resource",
    ),
    (
        "constraints.0",
        {"kind": "preserve", "vms": "web1", "resource": "cpu", "amount": -1},
        "constraints[0].amount",
        "must be >= 0, got -1",
    ),
    (
        "constraints.0",
        {"kind": "root", "vms": "web1", "continuous": False},
        "constraints[0].continuous",
        "root has no discrete mode",
    ),
    (
        "constraints.0",
        {"kind": "running", "vms": "web1", "continuous": True},
        "constraints[0].continuous",
        "running has no continuous mode",
    ),
    (
        "constraints.0",
        {"kind": "spread", "vms": "web1", "continuous": "no"},
        "constraints[0].continuous",
        "expected a boolean",
    ),
    (
        "constraints.0",
        {"kind": "ban", "vms": "web1", "hosts": "n1", "soft": True},
        "constraints[0].soft",
        "ban has no soft form",
    ),
    (
        "constraints.0",
        {"kind": "spread", "vms": "web1", "soft": True, "continuous": True},
        "constraints[0].continuous",
        "cannot be continuous",
    ),
    (
        "constraints.0",
        {"kind": "spread", "vms": "web1", "weight": 2},
        "constraints[0].weight",
        "only applies to a soft constraint",
    ),
    (
        "constraints.0",
        {"kind": "spread", "vms": "web1", "soft": True, "weight": 0},
        "constraints[0].weight",
        "must be a number > 0",
    ),
    ("script", 3, "script", "expected a string"),
    ("script", "spread(web9);", "script:1:8", "unknown VM `web9` \\(not declared in \\[\\[vms"),
    ("script", "$x = web9;\nspread(web1);", "script:1:6", "unknown VM `web9`"),
    ("script", "\n  spread(web1", "script:2:14", "expected '\\)'"),
    ("script", f"ban(web1, @{'h' * 254});", "script:1:11", "invalid host name .* at most 253"),
    ("script", "web[5..6] : tiny;", "script:1:1", "declare the VMs of a vjob in \\[\\[vms\\]\\]"),
    ("script", "namespace a/b;", "script:1:12", "expected ';'"),
    ("meta", {"a": 1}, "meta.a", "expected a string"),
    ("description", ["x"], "description", "expected a string"),
]


@pytest.mark.parametrize(("path", "value", "key", "problem"), ERRORS)
def test_errors_name_the_file_the_key_and_the_problem(path, value, key, problem):
    with pytest.raises(VjobError) as info:
        vjob_from_dict(_mutate(path, value), where="shop.toml")
    message = str(info.value)
    assert message.startswith(f"shop.toml: {key}: "), message
    assert info.value.path == key
    assert re.search(problem, info.value.problem), message


def test_a_vjob_must_be_a_table():
    with pytest.raises(VjobError, match=r"m.toml: a vjob must be a table, got an array"):
        vjob_from_dict([], where="m.toml")  # type: ignore[arg-type]


def test_schedule_and_colocate_are_refused_together():
    d = _mutate("vms.1.colocate", "web1")
    d["vms"][1]["schedule"] = "n1"
    with pytest.raises(VjobError, match=r"x: vms\[1\]: cannot specify schedule and colocate"):
        vjob_from_dict(d, where="x")


def test_colocate_cycles_are_refused():
    d = _mutate("vms.1.colocate", "web2")
    d["vms"].insert(1, {"name": "web0", "colocate": "db1"})
    d["vms"][0]["name"] = "web[1-2]"
    d["vms"][0]["colocate"] = "web0"
    with pytest.raises(
        VjobError, match=r"vms\[0\].colocate: colocate cycle: web2 -> web0 -> db1 -> web2"
    ):
        vjob_from_dict(d, where="x")


def test_colocate_outside_the_vjob_is_allowed():
    vjob = vjob_from_dict(_mutate("vms.0.colocate", "running-elsewhere"), where="x")
    assert vjob.vms[0].colocate == "running-elsewhere"


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(VjobError, match=r"nope.toml: cannot read the file"):
        load_vjob(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\n= 3\n')
    with pytest.raises(VjobError, match=r"bad.toml: invalid TOML: .*line 2"):
        load_vjob(bad)
    binary = tmp_path / "bin.toml"
    binary.write_bytes(b"\xff\xfe")
    with pytest.raises(VjobError, match=r"bin.toml: the file is not UTF-8"):
        load_vjob(binary)
    late = tmp_path / "late.toml"
    late.write_text('name = "x"\n[[vms]]\nname = "a"\nscript = "spread(a);"\n')
    with pytest.raises(VjobError, match=r"late.toml: vms\[0\].script: unknown key \(TOML puts"):
        load_vjob(late)
