"""dvms: a peer-to-peer distributed VM scheduler.

Layers, bottom up; imports point down (``docs/architecture.md`` draws them,
``tests/test_layers.py`` holds the rules):

- kernel          ``dvms.effects`` (effect values), ``dvms.names``, ``dvms.ranges``,
                  ``dvms.configfile`` (config files: TOML tables -> config dataclasses)
- ``dvms.wire``       the authenticated CBOR envelope every peer message travels in
- ``dvms.vivaldi``    Vivaldi network coordinates (pure algorithm)
- ``dvms.placement``  the placement engine (pure)
- ``dvms.namespace``  minimega's namespace API (pure)
- ``dvms.transport``  the ``Transport`` interface: real UDP and the simulated network
- ``dvms.hypervisor`` hypervisor and network drivers
- ``dvms.overlay``    Kademlia (sans-I/O core)
- ``dvms.partition``  DVMS partitions (sans-I/O core)
- ``dvms.stack``      one node's cores composed into a ``NodeCore``
- ``dvms.runtime``    the Trio daemon: the node shell, services, control socket, client
- ``dvms.sim``        the discrete-event simulator that drives the same cores
- ``dvms.testing``    the cluster harness and the invariant checker
- ``dvms.cli``        the ``dvms`` command

``dvms.accel`` is the optional compiled build of the simulator's hot path
(``DVMS_ACCEL=1``).
"""

__version__ = "0.1.0"

import os as _os

if _os.environ.get("DVMS_ACCEL", "") not in ("", "0"):
    # opt-in compiled build of the simulator's hot path (see dvms.accel)
    from dvms import accel as _accel

    _accel.enable_from_env()
