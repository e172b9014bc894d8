"""An in-memory netlink backend that behaves like the kernel for the operations we use.

A fake, not a mock: it keeps real state (links, masters, flags, flood fdb) and enforces
the kernel rules the reconciler relies on: names are unique and at most 15 bytes; a
master must be a bridge; two VXLAN devices cannot share (VNI, port); gretap is refused
with "Operation not supported" when the simulated kernel lacks GRE (as on this machine);
deleting a bridge releases its ports; deleting a missing link fails. It counts every
mutation so tests can assert that a second reconcile changed nothing.
"""

from __future__ import annotations

from dataclasses import replace

from dvms.hypervisor.net.model import (
    Action,
    CreateBridge,
    CreateGretap,
    CreateVxlan,
    DeleteLink,
    FdbAppend,
    FdbDelete,
    Link,
    NetError,
    Observed,
    SetIsolated,
    SetMaster,
    SetUp,
)

__all__ = ["FakeNetlink"]


class FakeNetlink:
    """One simulated host's network namespace."""

    def __init__(self, *, gre_supported: bool = False, links: tuple[Link, ...] = ()) -> None:
        self.gre_supported = gre_supported
        self.links: dict[str, Link] = {lk.name: lk for lk in links}
        self.flood: dict[str, set[str]] = {}
        self.mutations = 0
        self.closed = False

    # -- helpers used by tests and the simulator ------------------------------------------
    def add_port(self, name: str, kind: str = "tap") -> None:
        """A VM interface appearing (a tap libvirt made, a veth)."""
        self._create(Link(name, kind))

    def snapshot(self) -> Observed:
        return Observed(
            links=dict(self.links),
            flood={dev: frozenset(dsts) for dev, dsts in self.flood.items()},
        )

    def close(self) -> None:
        self.closed = True

    # -- kernel rules ---------------------------------------------------------------------
    def _create(self, link: Link) -> None:
        if len(link.name.encode()) > 15:
            raise NetError(f"create {link.name}: name longer than 15 bytes (EINVAL)")
        if link.name in self.links:
            raise NetError(f"create {link.name}: File exists (EEXIST)")
        self.links[link.name] = link

    def _get(self, name: str, action: Action) -> Link:
        try:
            return self.links[name]
        except KeyError:
            raise NetError(f"{action}: No such device (ENODEV)") from None

    def apply(self, action: Action) -> None:
        if self.closed:
            raise NetError("backend closed")
        self.mutations += 1
        match action:
            case CreateBridge(name, alias, _mtu):
                self._create(Link(name, "bridge", alias))
            case CreateVxlan(name, alias, vni, local, port, _learning, _mtu):
                for other in self.links.values():
                    if other.kind == "vxlan" and (other.key, other.port) == (vni, port):
                        raise NetError(f"{action}: VNI {vni} already used by {other.name}")
                self._create(Link(name, "vxlan", alias, key=vni, local=local, port=port))
                self.flood[name] = set()
            case CreateGretap(name, alias, key, local, remote, _mtu):
                if not self.gre_supported:
                    raise NetError(f"{action}: Operation not supported (EOPNOTSUPP)")
                self._create(Link(name, "gretap", alias, key=key, local=local, remote=remote))
            case DeleteLink(name):
                link = self._get(name, action)
                del self.links[name]
                self.flood.pop(name, None)
                if link.kind == "bridge":
                    for member in [p for p in self.links.values() if p.master == name]:
                        self.links[member.name] = replace(member, master=None, isolated=False)
            case SetMaster(name, master):
                link = self._get(name, action)
                if self._get(master, action).kind != "bridge":
                    raise NetError(f"{action}: {master} is not a bridge")
                self.links[name] = replace(link, master=master)
            case SetIsolated(name):
                link = self._get(name, action)
                if link.master is None:
                    raise NetError(f"{action}: {name} is not a bridge port")
                self.links[name] = replace(link, isolated=True)
            case SetUp(name):
                self.links[name] = replace(self._get(name, action), up=True)
            case FdbAppend(device, dst):
                self._get(device, action)
                self.flood.setdefault(device, set()).add(dst)
            case FdbDelete(device, dst):
                self._get(device, action)
                if dst not in self.flood.get(device, set()):
                    raise NetError(f"{action}: No such file or directory (ENOENT)")
                self.flood[device].discard(dst)
            case _:
                raise NetError(f"unknown action {action!r}")
