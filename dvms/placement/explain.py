"""Explanations: why a VM was refused, host by host, with counts per rule.

A ``Refusal`` is what every "no" of the engine carries. ``str(refusal)`` is the one-line
form the CLI and the daemon print: the VMs, then per rule the number of hosts it
refused, the first of them by name and what the first one lacks (``no host fits vm3:
3 hosts fail memory (h1, h2, h3: needs 4096 MiB of memory, 1024 of 16384 MiB free)``);
``refusal.hosts`` has the per-host verdicts for ``--json`` or a verbose listing.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from dvms.ranges import natural_key

__all__ = ["HostVerdict", "Refusal"]

#: Hosts named per rule in the one-line form (the rest are counted).
_NAMED = 4


@dataclass(frozen=True, slots=True)
class HostVerdict:
    """One host's rejection: the first rule that refused it and a detail text."""

    host: str
    rule: str
    detail: str


@dataclass(frozen=True, slots=True)
class Refusal:
    """``vms`` (one VM, or a colocate group) fit on none of the hosts."""

    vms: tuple[str, ...]
    hosts: tuple[HostVerdict, ...]
    note: str = ""

    def counts(self) -> dict[str, int]:
        """Hosts refused per rule, most frequent first, then by rule name."""
        counted = Counter(v.rule for v in self.hosts)
        return dict(sorted(counted.items(), key=lambda kv: (-kv[1], kv[0])))

    def __str__(self) -> str:
        who = ", ".join(self.vms)
        parts = []
        said = set()
        for i, (rule, n) in enumerate(self.counts().items()):
            noun = ("host" if n == 1 else "hosts") + " " if i == 0 else ""
            verb = "fails" if n == 1 else "fail"
            hosts = sorted((v for v in self.hosts if v.rule == rule), key=_by_host)
            named = ", ".join(v.host for v in hosts[:_NAMED])
            more = f" and {len(hosts) - _NAMED} more" if len(hosts) > _NAMED else ""
            detail = hosts[0].detail
            said.add(detail)
            parts.append(f"{n} {noun}{verb} {rule} ({named}{more}: {detail})")
        text = f"no host fits {who}: " + (", ".join(parts) if parts else "no online host")
        return f"{text} ({self.note})" if self.note and self.note not in said else text

    def details(self) -> list[str]:
        """One line per refused host: ``host: rule: detail``."""
        return [f"{v.host}: {v.rule}: {v.detail}" for v in self.hosts]

    def to_dict(self) -> dict:
        return {
            "vms": list(self.vms),
            "message": str(self),
            "counts": self.counts(),
            "hosts": {v.host: {"rule": v.rule, "detail": v.detail} for v in self.hosts},
        }


def _by_host(v: HostVerdict) -> tuple[object, ...]:
    return natural_key(v.host)
