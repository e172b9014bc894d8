"""dvms: a peer-to-peer distributed VM scheduler.

Subpackages (each has its own README):

- ``dvms.wire``       versioned, authenticated CBOR envelope for every peer message
- ``dvms.transport``  the ``Transport`` interface: real UDP and the simulated network
- ``dvms.overlay``    Kademlia (sans-I/O core + Trio shell)
- ``dvms.vivaldi``    Vivaldi network coordinates (pure algorithm)
- ``dvms.placement``  the placement engine (pure)
- ``dvms.partition``  DVMS partitions (sans-I/O core)
- ``dvms.hypervisor`` hypervisor and network drivers
- ``dvms.sim``        the discrete-event simulator that drives the same cores
"""

__version__ = "0.1.0"

import os as _os

if _os.environ.get("DVMS_ACCEL", "") not in ("", "0"):
    # opt-in compiled build of the simulator's hot path (see dvms.accel)
    from dvms import accel as _accel

    _accel.enable_from_env()
