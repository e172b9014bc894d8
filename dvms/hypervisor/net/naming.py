"""Deterministic names and keys for the links a namespace network makes.

Every host must derive the same bridge name and the same tunnel key for a namespace
without talking to the others, so both come from the namespace name. Linux limits
interface names to 15 bytes, hence short hex names built from the key; the link's
``ifalias`` (``dvms:<namespace>:<role>[:<peer>]``) records who owns it, which is what the
reconciler trusts when it decides what to delete.
"""

from __future__ import annotations

import hashlib
import ipaddress

__all__ = [
    "ALIAS_PREFIX",
    "MAX_VNI",
    "alias",
    "bridge_name",
    "gretap_name",
    "namespace_key",
    "parse_alias",
    "vxlan_name",
]

#: VXLAN network identifiers are 24 bits; 0 is avoided (some tools treat it as unset).
MAX_VNI = (1 << 24) - 1
#: ifalias prefix marking a link as made by dvms.
ALIAS_PREFIX = "dvms:"


def namespace_key(namespace: str) -> int:
    """The namespace's tunnel key, in 1..MAX_VNI (used as VXLAN VNI and as GRE key).

    A hash, so independent hosts agree; two namespaces may collide (birthday bound: ~50 %
    at 4,800 namespaces), which the reconciler detects on a host and refuses. A caller that
    allocates keys centrally can pass its own key in ``NamespaceNetwork.key`` instead.
    """
    digest = hashlib.blake2s(namespace.encode(), digest_size=4).digest()
    return 1 + int.from_bytes(digest, "big") % MAX_VNI


def bridge_name(key: int) -> str:
    """``dvb<key hex>``: at most 9 characters."""
    return f"dvb{key:x}"


def vxlan_name(key: int) -> str:
    """``dvx<key hex>``: one VXLAN device per namespace per host (head-end replication)."""
    return f"dvx{key:x}"


def gretap_name(key: int, peer: str) -> str:
    """``dvg<key hex><peer tag>``: one gretap per peer, 15 characters at most.

    The peer tag is the last 6 hex digits of the peer's IPv4/IPv6 address hash.
    """
    packed = ipaddress.ip_address(peer).packed
    tag = hashlib.blake2s(packed, digest_size=3).hexdigest()
    return f"dvg{key & 0xFFFFFF:x}{tag}"[:15]


def alias(namespace: str, role: str, peer: str = "") -> str:
    return f"{ALIAS_PREFIX}{namespace}:{role}" + (f":{peer}" if peer else "")


def parse_alias(text: str | None) -> tuple[str, str, str] | None:
    """(namespace, role, peer) of a dvms alias, or None for a link dvms did not make."""
    if not text or not text.startswith(ALIAS_PREFIX):
        return None
    parts = text[len(ALIAS_PREFIX) :].split(":", 2)
    if len(parts) < 2:
        return None
    return parts[0], parts[1], parts[2] if len(parts) == 3 else ""
