"""High availability without a head node (``docs/ha.md``): leases held by guardians,
fencing by generation, restarts as DVMS launch events."""

from dvms.ha.config import HaConfig
from dvms.ha.core import ArmWatchdog, Fence, HaCore, HaEvent, HaStatus, StartLaunch, tag_for, vm_key
from dvms.ha.messages import HA_MESSAGES, register_ha_messages

__all__ = [
    "HA_MESSAGES",
    "ArmWatchdog",
    "Fence",
    "HaConfig",
    "HaCore",
    "HaEvent",
    "HaStatus",
    "StartLaunch",
    "register_ha_messages",
    "tag_for",
    "vm_key",
]
