"""State records: round trips, validation of corrupt records, invariants."""

from __future__ import annotations

import pytest

from dvms.namespace import Namespace, NamespaceRecordError, State, VmConfig, VmRecord
from dvms.namespace.state import AssignEntry, Batch, Bridge, ScheduleStat
from tests.namespace.conftest import make_console


def busy_state() -> State:
    con = make_console(3)
    for line in (
        "namespace foo",
        "vm config tags role web",
        "vm config net LAN",
        "vm launch kvm a",
        "ns queueing true",
        "vm config colocate a",
        "vm launch kvm b[1-2]",
        "vm launch kvm 2",
        "ns schedule dry-run",
        "ns bridge br0 gre",
        "namespace bar",
        "vm launch kvm a",
    ):
        assert con.execute(line).ok, line
    return con.state


def test_state_round_trips_through_records():
    state = busy_state()
    record = state.to_record()
    assert State.from_record(record) == state
    for ns in state.namespaces:
        assert Namespace.from_record(ns.to_record()) == ns


def test_records_are_plain_cbor_values():
    cbor2 = pytest.importorskip("cbor2")
    record = busy_state().to_record()
    assert cbor2.loads(cbor2.dumps(record)) == record


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda r: r.update(v=9), "unsupported version"),
        (lambda r: r.update(load="fastest"), "unknown load function"),
        (lambda r: r.update(queueing="yes"), "queueing must be a bool"),
        (lambda r: r["vms"][0].update(state="DANCING"), "unknown state"),
        (lambda r: r["vms"].append(dict(r["vms"][0], id=99)), "share a name"),
        (lambda r: r["vms"][0].update(id=1000), "not below next_id"),
        (lambda r: r["queue"][0].update(names=["a"]), "already used"),
        (lambda r: r["assignment"].pop(), "does not cover the queue"),
        (lambda r: r["config"].update(vcpus=0), "vcpus must be at least 1"),
        (lambda r: r["config"].update(schedule="mm1", colocate="x"), "schedule and colocate"),
        (lambda r: r["config"].update(nope=1), "unknown field"),
        (lambda r: r["bridges"][0].update(kind="ipip"), "unknown kind"),
        (lambda r: r.update(name="bad name"), "invalid name"),
    ],
)
def test_corrupt_records_are_refused(mutate, message):
    record = busy_state().get("foo").to_record()
    mutate(record)
    with pytest.raises(NamespaceRecordError, match=message):
        Namespace.from_record(record)


def test_objects_validate_on_construction():
    with pytest.raises(NamespaceRecordError):
        VmRecord(0, "a", "h1", state="GONE")
    with pytest.raises(NamespaceRecordError):
        Batch("kvm", (), VmConfig())
    with pytest.raises(NamespaceRecordError):
        ScheduleStat(0.0, None, "completed", 0, 0, 0, 0)
    with pytest.raises(NamespaceRecordError):
        Bridge("br", "gre", 2**32, frozenset())
    with pytest.raises(NamespaceRecordError):
        State((Namespace("b"), Namespace("a")))
    entry = AssignEntry(0, 0, "a", "h1")
    assert AssignEntry.from_record(entry.to_record()) == entry


def test_adopt_vms_gives_fresh_ids_to_vms_placed_otherwise():
    from dvms.namespace import adopt_vms

    ns = Namespace("q", hosts=frozenset({"h1"}), vms=(VmRecord(0, "a", "h1"),), next_id=1)
    big = VmConfig(vcpus=4, memory=8192)
    placed = {
        "s10": ("h1", "RUNNING", big),
        "s9": ("h2", "RUNNING", big),
        "a": ("h2", "RUNNING", big),
    }
    after = adopt_vms(State((ns,)), "q", placed).get("q")
    assert after is not None
    assert [(v.id, v.name, v.host) for v in after.vms] == [(0, "a", "h1"), (1, "s9", "h2"),
                                                          (2, "s10", "h1")]  # fmt: skip
    assert after.next_id == 3 and after.vm("s9").config == big  # type: ignore[union-attr]
    assert adopt_vms(State((after,)), "q", placed).get("q") == after  # already there


def test_a_refused_unnamed_vm_is_named_by_its_place_in_the_queue():
    con = make_console(3)
    assert con.execute("vm config memory 40000").ok
    refused = con.execute("vm launch kvm 5")
    assert refused.error is not None and "#" not in refused.error
    assert refused.error.startswith("no host fits unnamed VM 4 of queued launch 1: 3 hosts fail")
    assert "mm1, mm2, mm3: needs 40000 MiB of memory, 25536 of 65536 MiB free" in refused.error


def test_json_and_headers_flags_shape_the_output():
    import json

    from dvms.namespace import render_text

    con = make_console(3)
    assert con.execute("vm launch kvm a[1-2]").ok
    bare = render_text(con.execute(".headers false .columns name,host vm info"))
    assert bare == "a1   | mm1\na2   | mm2\n"
    shown = json.loads(render_text(con.execute(".json true .columns name,host vm info"), "mm1"))
    assert shown == [
        {
            "Host": "mm1",
            "Response": "",
            "Header": ["name", "host"],
            "Tabular": [["a1", "mm1"], ["a2", "mm2"]],
            "Error": "",
            "Data": None,
        }
    ]
    refused = json.loads(render_text(con.execute(".json true vm start nosuch"), "mm1"))
    assert refused[0]["Error"] == "vm not found: nosuch" and refused[0]["Tabular"] is None
    value = json.loads(render_text(con.execute(".json true vm config vcpus"), "mm1"))
    assert value[0]["Response"] == "1"
    alone = con.execute(".json true")
    assert alone.error is not None and "applies to the command after it" in alone.error
