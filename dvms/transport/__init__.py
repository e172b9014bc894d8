"""Datagram transports: the ``Transport`` interface, real UDP and the simulated network.

Layering (each module imports only those above it)::

    base.py      Transport protocol, Datagram, TransportError, registry by name
    netmodel.py  pure network physics: latency models, loss/duplication/jitter,
                 partitions, crashed hosts (no trio, no clock; seeded RNG)
    udp.py       UdpTransport on trio.socket                      registered as "udp"
    simnet.py    SimNetwork + SimTransport for the faithful Trio mode, registered as "sim"

See ``README.md`` next to this file for the data flow and the rules each one keeps.
"""

from __future__ import annotations

from dvms.transport.base import Address as Address
from dvms.transport.base import Datagram as Datagram
from dvms.transport.base import Transport as Transport
from dvms.transport.base import TransportError as TransportError
from dvms.transport.base import TransportFactory as TransportFactory
from dvms.transport.base import TransportStatistics as TransportStatistics
from dvms.transport.base import open_transport as open_transport
from dvms.transport.base import register_transport as register_transport
from dvms.transport.base import registered_transports as registered_transports
from dvms.transport.netmodel import DEFAULT_LAN_RTT_S as DEFAULT_LAN_RTT_S
from dvms.transport.netmodel import ConstantLatency as ConstantLatency
from dvms.transport.netmodel import LatencyMatrixError as LatencyMatrixError
from dvms.transport.netmodel import LatencyModel as LatencyModel
from dvms.transport.netmodel import MatrixLatency as MatrixLatency
from dvms.transport.netmodel import NetworkConditions as NetworkConditions
from dvms.transport.netmodel import NetworkModel as NetworkModel
from dvms.transport.netmodel import NetworkStatistics as NetworkStatistics
from dvms.transport.netmodel import SitesLatency as SitesLatency
from dvms.transport.netmodel import parse_latency_matrix as parse_latency_matrix
from dvms.transport.simnet import SimNetConfig as SimNetConfig
from dvms.transport.simnet import SimNetStatistics as SimNetStatistics
from dvms.transport.simnet import SimNetwork as SimNetwork
from dvms.transport.simnet import SimTransport as SimTransport
from dvms.transport.simnet import open_sim_network as open_sim_network
from dvms.transport.udp import UdpConfig as UdpConfig
from dvms.transport.udp import UdpTransport as UdpTransport

__all__ = [
    "DEFAULT_LAN_RTT_S",
    "Address",
    "ConstantLatency",
    "Datagram",
    "LatencyMatrixError",
    "LatencyModel",
    "MatrixLatency",
    "NetworkConditions",
    "NetworkModel",
    "NetworkStatistics",
    "SimNetConfig",
    "SimNetStatistics",
    "SimNetwork",
    "SimTransport",
    "SitesLatency",
    "Transport",
    "TransportError",
    "TransportFactory",
    "TransportStatistics",
    "UdpConfig",
    "UdpTransport",
    "open_sim_network",
    "open_transport",
    "parse_latency_matrix",
    "register_transport",
    "registered_transports",
]


async def _open_sim(*, network: SimNetwork, position: int, address: Address) -> Transport:
    return network.new_transport(position, address)


register_transport("udp", UdpTransport.bind)
register_transport("sim", _open_sim)
