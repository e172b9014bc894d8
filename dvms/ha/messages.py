"""High-availability messages (type codes 112-119).

    Renew(round, owner, vms, page)    -> RenewAck(round, stale, page)  owner -> each guardian
    Propose(ns, name, gen, base, epoch) -> Vote(ns, name, gen, yes)  guardian -> guardians
    Release(ns, name, generation)     (one way) a proposer that lost gives its votes back
    Retire(ns, name, generation)      (one way) the owner removed the VM for good

A renewal carries the whole record of each VM (its ``LaunchVm`` with the ``HaTag``), so
a guardian that joins the set learns everything from the next renewal. A host with
many HA VMs sends one round to a guardian as several pages (``page`` 0, 1, ...), each
at most ``HaConfig.renew_max_bytes`` of records (``record_size``) and ``RENEW_MAX_VMS``
VMs; each page is acknowledged on its own. ``stale`` lists
the VMs the guardian knows a newer generation of (or promised to restart): the owner
fences those at once (``started``) or does not count the acknowledgement for them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import cbor2

from dvms.overlay.messages import Contact
from dvms.partition.messages import LaunchVm
from dvms.wire.envelope import MessageRegistry
from dvms.wire.schema import MaxLen, Range, compile_record

__all__ = [
    "HA_MESSAGES",
    "RENEW_MAX_VMS",
    "Propose",
    "Release",
    "Renew",
    "RenewAck",
    "Retire",
    "StaleVm",
    "Vote",
    "record_size",
    "register_ha_messages",
]

Name = Annotated[str, MaxLen(128)]
U64 = Annotated[int, Range(0, 2**64 - 1)]
Gen = Annotated[int, Range(0, 2**62)]


#: At most this many VM records in one renewal page (the schema's limit).
RENEW_MAX_VMS = 1024


@dataclass(frozen=True, slots=True)
class Renew:
    round: U64
    owner: Contact
    vms: Annotated[tuple[LaunchVm, ...], MaxLen(RENEW_MAX_VMS)]
    #: This round's page to this guardian (0 for the first or only one).
    page: Annotated[int, Range(0, 2**20)] = 0


@dataclass(frozen=True, slots=True)
class StaleVm:
    namespace: Name
    name: Name
    #: The newest generation the guardian knows or promised.
    generation: Gen
    #: True: a copy of that generation was started, the owner's copy is stale (fence
    #: it now). False: a restart is being agreed, this renewal does not count.
    started: bool = True


@dataclass(frozen=True, slots=True)
class RenewAck:
    round: U64
    stale: Annotated[tuple[StaleVm, ...], MaxLen(RENEW_MAX_VMS)] = ()
    #: The page acknowledged (the renewal's ``page``).
    page: Annotated[int, Range(0, 2**20)] = 0


@dataclass(frozen=True, slots=True)
class Propose:
    namespace: Name
    name: Name
    #: The generation the restarted copy will have (the record's + 1 or more).
    generation: Gen
    #: The proposer's record: its generation and guardian-set epoch (``HaTag``). A
    #: voter holding a newer epoch of that generation refuses.
    base: Gen = 0
    epoch: Gen = 0


@dataclass(frozen=True, slots=True)
class Vote:
    namespace: Name
    name: Name
    generation: Gen
    yes: bool
    #: With ``yes`` false: the newest generation the voter knows or promised (the
    #: proposer retries above it), or 0 when it refuses because the lease still runs.
    newest: Gen = 0
    #: With ``yes`` false: the voter holds a newer guardian set of the proposer's
    #: generation (the proposer was dropped from the set, or has not heard of it yet).
    stale_set: bool = False


@dataclass(frozen=True, slots=True)
class Release:
    """The proposer of ``generation`` will not start it: voters drop their promise."""

    namespace: Name
    name: Name
    generation: Gen


@dataclass(frozen=True, slots=True)
class Retire:
    namespace: Name
    name: Name
    generation: Gen


HA_MESSAGES: dict[int, type] = {
    112: Renew,
    113: RenewAck,
    114: Propose,
    115: Vote,
    116: Retire,
    117: Release,
}


_encode_vm = compile_record(LaunchVm)[0]


def record_size(vm: LaunchVm) -> int:
    """Bytes of ``vm``'s record in a renewal (its CBOR encoding)."""
    return len(cbor2.dumps(_encode_vm(vm)))


def register_ha_messages(registry: MessageRegistry) -> MessageRegistry:
    for code, cls in HA_MESSAGES.items():
        registry.register(code, cls)
    return registry
