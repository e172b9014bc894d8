"""The DHT directory of VM names (``dvms.partition.directory``): after a create or a
live migration the VM's record names the host it runs on; a launch claims its names
first, so a name in use in its namespace refuses the vjob (nothing created), two
simultaneous launches of one name place it once, and a failed launch frees its names.
Records are read as a client would find them: the winning version among the replicas
(``FakeCluster.directory``)."""

from __future__ import annotations

import pytest

from dvms.overlay.messages import Record
from dvms.overlay.records import Identity, RecordError
from dvms.partition.config import PartitionConfig
from dvms.partition.directory import (
    CLAIMED,
    FREE,
    HOSTED,
    Location,
    decode_location,
    directory_validator,
    encode_location,
)
from dvms.partition.messages import LaunchVm, WireConstraint
from dvms.testing.cluster import FakeCluster

LAN_RTT_S = 50e-6


def cluster(n: int = 6, seed: int = 3, **kw) -> FakeCluster:
    return FakeCluster(n, seed=seed, rtt_s=LAN_RTT_S, solve_delay=0.005, driver_delay=0.1, **kw)


def web(n: int, ns: str = "shop", tag: str = "web") -> list[LaunchVm]:
    return [LaunchVm(f"{tag}{i}", ns, 1, 512) for i in range(n)]


def test_a_launch_writes_each_vm_location():
    c = cluster()
    vms = web(3)
    eid = c.launch(0, vms, [WireConstraint("spread", tuple(v.name for v in vms))])
    c.run(3.0)
    done = c.done[(0, eid)]
    assert done.ok, done.reason
    for p in done.placed:
        loc = c.directory("shop", p.vm)
        assert loc is not None and loc.state == HOSTED, loc
        assert loc.host == p.host
        assert loc.node_id == c.nodes[c.host_of(f"shop/{p.vm}")[0]].node_id
    assert c.violations == [] and c.vm_problems() == []


def test_a_name_in_use_refuses_the_vjob_and_creates_nothing():
    c = cluster()
    first = c.launch(0, web(2))
    c.run(3.0)
    assert c.done[(0, first)].ok
    # same names in the same namespace, from another entry node
    second = c.launch(3, [LaunchVm("web1", "shop", 1, 512), LaunchVm("db", "shop", 1, 512)])
    c.run(3.0)
    done = c.done[(3, second)]
    assert not done.ok
    assert "VM name already in use" in done.reason and "shop/web1" in done.reason
    assert "db" not in done.reason
    assert "shop/db" not in c.created and c.created["shop/web1"] == 1
    # the name it claimed for nothing is free again; the same names elsewhere are fine
    assert c.directory("shop", "db").state == FREE
    other = c.launch(4, web(2, ns="lab"))
    again = c.launch(5, [LaunchVm("db", "shop", 1, 512)])
    c.run(3.0)
    assert c.done[(4, other)].ok and c.done[(5, again)].ok
    assert c.directory("shop", "db").state == HOSTED
    assert c.vm_problems() == [] and c.violations == []


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_two_simultaneous_launches_of_one_name_place_it_once(seed):
    c = cluster(8, seed=seed)
    a = c.launch(1, [LaunchVm("db", "shop", 1, 512)])
    b = c.launch(6, [LaunchVm("db", "shop", 1, 512)])
    c.run(5.0)
    results = [c.done[(1, a)], c.done[(6, b)]]
    assert sorted(r.ok for r in results) == [False, True], [r.reason for r in results]
    assert c.created == {"shop/db": 1}
    assert c.directory("shop", "db").state == HOSTED
    assert c.vm_problems() == [] and c.violations == []


def test_a_failed_launch_frees_its_names():
    c = cluster(4)
    too_big = [LaunchVm("huge", "shop", 65, 512)]  # 65 vCPUs on 4-CPU hosts: 64 at most
    eid = c.launch(0, too_big)
    c.run(10.0)
    assert not c.done[(0, eid)].ok
    assert c.directory("shop", "huge").state == FREE
    assert c.created == {}
    eid = c.launch(2, [LaunchVm("huge", "shop", 2, 512)])
    c.run(3.0)
    assert c.done[(2, eid)].ok, c.done[(2, eid)].reason


def test_a_migration_moves_the_record_to_the_new_host():
    c = cluster(4)
    (vm,) = c.add_vms(0, [3.0])
    c.add_vms(0, [2.0])  # host 0: 5 CPUs of demand on 4
    c.poke(0)
    c.run(5.0)
    moved = [k for k in c.hosts[0].vms] != [vm.key, f"{c.hosts[0].name}-vm1"]
    assert moved and not c.hosts[0].overloaded()
    for pos, host in enumerate(c.hosts):
        for key in host.vms:
            loc = c.directory("", key)
            if pos == 0:
                assert loc is None  # never moved: never written
            else:
                assert loc is not None and (loc.state, loc.host) == (HOSTED, host.name)
                assert loc.node_id == c.nodes[pos].node_id


def test_a_destroyed_vm_frees_its_name():
    c = cluster()
    eid = c.launch(0, web(1))
    c.run(3.0)
    assert c.done[(0, eid)].ok
    pos = c.host_of("shop/web0")[0]
    del c.hosts[pos].vms["shop/web0"]  # killed
    c.engine.apply(c.nodes[pos], c.nodes[pos].core.forget_vm("shop", "web0", now=c.now))
    c.run(1.0)
    assert c.directory("shop", "web0").state == FREE
    again = c.launch(2, web(1))
    c.run(3.0)
    assert c.done[(2, again)].ok, c.done[(2, again)].reason
    assert c.directory("shop", "web0").state == HOSTED


def test_the_directory_can_be_switched_off():
    c = cluster(config=PartitionConfig(directory=False))
    eid = c.launch(0, web(2))
    c.run(3.0)
    assert c.done[(0, eid)].ok
    assert c.directory("shop", "web0") is None


def test_replicas_refuse_malformed_directory_records():
    ident = Identity.from_seed(b"t")
    v = directory_validator()
    good = ident.sign_record(
        "vm/shop/web0", encode_location(Location(HOSTED, "h1", 5)), seq=1, ttl_s=60
    )
    v.validate(good)
    assert decode_location(good.value) == Location(HOSTED, "h1", 5, 0)
    bad_values = [b"\xff", encode_location(Location("gone")), b"\x80"]
    for value in bad_values:
        with pytest.raises(RecordError):
            v.validate(ident.sign_record("vm/shop/web0", value, seq=1, ttl_s=60))
    claim = encode_location(Location(CLAIMED, "", 1, 2))
    for name in ("vm/noslash", "vm/shop/", "vm/" + "x" * 200 + "/a"):
        with pytest.raises(RecordError):
            v.validate(ident.sign_record(name, claim, seq=1, ttl_s=60))
    forged = Record(good.name, claim, good.publisher, good.seq, good.ttl_s, good.sig)
    with pytest.raises(RecordError):
        v.validate(forged)
