"""Namespace networks: a Linux bridge per namespace plus a full tunnel mesh between hosts.

- ``model``       desired state (``NamespaceNetwork``), observed state, actions
- ``naming``      deterministic link names and per-namespace tunnel keys
- ``reconciler``  pure ``plan(desired, observed)`` and the ``Reconciler`` that applies it
- ``fake``        ``FakeNetlink``, an in-memory kernel for tests and the simulator
- ``pyroute2_backend``  the real backend (root or a named network namespace)

Backends are looked up by name with ``open_net_backend("pyroute2" | "fake", ...)``.
"""

from __future__ import annotations

from typing import Any

from dvms.hypervisor.net.fake import FakeNetlink
from dvms.hypervisor.net.model import (
    Action,
    Link,
    NamespaceNetwork,
    NetConfig,
    NetError,
    NetlinkBackend,
    Observed,
    TunnelKind,
)
from dvms.hypervisor.net.naming import bridge_name, namespace_key
from dvms.hypervisor.net.reconciler import Reconciler, clear_plan, plan

__all__ = [
    "Action",
    "FakeNetlink",
    "Link",
    "NamespaceNetwork",
    "NetConfig",
    "NetError",
    "NetlinkBackend",
    "Observed",
    "Reconciler",
    "TunnelKind",
    "bridge_name",
    "clear_plan",
    "namespace_key",
    "open_net_backend",
    "plan",
]


def open_net_backend(name: str, **kwargs: Any) -> NetlinkBackend:
    """``"pyroute2"`` (kwarg ``netns``) or ``"fake"`` (kwarg ``gre_supported``)."""
    if name == "fake":
        return FakeNetlink(**kwargs)
    if name == "pyroute2":
        from dvms.hypervisor.net.pyroute2_backend import Pyroute2Backend

        return Pyroute2Backend(**kwargs)
    raise ValueError(f"unknown network backend {name!r} (known: fake, pyroute2)")
