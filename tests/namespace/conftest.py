"""Shared helpers: a console on a small cluster of described hosts."""

from __future__ import annotations

import pytest

from dvms.namespace import Cluster, Console
from dvms.placement import Host


def cluster(n: int = 3, prefix: str = "mm", cpus: int = 8, memory: int = 65536) -> Cluster:
    hosts = tuple(Host(f"{prefix}{i}", cpus=cpus, memory_mib=memory) for i in range(1, n + 1))
    return Cluster(hosts=hosts, local=f"{prefix}1")


def make_console(n: int = 3, **kw) -> Console:
    return Console(cluster(n, **kw))


@pytest.fixture
def con() -> Console:
    return make_console(3)
