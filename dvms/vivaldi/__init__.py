"""Vivaldi network coordinates (pure algorithm, sans-I/O): the hashicorp/serf recipe.

Public API::

    VivaldiConfig                      frozen config, serf defaults, seconds
    Coordinate                         frozen coordinate; distance_to, to_wire/from_wire
    VivaldiClient(config, rng)         update(peer_key, peer_coord, rtt_s), forget, stats
    SampleRejected, VivaldiStats       rejection exception and counters
    nearest(own, peers, n)             n nearest peers by predicted RTT
    predicted_rtt_matrix, relative_errors   vectorised scoring for simulations

Truth-matrix generators and the offline simulate/evaluate kit live in
``dvms.vivaldi.phantom`` (imported explicitly, not re-exported). See README.md.
"""

from dvms.vivaldi.client import SampleRejected, VivaldiClient, VivaldiStats
from dvms.vivaldi.config import VivaldiConfig
from dvms.vivaldi.coordinate import (
    Coordinate,
    nearest,
    predicted_rtt_matrix,
    relative_errors,
)

__all__ = [
    "Coordinate",
    "SampleRejected",
    "VivaldiClient",
    "VivaldiConfig",
    "VivaldiStats",
    "nearest",
    "predicted_rtt_matrix",
    "relative_errors",
]
