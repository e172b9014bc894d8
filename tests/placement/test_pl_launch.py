"""Launch solving, written from minimega's scheduler semantics (reference §2)."""

from collections import Counter

import pytest

from dvms.placement import (
    Host,
    PlacementConfig,
    PlacementError,
    Snapshot,
    Vm,
    check_placement,
    launch_vjob,
    solve_launch,
)
from dvms.placement import constraints as c
from dvms.placement.spec import ConstraintSpec, VjobSpec, VmSpec

MM = PlacementConfig.minimega()


def hosts(n, cpus=8, mem=65536, **kw):
    return tuple(Host(f"h{i}", cpus=cpus, memory_mib=mem, **kw) for i in range(1, n + 1))


def job(*vms, constraints=()):
    return VjobSpec("j", tuple(vms), tuple(constraints))


def ready(name, **kw):
    return Vm(name, state="ready", **kw)


def test_least_loaded_host_first_in_heap_order():
    # cpucommit: h1 4/8, h2 1/8, h3 2/4 -> order h2, h1=h3 tie broken by name
    snap = Snapshot(
        (*hosts(2), Host("h3", cpus=4, memory_mib=65536)),
        (Vm("a", vcpus=4, host="h1"), Vm("b", vcpus=1, host="h2"), Vm("c", vcpus=2, host="h3")),
    )
    r = solve_launch(snap, [ready("x", vcpus=1)], config=MM)
    assert r.placement == {"x": "h2"}
    # after x, h2 is at 2/8 < 4/8: still h2; then ties 4/8 = 2/4 = 4/8 -> by name
    r = solve_launch(snap, [ready(f"x{i}", vcpus=1) for i in range(4)], config=MM)
    assert [r.placement[f"x{i}"] for i in range(4)] == ["h2", "h2", "h2", "h1"]


@pytest.mark.parametrize(
    ("load", "expected"), [("cpucommit", "h2"), ("memcommit", "h1"), ("netcommit", "h3")]
)
def test_load_function_choice(load, expected):
    snap = Snapshot(
        hosts(3),
        (
            Vm("a", vcpus=1, memory_mib=100, nics=3, host="h1"),
            Vm("b", vcpus=0, memory_mib=9000, nics=2, host="h2"),
            Vm("c", vcpus=2, memory_mib=9000, nics=0, host="h3"),
        ),
    )
    cfg = PlacementConfig(load=load, cpu_overcommit=None, memory_overcommit=None)
    assert solve_launch(snap, [ready("x")], config=cfg).placement == {"x": expected}


def test_full_hosts_rank_last():
    # h1 is empty of load but holds a coschedule-0 VM: full, so everything avoids it
    snap = Snapshot(hosts(2), (Vm("solo", vcpus=0, coschedule=0, host="h1"),))
    r = solve_launch(snap, [ready(f"v{i}", vcpus=4) for i in range(3)], config=MM)
    assert set(r.placement.values()) == {"h2"}


@pytest.mark.parametrize(("n_hosts", "ok"), [(2, False), (3, True), (4, True)])
def test_three_coschedule_zero_vms(n_hosts, ok):
    vms = [VmSpec(f"vm{i}", coschedule=0) for i in range(1, 4)]
    r = launch_vjob(Snapshot(hosts(n_hosts)), job(*vms), MM)
    assert r.ok is ok
    if ok:
        assert len(set(r.placement.values())) == 3
    else:
        assert r.proven
        assert "fail coschedule" in str(r)
        assert any("for coschedule requirement of 1" in d for d in r.refusal.details())


def test_coschedule_honoured_while_choosing():
    # minimega would drop the coschedule-0 VM on the least loaded busy host and fail;
    # we pick the empty host instead.
    snap = Snapshot(hosts(2, cpus=64), tuple(Vm(f"o{i}", vcpus=1, host="h1") for i in range(5)))
    snap = Snapshot(snap.hosts, (*snap.vms, Vm("big", vcpus=60, host="h2")))
    r = solve_launch(snap, [ready("solo", coschedule=0)], config=MM)
    assert not r.ok  # both hosts hold VMs: a coschedule-0 VM fits nowhere
    snap3 = Snapshot((*snap.hosts, Host("h3", cpus=1, memory_mib=4096)), snap.vms)
    assert solve_launch(snap3, [ready("solo", coschedule=0)], config=MM).placement == {"solo": "h3"}


def test_pinned_solo_vm_among_a_thousand():
    specs = [VmSpec("solo", schedule="h3", coschedule=0)]
    specs += [VmSpec(f"vm{i}", memory_mib=512) for i in range(1000)]
    r = launch_vjob(Snapshot(hosts(10, cpus=128, mem=1 << 20)), job(*specs), MM)
    assert r.ok
    assert r.placement["solo"] == "h3"
    assert [k for k, h in r.placement.items() if h == "h3"] == ["solo"]


def test_uniform_spread_of_equal_batches():
    specs = [VmSpec(f"a{i}") for i in range(8)] + [VmSpec(f"b{i}", vcpus=2) for i in range(4)]
    r = launch_vjob(Snapshot(hosts(4, cpus=16)), job(*specs), MM)
    per_host = Counter(r.placement.values())
    assert per_host == {"h1": 3, "h2": 3, "h3": 3, "h4": 3}
    vcpus = Counter()
    for vm, host in r.placement.items():
        vcpus[host] += 2 if vm.startswith("b") else 1
    assert set(vcpus.values()) == {4}


def test_colocate_chain_follows_its_head():
    specs = [
        VmSpec("c", colocate="b"),
        VmSpec("b", colocate="a"),
        VmSpec("a"),
        VmSpec("other", vcpus=4),
    ]
    r = launch_vjob(Snapshot(hosts(3)), job(*specs), MM)
    assert r.ok
    assert r.placement["a"] == r.placement["b"] == r.placement["c"]


def test_colocate_group_goes_where_it_all_fits():
    # minimega places the head on the least loaded host and then fails on memory
    # ceilings it doesn't have; we look for a host taking the whole chain.
    snap = Snapshot(
        (Host("h1", cpus=8, memory_mib=4096), Host("h2", cpus=8, memory_mib=16384)),
        (Vm("busy", vcpus=6, memory_mib=1024, host="h2"),),
    )
    specs = [VmSpec("a", memory_mib=2048), VmSpec("b", memory_mib=2048, colocate="a")]
    specs.append(VmSpec("c", memory_mib=2048, colocate="a"))
    r = launch_vjob(snap, job(*specs))
    assert r.ok and set(r.placement.values()) == {"h2"}


def test_colocate_with_running_vm_is_pinned_to_its_host():
    snap = Snapshot(hosts(3), (Vm("db", host="h3"),))
    r = launch_vjob(snap, job(VmSpec("web", colocate="db")), MM)
    assert r.placement == {"web": "h3"}


def test_colocate_with_coschedule_zero_always_fails():
    for specs in (
        [VmSpec("a", coschedule=0), VmSpec("b", colocate="a")],
        [VmSpec("a"), VmSpec("b", colocate="a", coschedule=0)],
    ):
        r = launch_vjob(Snapshot(hosts(4)), job(*specs), MM)
        assert not r.ok and "coschedule" in str(r)


# -- every error text of reference §2.6 -------------------------------------------------


@pytest.mark.parametrize(
    ("snapshot", "vjob", "text"),
    [
        (Snapshot(()), job(VmSpec("a")), "namespace must contain at least one host to launch VMs"),
        (Snapshot(hosts(1)), job(), "namespace must contain at least one queued VM to launch VMs"),
        (
            Snapshot((Host("h1", online=False),)),
            job(VmSpec("a")),
            "no hosts to schedule VMs on",
        ),
        (
            Snapshot((*hosts(1), Host("h9", online=False))),
            job(VmSpec("a", schedule="h9")),
            "VM scheduled on unknown host: `h9`",
        ),
        (
            Snapshot(hosts(2)),
            job(VmSpec("a", colocate="zz"), VmSpec("b", colocate="yy")),
            "nonexistent colocate VMs: [yy, zz]",
        ),
        (
            Snapshot(hosts(2)),
            job(VmSpec("a", schedule="nope")),
            "no host fits a: schedule = 'nope' names no host here (hosts: h1, h2)",
        ),
    ],
)
def test_minimega_error_texts(snapshot, vjob, text):
    with pytest.raises(PlacementError) as err:
        launch_vjob(snapshot, vjob, MM)
    assert str(err.value) == text


def test_too_many_vms_text_for_pinned_vms():
    specs = [VmSpec("a", schedule="h1", coschedule=0), VmSpec("b", schedule="h1")]
    r = launch_vjob(Snapshot(hosts(2)), job(*specs), MM)
    assert not r.ok
    assert "h1: coschedule: too many VMs scheduled on h1 for coschedule requirement of 1" in (
        r.refusal.details()
    )


def test_schedule_and_colocate_refused_in_both_orders():
    base = [VmSpec("a"), VmSpec("b")]
    sched = ConstraintSpec("schedule", vms=("b",), hosts=("h1",))
    colo = ConstraintSpec("colocate", vms=("b", "a"))
    with pytest.raises(PlacementError, match=r"^cannot specify colocate and schedule"):
        launch_vjob(Snapshot(hosts(2)), job(*base, constraints=(sched, colo)), MM)
    with pytest.raises(PlacementError, match=r"^cannot specify schedule and colocate"):
        launch_vjob(Snapshot(hosts(2)), job(*base, constraints=(colo, sched)), MM)
    # both fields on one VmSpec: schedule is applied first, as a saved config would
    with pytest.raises(PlacementError, match=r"^cannot specify colocate and schedule"):
        launch_vjob(Snapshot(hosts(2)), job(VmSpec("a"), VmSpec("b", schedule="h1", colocate="a")))


def test_cyclic_colocate_is_refused():
    specs = [VmSpec("a", colocate="b"), VmSpec("b", colocate="a")]
    with pytest.raises(PlacementError, match="colocate cycle: a -> b -> a"):
        launch_vjob(Snapshot(hosts(2)), job(*specs))


def test_single_host_is_not_a_shortcut():
    # minimega skips every check with one host; we don't
    r = launch_vjob(Snapshot(hosts(1)), job(VmSpec("a", coschedule=0), VmSpec("b")), MM)
    assert not r.ok


def test_batch_order_pinned_then_coschedule_then_size():
    # one host slot left for a coschedule VM: the pinned batch must go first
    snap = Snapshot(hosts(2, cpus=4))
    specs = [VmSpec(f"big{i}") for i in range(3)] + [VmSpec("p", schedule="h2", coschedule=0)]
    r = launch_vjob(snap, job(*specs), MM)
    assert r.ok and r.placement["p"] == "h2"
    assert all(r.placement[f"big{i}"] == "h1" for i in range(3))


def test_memory_ceiling_and_explanation_counts():
    vms = [Vm(f"o{i}", memory_mib=3000, host=f"h{i}") for i in (1, 2)]
    snap = Snapshot(hosts(3, mem=4096), (*vms, Vm("o3", memory_mib=10, host="h3")))
    r = solve_launch(snap, [ready("x", memory_mib=2048, coschedule=0)])
    assert not r.ok
    assert str(r) == (
        "no host fits x: 2 hosts fail memory (h1, h2: needs 2048 MiB of memory, 1096 of "
        "4096 MiB free), 1 fails coschedule (h3: too many VMs scheduled on h3 for "
        "coschedule requirement of 1)"
    )


def test_constraints_in_launch_are_obeyed_and_checked():
    snap = Snapshot(hosts(4))
    vms = [ready(f"w{i}") for i in range(4)] + [ready("db")]
    cons = [
        c.Spread(tuple(f"w{i}" for i in range(4))),
        c.Ban(("db",), frozenset({"h1", "h2"})),
        c.Fence(("w0",), frozenset({"h4"})),
    ]
    r = solve_launch(snap, vms, cons)
    assert r.ok and r.placement["w0"] == "h4" and r.placement["db"] in ("h3", "h4")
    full = Snapshot(snap.hosts, tuple(vms))
    assert check_placement(full, [*cons, c.Running(tuple(r.placement))], r.placement) == []


def test_soft_preferences_steer_but_do_not_block():
    snap = Snapshot(hosts(3))
    vms = [ready("a"), ready("b")]
    prefer = [c.Prefer("fence", ("a", "b"), frozenset({"h3"}))]
    r = solve_launch(snap, vms, prefer)
    assert r.placement == {"a": "h3", "b": "h3"}
    r = solve_launch(snap, vms, [c.Prefer("spread", ("a", "b")), *prefer])
    assert r.placement["a"] != r.placement["b"]
    hard = [c.Ban(("a", "b"), frozenset({"h3"}))]
    assert solve_launch(snap, vms, [*prefer, *hard]).ok


def test_search_finds_what_least_load_misses():
    # least load puts the two 1536 MiB VMs on different hosts, then 2560 fits nowhere
    snap = Snapshot(tuple(Host(f"h{i}", cpus=4, memory_mib=3072) for i in range(2)))
    vms = [ready("v0", memory_mib=2560), ready("v1", memory_mib=1536), ready("v2", memory_mib=1536)]
    r = solve_launch(snap, vms, (), PlacementConfig(cpu_overcommit=None))
    assert r.ok and r.search_nodes > 0
    assert r.placement["v1"] == r.placement["v2"] != r.placement["v0"]


def test_pigeonhole_is_proven_infeasible_quickly():
    snap = Snapshot(tuple(Host(f"h{i}", cpus=8, memory_mib=4096 + i) for i in range(8)))
    vms = [ready(f"v{i}", memory_mib=2100 + 10 * i) for i in range(12)]
    r = solve_launch(snap, vms)
    assert not r.ok and r.proven and r.search_nodes < 100
    same = [ready(f"v{i}", memory_mib=3000) for i in range(9)]
    r = solve_launch(snap, same, [c.Spread(("v0", "v1"))])
    assert not r.ok and r.proven and r.search_nodes < 1000


def test_spread_wider_than_the_online_hosts_is_refused_at_once_and_says_why():
    snap = Snapshot((*hosts(3), Host("h4", cpus=8, memory_mib=65536, online=False)), ())
    vms = [ready(f"db{i}") for i in range(1, 5)]
    res = solve_launch(snap, vms, [c.Spread(tuple(v.name for v in vms))])
    assert not res.ok and res.proven and res.search_nodes == 0
    assert str(res.refusal) == (
        "no host fits db1, db2, db3, db4: 3 hosts fail spread "
        "(h1, h2, h3: spread of 4 VMs needs 4 hosts, 3 online)"
    )
    # with the fourth host online the same launch is solved
    snap = Snapshot(hosts(4), ())
    assert solve_launch(snap, vms, [c.Spread(tuple(v.name for v in vms))]).ok
