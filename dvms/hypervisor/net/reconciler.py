"""Desired-state reconciler for namespace bridges and tunnel meshes (pure planning).

``plan(desired, observed)`` compares what a host should have with what it has and returns
the actions that close the gap, deletions first:

    desired (NamespaceNetwork per namespace)      observed (Link, flood fdb)
                        \\                          /
                         plan() -> [DeleteLink..., CreateBridge, SetUp, CreateVxlan,
                                    SetMaster, SetUp, FdbAppend..., SetMaster(port)...]

Ownership: only links whose ifalias says ``dvms:`` are ever deleted or changed; a foreign
link that happens to carry one of our names is a conflict (``NetError``), never clobbered.
Applying the plan and planning again yields ``[]`` (idempotence). A namespace missing
from ``desired`` loses every link it had, which is how a namespace is cleared.

Mesh without loops: VXLAN uses one device per namespace with head-end replication (an
all-zero fdb entry per peer), and the kernel never re-floods a frame back into VXLAN.
gretap needs one device per peer; those bridge ports are marked *isolated* so a frame that
came in from one tunnel is never forwarded into another (split horizon), which replaces
the RSTP minimega turns on for its OVS mesh.
"""

from __future__ import annotations

from collections.abc import Iterable

from dvms.hypervisor.net import naming
from dvms.hypervisor.net.model import (
    Action,
    CreateBridge,
    CreateGretap,
    CreateVxlan,
    DeleteLink,
    FdbAppend,
    FdbDelete,
    Link,
    NamespaceNetwork,
    NetConfig,
    NetError,
    NetlinkBackend,
    Observed,
    SetIsolated,
    SetMaster,
    SetUp,
    TunnelKind,
)

__all__ = ["Reconciler", "clear_plan", "plan"]

_ROLE_ORDER = {"gretap": 0, "vxlan": 0, "bridge": 1}


def _owner(link: Link) -> tuple[str, str, str] | None:
    return naming.parse_alias(link.alias)


def _check_keys(desired: list[NamespaceNetwork]) -> None:
    seen: dict[int, str] = {}
    for net in desired:
        other = seen.setdefault(net.tunnel_key, net.namespace)
        if other != net.namespace:
            raise NetError(
                f"namespaces {other!r} and {net.namespace!r} map to the same tunnel key "
                f"{net.tunnel_key}; give one of them an explicit key"
            )


def _wanted_links(net: NamespaceNetwork, cfg: NetConfig) -> list[Link]:
    """The managed links one namespace needs, as the Link records they should read back as."""
    key = net.tunnel_key
    br = naming.bridge_name(key)
    links: list[Link] = [Link(br, "bridge", naming.alias(net.namespace, "bridge"), up=True)]
    if not net.peers:
        return links
    if net.kind is TunnelKind.VXLAN:
        links.append(
            Link(
                naming.vxlan_name(key),
                "vxlan",
                naming.alias(net.namespace, "vxlan"),
                master=br,
                up=True,
                key=key,
                local=net.local_ip,
                port=cfg.vxlan_port,
            )
        )
    else:
        for peer in sorted(net.peers):
            links.append(
                Link(
                    naming.gretap_name(key, peer),
                    "gretap",
                    naming.alias(net.namespace, "gretap", peer),
                    master=br,
                    up=True,
                    key=key,
                    local=net.local_ip,
                    remote=peer,
                    isolated=True,
                )
            )
    return links


def _same_device(want: Link, have: Link) -> bool:
    """Attributes that can only be changed by re-creating the device."""
    return (want.kind, want.alias, want.key, want.local, want.remote, want.port) == (
        have.kind,
        have.alias,
        have.key,
        have.local,
        have.remote,
        have.port,
    )


def _create(want: Link, cfg: NetConfig) -> Action:
    assert want.alias is not None
    if want.kind == "bridge":
        return CreateBridge(want.name, want.alias, cfg.mtu)
    if want.kind == "vxlan":
        assert want.key is not None and want.local is not None and want.port is not None
        return CreateVxlan(
            want.name, want.alias, want.key, want.local, want.port, cfg.learning, cfg.mtu
        )
    assert want.key is not None and want.local is not None and want.remote is not None
    return CreateGretap(want.name, want.alias, want.key, want.local, want.remote, cfg.mtu)


def _converge_link(want: Link, have: Link | None, cfg: NetConfig) -> tuple[list[Action], bool]:
    """(actions, recreated) to make ``have`` look like ``want``."""
    out: list[Action] = []
    recreated = False
    if have is not None and _owner(have) is None:
        raise NetError(f"link {want.name} exists and was not made by dvms; refusing to touch it")
    if have is None or not _same_device(want, have):
        if have is not None:
            out.append(DeleteLink(want.name))
        out.append(_create(want, cfg))
        have, recreated = None, True
    if want.master and (have is None or have.master != want.master):
        out.append(SetMaster(want.name, want.master))
    if want.isolated and (have is None or not have.isolated):
        out.append(SetIsolated(want.name))
    if have is None or not have.up:
        out.append(SetUp(want.name))
    return out, recreated


def plan(
    desired: Iterable[NamespaceNetwork], observed: Observed, cfg: NetConfig | None = None
) -> list[Action]:
    """Actions that turn ``observed`` into ``desired``; [] when they already agree."""
    cfg = cfg or NetConfig()
    nets = sorted(desired, key=lambda n: n.namespace)
    names = [n.namespace for n in nets]
    if len(set(names)) != len(names):
        raise NetError("a namespace appears twice in the desired state")
    _check_keys(nets)
    wanted: dict[str, Link] = {}
    for net in nets:
        for link in _wanted_links(net, cfg):
            wanted[link.name] = link
    deletes = [
        DeleteLink(link.name)
        for link in sorted(
            observed.links.values(), key=lambda lk: (_ROLE_ORDER.get(lk.kind, 0), lk.name)
        )
        if _owner(link) is not None and link.name not in wanted
    ]
    creates: list[Action] = []
    for net in nets:
        br = naming.bridge_name(net.tunnel_key)
        for want in _wanted_links(net, cfg):
            have = observed.links.get(want.name)
            actions, recreated = _converge_link(want, have, cfg)
            creates.extend(actions)
            if want.kind == "vxlan":
                current = frozenset() if recreated else observed.flood.get(want.name, frozenset())
                creates += [FdbDelete(want.name, ip) for ip in sorted(current - net.peers)]
                creates += [FdbAppend(want.name, ip) for ip in sorted(net.peers - current)]
        for port in sorted(net.ports):
            iface = observed.links.get(port)
            if iface is None:
                continue  # not there yet (VM not started); the next reconcile attaches it
            if _owner(iface) is not None:
                raise NetError(f"port {port} is a dvms-made link, not a VM interface")
            if iface.master != br:
                creates.append(SetMaster(port, br))
            if not iface.up:
                creates.append(SetUp(port))
    return [*deletes, *creates]


def clear_plan(namespace: str, observed: Observed) -> list[Action]:
    """Delete every link the namespace made on this host (tunnels before the bridge)."""
    mine = [lk for lk in observed.links.values() if (o := _owner(lk)) and o[0] == namespace]
    mine.sort(key=lambda lk: (_ROLE_ORDER.get(lk.kind, 0), lk.name))
    return [DeleteLink(lk.name) for lk in mine]


class Reconciler:
    """Drives one host's ``NetlinkBackend`` to a desired state (synchronous, blocking).

    The Trio layer calls it through ``trio.to_thread.run_sync``. ``apply`` returns the
    actions it performed, so a caller (and the idempotence test) can see that a second
    application did nothing.
    """

    def __init__(self, backend: NetlinkBackend, config: NetConfig | None = None) -> None:
        self.backend = backend
        self.config = config or NetConfig()

    def plan(self, desired: Iterable[NamespaceNetwork]) -> list[Action]:
        return plan(desired, self.backend.snapshot(), self.config)

    def apply(self, desired: Iterable[NamespaceNetwork]) -> list[Action]:
        actions = self.plan(desired)
        self._run(actions)
        return actions

    def clear(self, namespace: str) -> list[Action]:
        actions = clear_plan(namespace, self.backend.snapshot())
        self._run(actions)
        return actions

    def _run(self, actions: list[Action]) -> None:
        # Backends raise NetError naming the action; a failure mid-plan leaves a partial
        # state that the next apply() converges from (every step is re-derived).
        for action in actions:
            self.backend.apply(action)
