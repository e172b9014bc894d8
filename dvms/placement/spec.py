"""Plain-data specifications shared by the vjob formats, the placement engine and the
hypervisor drivers.

These are the *user-facing* descriptions (what a vjob file or a CLI command says). The
placement engine turns them into its own model objects; the drivers turn a ``VmSpec`` into
a domain definition. Nothing here validates semantics against a cluster (unknown hosts,
capacities): that is the engine's job. Constructors do validate shape (types, signs) so a
bad spec is refused where it is written.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dvms.placement.hapolicy import HaPolicy

__all__ = ["DEFAULT_MEMORY_MIB", "FILE_PREFIX", "ConstraintSpec", "SpecError", "VjobSpec", "VmSpec"]

#: minimega's default ``vm config memory`` (MiB).
DEFAULT_MEMORY_MIB = 2048
#: minimega's default ``vm config vcpus``.
DEFAULT_VCPUS = 1
#: A path written ``file:NAME`` (or ``file:ROOT``) names a file shared between peers
#: (docs/files.md): the host that creates the VM fetches it first.
FILE_PREFIX = "file:"


class SpecError(ValueError):
    """A specification is malformed; the message names the field and the problem."""


@dataclass(frozen=True, slots=True)
class VmSpec:
    """One VM as a user asked for it.

    ``schedule`` / ``coschedule`` / ``colocate`` are minimega's per-VM scheduling fields
    (see docs/placement.md): ``schedule`` pins the VM to a host name, ``coschedule`` is the
    number of *other* VMs allowed on the same host (-1 = no limit), ``colocate`` names a VM
    that must share this VM's host.
    """

    name: str
    namespace: str = ""
    vcpus: int = DEFAULT_VCPUS
    memory_mib: int = DEFAULT_MEMORY_MIB
    networks: tuple[str, ...] = ()
    disk: str | None = None
    kernel: str | None = None
    initrd: str | None = None
    append: str | None = None
    #: An ISO image attached as a read-only CD-ROM (minimega's ``vm config cdrom``).
    cdrom: str | None = None
    schedule: str | None = None
    coschedule: int = -1
    colocate: str | None = None
    tags: tuple[tuple[str, str], ...] = ()
    #: High availability (``ha = "restart"`` and its keys; None: off). See
    #: ``dvms.placement.hapolicy`` and docs/ha.md.
    ha_policy: HaPolicy | None = None
    #: The generation of this copy of an HA VM (its fencing token, written into the
    #: domain's metadata; 0: not an HA copy). Set by the daemon, never by a user.
    ha_generation: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise SpecError("vm name must be a non-empty string")
        if not isinstance(self.vcpus, int) or self.vcpus < 1:
            raise SpecError(f"vm {self.name}: vcpus must be a positive integer, got {self.vcpus!r}")
        if not isinstance(self.memory_mib, int) or self.memory_mib < 1:
            raise SpecError(
                f"vm {self.name}: memory must be a positive integer (MiB), got {self.memory_mib!r}"
            )
        if not isinstance(self.coschedule, int) or self.coschedule < -1:
            raise SpecError(
                f"vm {self.name}: coschedule must be -1 (unlimited) or >= 0, "
                f"got {self.coschedule!r}"
            )

    def file_refs(self) -> tuple[str, ...]:
        """The ``file:REF`` names of the files this VM boots from (disk, kernel, initrd,
        cdrom), without the prefix: what its host fetches from its peers first."""
        paths = (self.disk, self.kernel, self.initrd, self.cdrom)
        return tuple(p[len(FILE_PREFIX) :] for p in paths if p and p.startswith(FILE_PREFIX))


@dataclass(frozen=True, slots=True)
class ConstraintSpec:
    """One placement constraint as written by a user (TOML table or btrpsl-style script).

    ``kind`` is the lower-case constraint name (``ban``, ``fence``, ``spread``, ``gather``,
    ``among``, ``lonely``, ``root``, ``preserve``, ``running``, ``ready``,
    ``resourcecapacity``, ``runningcapacity``, ``schedule``, ``coschedule``, ``colocate``).
    Host names carry no ``@``. ``groups`` is used by ``among`` (a set of host sets).
    ``continuous`` is True unless the script wrote ``>>`` (discrete) or the TOML said so.
    ``soft`` marks a preference ("prefer spread"), scored rather than enforced.
    ``where`` is the (line, column) the constraint came from, for error messages.
    """

    kind: str
    vms: tuple[str, ...] = ()
    hosts: tuple[str, ...] = ()
    groups: tuple[tuple[str, ...], ...] = ()
    resource: str | None = None
    amount: int | None = None
    continuous: bool = True
    soft: bool = False
    weight: float = 1.0
    where: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.kind, str) or not self.kind:
            raise SpecError("constraint kind must be a non-empty string")
        if self.amount is not None and (not isinstance(self.amount, int) or self.amount < 0):
            raise SpecError(f"{self.kind}: amount must be a non-negative integer")


@dataclass(frozen=True, slots=True)
class VjobSpec:
    """A vjob: a set of VMs plus the constraints that bind them."""

    name: str
    vms: tuple[VmSpec, ...]
    constraints: tuple[ConstraintSpec, ...] = ()
    namespace: str = ""
    meta: dict[str, str] = field(default_factory=dict, compare=False, hash=False)
