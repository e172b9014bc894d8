"""Scenario topology -> latency model, host -> site map and the seeded network model.

    lan     one site ``lan``, every RTT ``lan_rtt_s`` (VMPlaceS platform: 50 us)
    sites   ``SitesLatency``: WAN table (ms in the file) between named sites,
            ``lan_rtt_s`` inside one; hosts in contiguous blocks or round-robin
    matrix  ``MatrixLatency`` from a file of RTTs in ms; host i takes row i mod size and
            each row is its own site (``row0``, ``row1``...)

The network's random draws (message loss) come from ``Random(f"{seed}:net")``, a stream
of its own, so adding protocol traffic never changes the load trace.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dvms.sim.scenario import Scenario, ScenarioError
from dvms.transport.netmodel import (
    ConstantLatency,
    LatencyMatrixError,
    LatencyModel,
    MatrixLatency,
    NetworkConditions,
    NetworkModel,
    SitesLatency,
)

__all__ = ["Topology", "assign_sites", "build_topology"]


@dataclass(frozen=True, slots=True)
class Topology:
    site_names: list[str]
    site_of: list[int]
    latency: LatencyModel
    network: NetworkModel


def assign_sites(hosts: int, sites: int, assignment: str) -> list[int]:
    """Site of each host: ``blocks`` (contiguous, sizes differ by at most one) or
    ``round_robin``."""
    if assignment == "round_robin":
        return [h % sites for h in range(hosts)]
    return [h * sites // hosts for h in range(hosts)]


def build_topology(scenario: Scenario) -> Topology:
    topo = scenario.topology
    n = scenario.hosts.count
    latency: LatencyModel
    if topo.kind == "lan":
        names, site_of = ["lan"], [0] * n
        latency = ConstantLatency(topo.lan_rtt_s)
    elif topo.kind == "sites":
        names = list(topo.sites)
        site_of = assign_sites(n, len(names), topo.assignment)
        wan = np.asarray(topo.wan_rtt_ms, dtype=float) / 1000.0
        latency = SitesLatency(site_of, wan, lan_rtt_s=topo.lan_rtt_s)
    else:
        path = Path(topo.matrix_file)
        if not path.is_absolute():
            path = Path(scenario.base_dir) / path
        try:
            matrix = MatrixLatency.from_file(path, lan_rtt_s=topo.lan_rtt_s)
        except FileNotFoundError:
            raise ScenarioError(f"topology.matrix_file: no such file {str(path)!r}") from None
        except LatencyMatrixError as exc:
            raise ScenarioError(f"topology.matrix_file: {exc}") from None
        size = matrix.size or 1
        names = [f"row{i}" for i in range(min(size, n))]
        site_of = [h % size for h in range(n)]
        latency = matrix
    loss = scenario.faults.message_loss
    network = NetworkModel(
        latency, NetworkConditions(loss=loss), rng=random.Random(f"{scenario.seed}:net")
    )
    return Topology(names, site_of, latency, network)
