"""The user-facing constraint catalogue: names, arguments and modes.

Shared by the btrpsl-style script parser (``script.py``) and the TOML vjob loader
(``vjob.py``) so both formats accept exactly the same constraints with the same rules.
Semantics follow BtrPlace's constraint catalogue:

========================  ========================================  ==========  =========
kind (script spelling)    arguments                                 modes       default
========================  ========================================  ==========  =========
ban                       vms, hosts                                both        continuous
fence                     vms, hosts                                both        continuous
spread                    vms                                       both        continuous
gather                    vms                                       both        continuous
lonely                    vms                                       both        continuous
among                     vms, groups (set of host sets, disjoint)  both        continuous
root                      vms                                       continuous  continuous
preserve                  vms, resource, amount                     discrete    discrete
resourcecapacity          hosts, resource, amount                   both        continuous
(resourceCapacity)
runningcapacity           hosts, amount                             discrete    discrete
(runningCapacity,
alias capacity)
running, ready            vms                                       discrete    discrete
========================  ========================================  ==========  =========

As in btrpsl, every constraint is continuous when it supports it; a script writes ``>>``
(a TOML table writes ``continuous = false``) to ask for the discrete version, which is
what allows the solver to *repair* an already-broken property. ``spread``, ``gather`` and
``fence`` also have a soft form (``prefer`` in scripts, ``soft = true`` in TOML): scored
on the final placement, never enforced, so a soft constraint is always discrete.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "ALIASES",
    "SIGNATURES",
    "SOFT_KINDS",
    "Signature",
    "SignatureError",
    "check_groups",
    "lookup",
    "resolve_continuous",
]

#: Old (Entropy-era) names accepted as synonyms.
ALIASES = {"capacity": "runningcapacity"}
_BTRPLACE_ONLY = "it is read from BtrPlace instances only (dvms solve --btrplace)"
_NO_POWER = "plans have no node power actions (a partition leader does not switch hosts off)"
_NO_ORDER = "plans are ordered by room and migration caps, not by ordering constraints"
#: Names that exist in BtrPlace but not in dvms, with a hint for the error message.
UNSUPPORTED = {
    "latency": "use among(vms, {group, ...}) (the Entropy 'latency' constraint is among)",
    "schedule": 'it is a per-VM field: set schedule = "host" on the VM in [[vms]]',
    "coschedule": "it is a per-VM field: set coschedule = n on the VM in [[vms]]",
    "colocate": 'it is a per-VM field: set colocate = "vm" on the VM in [[vms]]',
    "split": _BTRPLACE_ONLY,
    "splitamong": _BTRPLACE_ONLY,
    "quarantine": _BTRPLACE_ONLY,
    "overbook": "set overcommit ratios on the hosts instead",
    "sleeping": _BTRPLACE_ONLY,
    "killed": "",
    "online": "",
    "offline": _BTRPLACE_ONLY,
    "maxonline": _NO_POWER,
    "seq": _NO_ORDER,
    "nodelay": _NO_ORDER,
    "before": _NO_ORDER,
    "serialize": _NO_ORDER,
    "sync": _NO_ORDER,
}


class SignatureError(ValueError):
    """A constraint is used in a way its signature does not allow."""


@dataclass(frozen=True, slots=True)
class Signature:
    """How one constraint kind is written and which modes it has."""

    kind: str
    spelling: str
    params: tuple[str, ...]
    discrete_ok: bool = True
    continuous_ok: bool = True
    soft_ok: bool = False

    @property
    def usage(self) -> str:
        return f"{self.spelling}({', '.join(self.params)})"


def _sig(
    kind: str, params: str, *, modes: str = "both", soft: bool = False, spelling: str = ""
) -> Signature:
    return Signature(
        kind=kind,
        spelling=spelling or kind,
        params=tuple(params.split()),
        discrete_ok=modes in ("both", "discrete"),
        continuous_ok=modes in ("both", "continuous"),
        soft_ok=soft,
    )


SIGNATURES: dict[str, Signature] = {
    sig.kind: sig
    for sig in (
        _sig("ban", "vms hosts"),
        _sig("fence", "vms hosts", soft=True),
        _sig("spread", "vms", soft=True),
        _sig("gather", "vms", soft=True),
        _sig("lonely", "vms"),
        _sig("among", "vms groups"),
        _sig("root", "vms", modes="continuous"),
        _sig("preserve", "vms resource amount", modes="discrete"),
        _sig("resourcecapacity", "hosts resource amount", spelling="resourceCapacity"),
        _sig("runningcapacity", "hosts amount", modes="discrete", spelling="runningCapacity"),
        _sig("running", "vms", modes="discrete"),
        _sig("ready", "vms", modes="discrete"),
    )
}
#: Kinds that have a soft ("prefer") form.
SOFT_KINDS = tuple(sorted(k for k, s in SIGNATURES.items() if s.soft_ok))


def lookup(name: str) -> Signature:
    """The signature for a constraint name (case-insensitive, aliases resolved)."""
    key = name.lower()
    key = ALIASES.get(key, key)
    if key in SIGNATURES:
        return SIGNATURES[key]
    if key in UNSUPPORTED:
        hint = f": {UNSUPPORTED[key]}" if UNSUPPORTED[key] else ""
        raise SignatureError(f"constraint {name!r} is not supported by dvms{hint}")
    known = ", ".join(s.spelling for s in SIGNATURES.values())
    raise SignatureError(f"unknown constraint {name!r} (known: {known})")


def resolve_continuous(sig: Signature, *, continuous: bool | None, soft: bool) -> bool:
    """The mode a constraint gets; ``continuous=None`` means "the default"."""
    if soft:
        if not sig.soft_ok:
            raise SignatureError(
                f"{sig.spelling} has no soft form (only {', '.join(SOFT_KINDS)} do)"
            )
        if continuous:
            raise SignatureError(
                f"a soft {sig.spelling} is scored on the final placement and cannot be continuous"
            )
        return False
    if continuous is None:
        return sig.continuous_ok
    if continuous and not sig.continuous_ok:
        raise SignatureError(f"{sig.spelling} has no continuous mode (it is discrete only)")
    if not continuous and not sig.discrete_ok:
        raise SignatureError(f"{sig.spelling} has no discrete mode (it is continuous only)")
    return continuous


def check_groups(groups: Sequence[Sequence[str]]) -> None:
    """``among`` needs non-empty, pairwise disjoint host groups."""
    if not groups:
        raise SignatureError("among needs at least one group of hosts")
    owner: dict[str, int] = {}
    for index, group in enumerate(groups):
        if not group:
            raise SignatureError(f"among: group {index + 1} is empty")
        for host in group:
            if owner.get(host, index) != index:
                raise SignatureError(
                    f"among: host {host!r} is in group {owner[host] + 1} and group {index + 1} "
                    "(groups must be disjoint)"
                )
            owner[host] = index
