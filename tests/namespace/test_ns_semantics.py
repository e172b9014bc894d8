"""Semantics of the issue's "behaviour that must hold" list, on the pure core."""

from __future__ import annotations

from collections import Counter

import pytest

from dvms.namespace import (
    ClearNamespace,
    Console,
    Context,
    DelBridge,
    Kill,
    Launch,
    Migrate,
    RunOnHosts,
    SetBridge,
    Table,
    execute,
)
from dvms.placement import Host
from tests.namespace.conftest import cluster, make_console


def rows(con: Console, line: str) -> list[tuple[str, ...]]:
    result = con.execute(line)
    assert result.ok, result.error
    assert isinstance(result.output, Table)
    return list(result.output.rows)


def placement(con: Console) -> dict[str, str]:
    return {name: host for host, name in rows(con, ".annotate true .columns name vm info")}


def ok(con: Console, *lines: str) -> None:
    for line in lines:
        result = con.execute(line)
        assert result.ok, f"{line}: {result.error}"


def refused(con: Console, line: str, text: str) -> None:
    before = (con.state, con.session)
    result = con.execute(line)
    assert result.error == text
    assert (con.state, con.session) == before


# -- hosts --------------------------------------------------------------------------


def test_new_namespace_holds_every_host_and_ns_hosts_compresses():
    con = make_console(5, prefix="node")
    ok(con, "namespace foo")
    assert con.run("ns hosts") == "node[1-5]\n"
    ok(con, "ns del-hosts node[2,4]")
    assert con.run("ns hosts") == "node[1,3,5]\n"
    ok(con, "ns del-hosts node9")  # unknown hosts are ignored on delete
    ok(con, "ns add-hosts all,bogus")  # all adds everything, the rest is ignored
    assert con.run("ns hosts") == "node[1-5]\n"
    ok(con, "ns del-hosts localhost")
    assert con.run("ns hosts") == "node[2-5]\n"


def test_add_hosts_is_all_or_nothing():
    con = make_console(3)
    ok(con, "namespace foo", "ns del-hosts all")
    refused(con, "ns add-hosts mm[1-2],zz9", "unknown host: `zz9`")
    assert con.run("ns hosts") == "\n" or con.run("ns hosts") == ""
    refused(con, "ns add-hosts mm[1", "invalid hosts -- unterminated '[' at char 3 in 'mm[1'")


# -- queueing, pins, dry-run, mv -------------------------------------------------------


def queued_pins(con: Console) -> None:
    ok(con, "namespace q", "ns queueing true")
    for i in (1, 2, 3):
        ok(con, f"vm config schedule mm{i}", f"vm launch kvm vm{i}")
    ok(con, "clear vm config")


def test_queueing_holds_launches_until_schedule():
    con = make_console(3)
    queued_pins(con)
    assert rows(con, "vm info") == []
    assert not any(isinstance(e, Launch) for e in con.effects)
    assert "VMs: 1\nNames: vm2\nVM Type: kvm" in con.run("ns queue")
    assert rows(con, "ns schedule dry-run") == [("vm1", "mm1"), ("vm2", "mm2"), ("vm3", "mm3")]
    ok(con, "ns schedule mv vm1 mm3")  # an explicit mv overrides the schedule pin
    ok(con, "ns schedule")
    assert placement(con) == {"vm1": "mm3", "vm2": "mm2", "vm3": "mm3"}
    launch = [e for e in con.effects if isinstance(e, Launch)][-1]
    assert {(v.name, v.host) for v in launch.vms} == {
        ("vm1", "mm3"),
        ("vm2", "mm2"),
        ("vm3", "mm3"),
    }
    assert con.run("ns queue") == ""


def test_mv_errors_and_partial_moves():
    con = make_console(3)
    queued_pins(con)
    refused(con, "ns schedule mv vm1 mm2", "must run dry-run first")
    ok(con, "ns schedule dry-run")
    refused(con, "ns schedule mv vm1 mm7", "new dst host is not in namespace")
    # vm1 is moved before vm9 fails, as in minimega; vm3 (after it) is not
    result = con.execute("ns schedule mv vm1,vm9,vm3 mm2")
    assert result.error == "reassign vm9: vm not found"
    assert rows(con, "ns schedule dump") == [("vm1", "mm2"), ("vm2", "mm2"), ("vm3", "mm3")]


def test_mv_refuses_to_break_coschedule_naming_it():
    con = make_console(3)
    ok(con, "namespace q", "ns queueing true", "vm config coschedule 0", "vm launch kvm s[1-3]")
    assert Counter(h for _, h in rows(con, "ns schedule dry-run")) == Counter(
        {"mm1": 1, "mm2": 1, "mm3": 1}
    )
    before = rows(con, "ns schedule dump")
    result = con.execute("ns schedule mv s1 " + dict(before)["s2"])
    assert result.error is not None
    assert result.error.startswith("cannot move s1 to ")
    assert "coschedule requirement of 1" in result.error
    assert rows(con, "ns schedule dump") == before


def test_mv_refuses_to_break_colocate_but_moving_the_group_works():
    con = make_console(3)
    ok(con, "namespace q", "ns queueing true", "vm launch kvm a", "vm config colocate a")
    ok(con, "vm launch kvm b", "vm config colocate b", "vm launch kvm c")
    dump = dict(rows(con, "ns schedule dry-run"))
    assert dump["a"] == dump["b"] == dump["c"]
    other = "mm2" if dump["a"] != "mm2" else "mm3"
    result = con.execute(f"ns schedule mv b {other}")
    assert result.error is not None and "colocate" in result.error
    ok(con, f"ns schedule mv a,b,c {other}")
    ok(con, "ns schedule")
    assert set(placement(con).values()) == {other}


def test_mv_refuses_to_exceed_capacity():
    con = make_console(2, memory=4096)
    ok(con, "namespace q", "ns queueing true", "vm config memory 3000", "vm launch kvm big[1-2]")
    dump = dict(rows(con, "ns schedule dry-run"))
    assert dump["big1"] != dump["big2"]
    result = con.execute(f"ns schedule mv big1 {dump['big2']}")
    assert result.error is not None and "memory_mib" in result.error


def test_launch_kvm_six_across_three_hosts_gives_unique_names():
    con = make_console(3)
    ok(con, "namespace foo", "vm launch kvm 6")
    where = placement(con)
    assert sorted(where) == [f"vm-{i}" for i in range(6)]
    assert Counter(where.values()) == {"mm1": 2, "mm2": 2, "mm3": 2}
    ok(con, "vm launch kvm 2")
    assert sorted(placement(con)) == [f"vm-{i}" for i in range(8)]


def test_unnamed_vms_skip_names_already_taken():
    con = make_console(2)
    ok(con, "namespace foo", "vm launch kvm vm-1", "vm launch kvm 2")
    assert sorted(placement(con)) == ["vm-0", "vm-1", "vm-2"]


def test_coschedule_zero_gives_one_vm_per_host_and_refuses_one_too_many():
    con = make_console(3)
    ok(con, "namespace foo", "vm config coschedule 0", "vm launch kvm solo[1-3]")
    assert sorted(placement(con).values()) == ["mm1", "mm2", "mm3"]
    refused(
        con, "vm launch kvm solo4", "too many VMs scheduled on mm1 for coschedule requirement of 1"
    )


def test_colocate_chain_resolves_against_launched_and_queued():
    con = make_console(3)
    ok(con, "namespace foo", "vm config schedule mm2", "vm launch kvm head", "clear vm config")
    ok(con, "ns queueing true", "vm config colocate head", "vm launch kvm mid")
    ok(con, "vm config colocate mid", "vm launch kvm tail", "clear vm config")
    ok(con, "vm launch kvm 3", "vm launch")
    where = placement(con)
    assert where["head"] == where["mid"] == where["tail"] == "mm2"


@pytest.mark.parametrize("queueing", ["true", "false"])
def test_refusals_leave_the_queue_and_later_launches_work(queueing):
    con = make_console(3)
    ok(con, "namespace foo", f"ns queueing {queueing}", "vm launch kvm keep")
    queue = con.run("ns queue")
    refused(con, "vm launch kvm all", "invalid vm name, `all` is a reserved word")
    refused(con, "vm launch kvm [0-2]", "invalid vm name, `0` is an integer")
    refused(con, "vm launch kvm x,x", "`x` is specified twice in VMs to launch")
    refused(con, "vm launch kvm 0", "invalid number of vms (must be > 0)")
    refused(
        con,
        "vm launch kvm keep",
        f"vm already {'queued' if queueing == 'true' else 'exists'} with name `keep`",
    )
    ok(con, "vm config schedule mm1")
    refused(
        con, "vm config colocate keep", "cannot specify colocate and schedule in the same config"
    )
    assert con.run("ns queue") == queue
    if queueing == "false":
        # minimega would keep the failed batch queued and fail every later launch
        ok(con, "clear vm config", "vm config colocate nowhere")
        refused(con, "vm launch kvm a", "nonexistent colocate VMs: [nowhere]")
        ok(con, "clear vm config", "vm launch kvm a")
        assert sorted(placement(con)) == ["a", "keep"]


def test_unknown_pin_after_host_removed():
    con = make_console(3)
    ok(con, "namespace foo", "ns queueing true", "vm config schedule mm3", "vm launch kvm a")
    ok(con, "ns del-hosts mm3")
    refused(con, "ns schedule dry-run", "VM scheduled on unknown host: `mm3`")
    refused(con, "vm config schedule mm3", "host is not in namespace: mm3")


def test_schedule_needs_hosts_and_queue():
    con = make_console(2)
    ok(con, "namespace foo")
    refused(con, "ns schedule", "namespace must contain at least one queued VM to launch VMs")
    refused(
        con, "ns schedule dry-run", "namespace must contain at least one queued VM to launch VMs"
    )
    refused(con, "ns schedule dump", "must run dry-run first")
    ok(con, "ns queueing true", "vm launch kvm a", "ns del-hosts all")
    refused(con, "vm launch", "namespace must contain at least one host to launch VMs")


# -- namespaces are separate -------------------------------------------------------------


def test_same_name_in_two_namespaces_and_commands_stay_in_theirs():
    con = make_console(3)
    ok(con, "namespace a", "vm launch kvm web", "namespace b", "vm launch kvm web")
    ok(con, "namespace a vm kill web")
    assert rows(con, ".columns name,state vm info") == [("web", "BUILDING")]
    assert rows(con, "namespace a .columns name,state vm info") == [("web", "QUIT")]
    kills = [e for e in con.effects if isinstance(e, Kill)]
    assert kills[-1].namespace == "a"
    assert con.session.active == "b"
    ok(con, "namespace a ns del-hosts mm1")
    assert con.run("ns hosts") == "mm[1-3]\n"
    assert con.run("namespace a ns hosts") == "mm[2-3]\n"


def test_vm_targets_by_name_id_and_all():
    con = make_console(3)
    ok(con, "namespace a", "vm launch kvm vm[1-3]")
    refused(con, "vm kill vm9", "vm not found: vm9")
    ok(con, "vm kill vm9,vm1")  # several targets: the missing ones are skipped
    refused(con, "vm kill vm1", "VM state error: vm1")
    ok(con, "vm start 1")  # numbers are ids (vm2 has id 1)
    refused(con, "vm start vm2", "vm is already running")
    ok(con, "vm stop all", "vm flush")
    assert rows(con, ".columns name,state vm info") == [("vm2", "PAUSED"), ("vm3", "BUILDING")]


def test_clear_namespace_emits_cleanup_everywhere():
    con = make_console(3)
    con.bridge_key = 77
    ok(con, "namespace foo", "vm launch kvm a", "ns bridge br0 vxlan")
    bridge = con.effects[-1]
    assert bridge == SetBridge("foo", "br0", "vxlan", 77, ("mm1", "mm2", "mm3"))
    ok(con, "clear namespace foo")
    *_, delete, clear = con.effects
    assert delete == DelBridge("foo", "br0", ("mm1", "mm2", "mm3"))
    assert isinstance(clear, ClearNamespace)
    assert clear.vms == (("a", placement_of(con, "a", clear)),) and clear.hosts == (
        "mm1",
        "mm2",
        "mm3",
    )
    assert con.session.active == "minimega"
    assert "foo" not in con.state.names()
    refused(con, "clear namespace foo", "unknown namespace: foo")


def placement_of(con: Console, name: str, clear: ClearNamespace) -> str:
    return dict(clear.vms)[name]


def test_clear_namespace_refuses_while_a_schedule_runs():
    c = cluster(2)
    from dvms.namespace import State

    ctx = Context(State(), c)
    r = execute("namespace foo", ctx)
    r = execute("vm launch kvm a", Context(r.state, c, r.session))
    assert isinstance(r.effects[0], Launch)
    r2 = execute("clear namespace all", Context(r.state, c, r.session))
    assert r2.error == "scheduler still running for namespace"
    assert r2.state is r.state


def test_bridges_need_two_hosts_and_belong_to_their_namespace():
    con = make_console(1)
    ok(con, "namespace foo", "ns bridge br0")
    assert con.effects == []
    refused(con, "ns del-bridge br0", "bridge is not associated with namespace")
    con2 = make_console(2)
    ok(con2, "namespace foo", "ns bridge br0", "namespace bar")
    refused(con2, "ns del-bridge br0", "bridge is not associated with namespace")
    ok(con2, "namespace foo ns del-bridge br0")


def test_ns_run_runs_elsewhere_and_refuses_nesting():
    con = make_console(3)
    ok(con, "namespace foo", "ns run vm info")
    assert con.effects[-1] == RunOnHosts("foo", ("mm1", "mm2", "mm3"), ("vm", "info"))
    refused(
        con,
        "ns run namespace bar vm launch kvm x",
        "cannot run `namespace bar vm launch kvm x` using `ns run`",
    )
    from dvms.namespace import SOURCE_MESHAGE, Context

    r = execute("ns run host", Context(con.state, con.cluster, con.session, source=SOURCE_MESHAGE))
    assert r.error == "cannot run `ns run host` via meshage"
    r = execute(
        "vm launch kvm x", Context(con.state, con.cluster, con.session, source=SOURCE_MESHAGE)
    )
    assert r.error == "cannot run `vm launch kvm x` via meshage"


def test_migrate_moves_and_rechecks():
    con = make_console(3)
    ok(con, "namespace foo", "vm config schedule mm1", "vm launch kvm a", "clear vm config")
    ok(con, "vm config colocate a", "vm launch kvm b", "clear vm config")
    refused(con, "vm migrate b mm9", "host is not in namespace: mm9")
    result = con.execute("vm migrate b mm2")
    assert result.error is not None and "colocate" in result.error
    ok(con, "vm launch kvm c")
    src = placement(con)["c"]
    dst = "mm3" if src != "mm3" else "mm2"
    ok(con, f"vm migrate c {dst}")
    assert con.effects[-1] == Migrate("foo", "c", src, dst)
    assert placement(con)["c"] == dst
    refused(con, f"vm migrate c {dst}", f"vm {'c'} is already on {dst}")
    ok(con, "vm migrate c")  # no host given: the engine picks another one
    assert placement(con)["c"] != dst


def test_host_sums_every_namespace():
    con = make_console(1)
    ok(con, "namespace a", "vm config vcpus 2", "vm launch kvm x", "namespace b", "vm launch kvm y")
    assert rows(con, ".columns host,vms,cpucommit host") == [("mm1", "2", "3")]


def test_vm_config_fields_and_clear():
    con = make_console(2)
    ok(con, "namespace a", "vm config net LAN DMZ", "vm config disk a.qcow2", "vm config vcpus 4")
    assert con.run("vm config networks") == "[LAN DMZ]\n"
    assert con.run("vm config disks") == "[a.qcow2]\n"
    assert "VCPUs:            4" in con.run("vm config")
    refused(
        con, "vm config vcpus x", "vm config vcpus: expected a whole number (0 or more), got `x`"
    )
    refused(
        con, "vm config vcpus -1", "vm config vcpus: expected a whole number (0 or more), got `-1`"
    )
    refused(
        con, "vm config coschedule 1.5", "vm config coschedule: expected a whole number, got `1.5`"
    )
    refused(con, "vm config snapshot yes", "vm config snapshot: expected true or false, got `yes`")
    refused(con, "vm config vcpus 0", "vcpus must be at least 1")
    refused(con, "vm config coschedule -2", "coschedule must be -1 (no limit) or >= 0")
    ok(con, "vm config schedule localhost")
    assert con.run("vm config schedule") == "mm1\n"
    ok(con, "clear vm config vcpus")
    assert con.run("vm config vcpus") == "1\n"
    ok(con, "vm config tags role web")
    assert con.run("vm config tags role") == "web\n"
    ok(con, "clear vm config")
    assert con.run("vm config schedule") == ""


def test_render_json_of_a_launch():
    from dvms.namespace import render_json

    con = make_console(2)
    ok(con, "namespace a")
    result = con.execute("vm launch kvm x")
    data = render_json(result)
    assert data["ok"] is True and data["effects"][0]["kind"] == "Launch"
    assert data["effects"][0]["vms"][0]["config"]["memory"] == 2048
    data = render_json(con.execute("vm info"))
    assert data["header"][:3] == ["host", "id", "name"] and data["rows"][0][2] == "x"


def test_host_memory_ceiling_is_honoured_by_dry_run():
    c = cluster(1, memory=4096)
    con = Console(type(c)(hosts=(*c.hosts, Host("mm2", cpus=1, memory_mib=4096)), local="mm1"))
    ok(con, "namespace a", "vm config memory 3000", "vm launch kvm a", "vm launch kvm b")
    assert sorted(placement(con).values()) == ["mm1", "mm2"]


def test_unknown_columns_are_named_and_change_nothing():
    """``.columns`` naming only unknown columns crashed the renderer; an unknown one
    among known ones was silently dropped. Both now refuse, naming the unknown ones."""
    con = make_console(3)
    ok(con, "namespace foo", "vm launch kvm a[1-2]")
    header = ", ".join(con.execute("vm info").output.header)
    refused(con, ".columns nosuch vm info", f"unknown column nosuch; this table has: {header}")
    refused(
        con,
        ".columns name,bogus,state,other vm info",
        f"unknown columns bogus, other; this table has: {header}",
    )
    assert rows(con, ".columns state,name vm info") == [
        ("BUILDING", "a1"),
        ("BUILDING", "a2"),
    ]


def test_namespace_names_follow_the_one_naming_rule():
    """``namespace`` accepted a 300-character name that ``submit`` refused: both use
    ``dvms.names`` now (letters, digits, '-', '_', '.'; not first '-' or '.'; 64 at
    most), with the same message."""
    from dvms.names import InvalidName, validate_namespace_name

    con = make_console(3)
    for bad in ("x" * 300, ".hidden", "-dash", "sp ace"):
        with pytest.raises(InvalidName) as err:
            validate_namespace_name(bad)
        refused(con, f"namespace {bad!r}" if " " in bad else f"namespace {bad}", str(err.value))
    ok(con, "namespace a.b-c_d", "namespace " + "y" * 64)
    assert "a.b-c_d" in {row[0] for row in rows(con, "namespace")}
