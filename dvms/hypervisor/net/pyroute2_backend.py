"""The real netlink backend: pyroute2 on the root or a named network namespace.

Blocking (one netlink socket, synchronous calls): the Trio layer runs it in a worker
thread. Recipes are the ones measured on this machine: VXLAN with no remote plus one
all-zero fdb entry per peer (head-end replication), gretap with GRE_KEY flags.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable
from typing import Any

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

__all__ = ["Pyroute2Backend", "kernel_feature", "missing_tunnel_support"]

_IFF_UP = 0x1
_GRE_KEY = 0x2000  # pyroute2.netlink.rtnl.ifinfmsg.GRE_KEY: "a key is present" flag
_ZERO_MAC = "00:00:00:00:00:00"


def kernel_feature(option: str, config_path: str = "/proc/config.gz") -> str | None:
    """The value of ``CONFIG_<option>`` ("y", "m", ...), "" if not set, None if unknown."""
    try:
        with gzip.open(config_path, "rt") as fh:
            text = fh.read()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(f"CONFIG_{option}="):
            return line.split("=", 1)[1]
        if line == f"# CONFIG_{option} is not set":
            return ""
    return ""


def missing_tunnel_support(kind: str, config_path: str = "/proc/config.gz") -> str | None:
    """Why ``kind`` ("vxlan" or "gretap") cannot work here, or None if it should."""
    needed = {"vxlan": ("VXLAN",), "gretap": ("NET_IPGRE_DEMUX", "NET_IPGRE")}[kind]
    for option in needed:
        value = kernel_feature(option, config_path)
        if value == "":
            return f"kernel has no CONFIG_{option} ({config_path}): {kind} unavailable"
    return None


class Pyroute2Backend:
    """``netns=None`` drives the caller's namespace; otherwise the named one (ip netns)."""

    def __init__(self, netns: str | None = None) -> None:
        try:
            from pyroute2 import IPRoute, NetNS  # type: ignore[import-untyped]  # ships no types
        except ImportError as exc:  # pragma: no cover - dependency declared in pyproject
            raise NetError("pyroute2 is not installed") from exc
        self.netns = netns
        self._ipr: Any = NetNS(netns) if netns else IPRoute()

    def close(self) -> None:
        self._ipr.close()

    # -- reading -----------------------------------------------------------------------
    def snapshot(self) -> Observed:
        ipr = self._ipr
        raw = list(ipr.get_links())
        by_index = {msg["index"]: msg.get("ifname") for msg in raw}
        isolated = self._isolated_ports()
        links: dict[str, Link] = {}
        for msg in raw:
            name = msg.get("ifname")
            kind = msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND") or "other"
            data = msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_DATA")
            key = local = remote = port = None
            if kind == "vxlan" and data is not None:
                key, local, port = (
                    data.get("IFLA_VXLAN_ID"),
                    data.get("IFLA_VXLAN_LOCAL"),
                    data.get("IFLA_VXLAN_PORT"),
                )
            elif kind == "gretap" and data is not None:
                key = data.get("IFLA_GRE_IKEY")
                local, remote = data.get("IFLA_GRE_LOCAL"), data.get("IFLA_GRE_REMOTE")
            master = msg.get("master")
            links[name] = Link(
                name=name,
                kind=kind,
                alias=msg.get("ifalias"),
                master=by_index.get(master) if master else None,
                up=bool(msg["flags"] & _IFF_UP),
                key=key,
                local=local,
                remote=remote,
                port=port,
                isolated=msg["index"] in isolated,
            )
        flood = {lk.name: self._flood(lk.name) for lk in links.values() if lk.kind == "vxlan"}
        return Observed(links=links, flood=flood)

    def _isolated_ports(self) -> set[int]:
        out = set()
        for msg in self._ipr.brport("dump"):
            if msg.get_nested("IFLA_PROTINFO", "IFLA_BRPORT_ISOLATED"):
                out.add(msg["index"])
        return out

    def _flood(self, device: str) -> frozenset[str]:
        index = self._index(device)
        return frozenset(
            entry.get("NDA_DST")
            for entry in self._ipr.fdb("dump", ifindex=index)
            if entry["ifindex"] == index
            and entry.get("NDA_LLADDR") == _ZERO_MAC
            and entry.get("NDA_DST")
        )

    def _index(self, name: str) -> int:
        found = self._ipr.link_lookup(ifname=name)
        if not found:
            raise NetError(f"{name}: No such device")
        return found[0]

    # -- writing -----------------------------------------------------------------------
    def apply(self, action: Action) -> None:
        try:
            self._dispatch(action)
        except NetError:
            raise
        except Exception as exc:  # pyroute2's NetlinkError is not an OSError
            code = getattr(exc, "code", None)
            raise NetError(f"{action}: {exc}" + (f" (errno {code})" if code else "")) from exc

    def _dispatch(self, action: Action) -> None:
        ipr = self._ipr
        handlers: dict[type, Callable[[Any], None]] = {
            CreateBridge: lambda a: self._add(a.name, a.alias, a.mtu, kind="bridge"),
            CreateVxlan: lambda a: self._add(
                a.name,
                a.alias,
                a.mtu,
                kind="vxlan",
                vxlan_id=a.vni,
                vxlan_local=a.local,
                vxlan_port=a.port,
                vxlan_learning=int(a.learning),
            ),
            CreateGretap: lambda a: self._add(
                a.name,
                a.alias,
                a.mtu,
                kind="gretap",
                gre_local=a.local,
                gre_remote=a.remote,
                gre_ikey=a.key,
                gre_okey=a.key,
                gre_iflags=_GRE_KEY,
                gre_oflags=_GRE_KEY,
            ),
            DeleteLink: lambda a: ipr.link("del", index=self._index(a.name)),
            SetMaster: lambda a: ipr.link(
                "set", index=self._index(a.name), master=self._index(a.master)
            ),
            SetIsolated: lambda a: ipr.brport("set", index=self._index(a.name), isolated=1),
            SetUp: lambda a: ipr.link("set", index=self._index(a.name), state="up"),
            FdbAppend: lambda a: ipr.fdb(
                "append", ifindex=self._index(a.device), lladdr=_ZERO_MAC, dst=a.dst
            ),
            FdbDelete: lambda a: ipr.fdb(
                "del", ifindex=self._index(a.device), lladdr=_ZERO_MAC, dst=a.dst
            ),
        }
        handlers[type(action)](action)

    def _add(self, name: str, alias: str, mtu: int | None, **attrs: Any) -> None:
        if mtu:
            attrs["mtu"] = mtu
        self._ipr.link("add", ifname=name, **attrs)
        # The kernel ignores IFLA_IFALIAS on creation, so it is set afterwards; if that
        # fails the new link is removed, never left behind unowned.
        index = self._index(name)
        try:
            self._ipr.link("set", index=index, ifalias=alias)
        except Exception:
            self._ipr.link("del", index=index)
            raise
