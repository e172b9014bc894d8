"""The namespace-network reconciler against the fake kernel: mesh, idempotence, clearing."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dvms.hypervisor.net import (
    FakeNetlink,
    NamespaceNetwork,
    NetError,
    Reconciler,
    TunnelKind,
    bridge_name,
    namespace_key,
)
from dvms.hypervisor.net.model import DeleteLink, FdbAppend, FdbDelete, Link
from dvms.hypervisor.net.naming import gretap_name, parse_alias, vxlan_name

IPS = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"]


def mesh(namespace: str, me: str, hosts: list[str], **kw) -> NamespaceNetwork:
    return NamespaceNetwork(namespace, me, frozenset(h for h in hosts if h != me), **kw)


def dvms_links(fake: FakeNetlink) -> dict[str, Link]:
    return {n: lk for n, lk in fake.links.items() if parse_alias(lk.alias)}


def test_vxlan_mesh_is_built_and_second_apply_changes_nothing():
    fakes = {ip: FakeNetlink() for ip in IPS[:3]}
    for ip, fake in fakes.items():
        actions = Reconciler(fake).apply([mesh("red", ip, IPS[:3])])
        assert actions, "first apply must create links"
    key = namespace_key("red")
    for ip, fake in fakes.items():
        br, vx = fake.links[bridge_name(key)], fake.links[vxlan_name(key)]
        assert br.kind == "bridge" and br.up
        assert vx.kind == "vxlan" and vx.key == key and vx.local == ip and vx.port == 4789
        assert vx.master == br.name and vx.up
        assert fake.flood[vx.name] == set(IPS[:3]) - {ip}  # head-end replication to peers
        before = fake.mutations
        assert Reconciler(fake).apply([mesh("red", ip, IPS[:3])]) == []
        assert fake.mutations == before


def test_each_namespace_gets_its_own_key_and_bridge():
    fake = FakeNetlink()
    Reconciler(fake).apply([mesh("red", IPS[0], IPS[:2]), mesh("blue", IPS[0], IPS[:3])])
    vnis = {lk.key for lk in fake.links.values() if lk.kind == "vxlan"}
    bridges = {lk.name for lk in fake.links.values() if lk.kind == "bridge"}
    assert vnis == {namespace_key("red"), namespace_key("blue")} and len(vnis) == 2
    assert len(bridges) == 2


def test_single_host_namespace_has_a_bridge_and_no_tunnel():
    fake = FakeNetlink()
    Reconciler(fake).apply([mesh("solo", IPS[0], [IPS[0]])])
    assert [lk.kind for lk in dvms_links(fake).values()] == ["bridge"]


def test_peer_changes_adjust_only_the_fdb():
    fake = FakeNetlink()
    rec = Reconciler(fake)
    rec.apply([mesh("red", IPS[0], IPS[:3])])
    actions = rec.apply([mesh("red", IPS[0], [IPS[0], IPS[1], IPS[3]])])
    vx = vxlan_name(namespace_key("red"))
    assert actions == [FdbDelete(vx, IPS[2]), FdbAppend(vx, IPS[3])]


def test_changed_local_address_recreates_the_tunnel():
    fake = FakeNetlink()
    rec = Reconciler(fake)
    rec.apply([mesh("red", IPS[0], IPS[:2])])
    actions = rec.apply([NamespaceNetwork("red", "10.9.9.9", frozenset({IPS[1]}))])
    vx = vxlan_name(namespace_key("red"))
    assert DeleteLink(vx) in actions
    assert fake.links[vx].local == "10.9.9.9" and fake.flood[vx] == {IPS[1]}
    assert rec.apply([NamespaceNetwork("red", "10.9.9.9", frozenset({IPS[1]}))]) == []


def test_clear_removes_every_link_the_namespace_made_and_nothing_else():
    fake = FakeNetlink(links=(Link("eth0", "veth", up=True),))
    fake.add_port("tap-vm1")
    rec = Reconciler(fake)
    red = mesh("red", IPS[0], IPS[:3], ports=frozenset({"tap-vm1"}))
    rec.apply([red, mesh("blue", IPS[0], IPS[:2])])
    assert fake.links["tap-vm1"].master == bridge_name(namespace_key("red"))
    rec.clear("red")
    left = {parse_alias(lk.alias)[0] for lk in dvms_links(fake).values()}
    assert left == {"blue"}
    assert "eth0" in fake.links and "tap-vm1" in fake.links  # foreign links untouched
    assert fake.links["tap-vm1"].master is None  # released with its bridge
    assert rec.clear("red") == []


def test_dropping_a_namespace_from_the_desired_state_clears_it():
    fake = FakeNetlink()
    rec = Reconciler(fake)
    rec.apply([mesh("red", IPS[0], IPS[:3]), mesh("blue", IPS[0], IPS[:2])])
    rec.apply([mesh("blue", IPS[0], IPS[:2])])
    assert {parse_alias(lk.alias)[0] for lk in dvms_links(fake).values()} == {"blue"}


def test_ports_are_attached_when_they_appear():
    fake = FakeNetlink()
    rec = Reconciler(fake)
    net = mesh("red", IPS[0], IPS[:2], ports=frozenset({"vnet0"}))
    rec.apply([net])  # the VM's tap does not exist yet: skipped, not an error
    fake.add_port("vnet0")
    assert [type(a).__name__ for a in rec.apply([net])] == ["SetMaster", "SetUp"]
    assert rec.apply([net]) == []


def test_foreign_link_with_our_name_is_never_clobbered():
    key = namespace_key("red")
    fake = FakeNetlink(links=(Link(bridge_name(key), "bridge", alias=None),))
    with pytest.raises(NetError, match="not made by dvms"):
        Reconciler(fake).apply([mesh("red", IPS[0], IPS[:2])])
    assert fake.mutations == 0


def test_key_collision_is_refused():
    with pytest.raises(NetError, match="same tunnel key"):
        Reconciler(FakeNetlink()).apply(
            [mesh("a", IPS[0], IPS[:2], key=7), mesh("b", IPS[0], IPS[:2], key=7)]
        )


def test_gretap_on_a_kernel_without_gre_fails_clearly():
    fake = FakeNetlink(gre_supported=False)
    with pytest.raises(NetError, match="Operation not supported"):
        Reconciler(fake).apply([mesh("red", IPS[0], IPS[:3], kind=TunnelKind.GRETAP)])


def test_gretap_mesh_uses_one_isolated_port_per_peer():
    fake = FakeNetlink(gre_supported=True)
    rec = Reconciler(fake)
    net = mesh("red", IPS[0], IPS[:4], kind=TunnelKind.GRETAP)
    rec.apply([net])
    key = namespace_key("red")
    grets = [lk for lk in fake.links.values() if lk.kind == "gretap"]
    assert sorted(g.remote for g in grets) == IPS[1:4]
    assert {g.name for g in grets} == {gretap_name(key, p) for p in IPS[1:4]}
    assert all(g.isolated and g.master == bridge_name(key) and g.key == key for g in grets)
    assert all(len(g.name) <= 15 for g in grets)
    assert rec.apply([net]) == []
    rec.clear("red")
    assert dvms_links(fake) == {}


namespaces = st.sampled_from(["red", "blue", "green", "ns-4"])
states = st.dictionaries(
    namespaces,
    st.tuples(
        st.frozensets(st.sampled_from(IPS[1:]), max_size=3), st.sampled_from(list(TunnelKind))
    ),
    max_size=4,
)


@settings(max_examples=60, deadline=None)
@given(st.lists(states, min_size=1, max_size=4))
def test_any_sequence_of_states_converges_and_is_idempotent(sequence):
    fake = FakeNetlink(gre_supported=True)
    rec = Reconciler(fake)
    for state in sequence:
        desired = [NamespaceNetwork(ns, IPS[0], peers, kind) for ns, (peers, kind) in state.items()]
        rec.apply(desired)
        assert rec.apply(desired) == []
        owners = {parse_alias(lk.alias)[0] for lk in dvms_links(fake).values()}
        assert owners == set(state)
    for ns in {ns for state in sequence for ns in state}:
        rec.clear(ns)
    assert dvms_links(fake) == {}
    assert all(not dsts for dsts in fake.flood.values())
