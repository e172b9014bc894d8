"""Image locality: a soft score for hosts that already hold the images a VM boots from.

As kube-scheduler's ImageLocality, sized for VM images: the score is the fraction of
the VM's image bytes the host holds (a partial copy counts by the fraction it holds),
scaled by how much the images' size matters: images under ``image_locality_min_mib``
in all count for nothing (a kernel alone does not matter), and the factor grows
linearly to 1 at ``image_locality_max_mib`` per image (kube caps the held bytes there
instead, which makes half of a 4 GiB image worth as much as all of it). Unlike kube, which
adds normalised scores, the engine ranks hosts by their load key, so the score lowers a
host's load by ``image_locality_weight`` times the score: a holder wins over a host
that is less loaded by less than that. Only hosts that pass every hard constraint are
ranked, so the score never makes a placement fail, and a VM without images (or a
partition where no host holds them) is placed exactly as without it.

``LocalityNote`` records the choices the score changed, for ``dvms solve``.
"""

from __future__ import annotations

from dataclasses import dataclass

from dvms.placement.config import PlacementConfig
from dvms.placement.model import Host, Vm

__all__ = ["MIB", "LocalityNote", "held_bytes", "locality_score"]

MIB = 1 << 20


def held_bytes(vm: Vm, host: Host) -> int:
    """Bytes of ``vm``'s images that ``host`` holds (each image by the fraction held)."""
    if not vm.images or not host.images:
        return 0
    return round(sum(size * min(1.0, host.images.get(i, 0.0)) for i, size in vm.images.items()))


def locality_score(vm: Vm, host: Host, config: PlacementConfig) -> float:
    """The image-locality score of ``host`` for ``vm``, in [0, 1]: the fraction of the
    images' bytes held here, times how much their size matters (0 up to
    ``image_locality_min_mib``, 1 from ``image_locality_max_mib`` per image on)."""
    held = held_bytes(vm, host)
    if not held:
        return 0.0
    total = sum(vm.images.values())
    low = config.image_locality_min_mib * MIB
    high = config.image_locality_max_mib * MIB * len(vm.images)
    size = min(1.0, max(0.0, (total - low) / (high - low)))
    return min(1.0, held / total) * size


@dataclass(frozen=True, slots=True)
class LocalityNote:
    """A launch where the image-locality score changed the host: ``vms`` (a unit: a VM
    and its colocate followers) went to ``host`` (score ``score``) instead of
    ``instead``, the least loaded host that took them; ``holders`` lists the hosts that
    hold some of their images (the best 8): (host, fraction of the images' bytes held,
    score), best first."""

    vms: tuple[str, ...]
    host: str
    instead: str
    score: float
    holders: tuple[tuple[str, float, float], ...]

    def __str__(self) -> str:
        held = ", ".join(f"{h} ({frac:.0%} held, score {s:.2f})" for h, frac, s in self.holders)
        return (
            f"{', '.join(self.vms)} -> {self.host}, not {self.instead} (load alone):"
            f" image locality; holders {held}"
        )
