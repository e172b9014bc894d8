"""Who may command a node: the control socket's access check.

The socket file is mode 0660, owned by the daemon's user and by the group named in
``ControlConfig.group`` (0600 without one). The file mode is the first gate; the second
is the kernel's word on who connected (``SO_PEERCRED``: pid, uid and gid of the peer
process at ``connect``), checked on every connection before a byte is read:

    root (uid 0)                      accepted
    the daemon's own user             accepted
    a member of ``group``             accepted (primary group, or a supplementary group
                                      of the connecting process, or listed in the group)
    anyone else                       one-line refusal, counted, logged

Refusals are logged at WARNING for the first few per uid, then counted only: a local
user hammering the socket cannot flood the log.
"""

from __future__ import annotations

import grp
import logging
import os
import pwd
import socket
import struct
from collections import Counter
from dataclasses import dataclass
from typing import Any

__all__ = ["Caller", "ControlAccess", "peer_credentials"]

log = logging.getLogger("dvms.control")

_UCRED = struct.Struct("3i")
#: Refusals of one uid logged before the rest are only counted.
_LOGGED_PER_UID = 5


@dataclass(frozen=True, slots=True)
class Caller:
    """The process at the other end of a control connection (``SO_PEERCRED``)."""

    pid: int
    uid: int
    gid: int


def peer_credentials(sock: Any) -> Caller:
    """The connecting process of unix socket ``sock`` (a socket or trio's)."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    pid, uid, gid = _UCRED.unpack(raw)
    return Caller(pid, uid, gid)


def _supplementary_groups(pid: int) -> set[int]:
    """The supplementary groups of process ``pid`` (Linux ``/proc``; empty elsewhere or
    if it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Groups:"):
                    return {int(g) for g in line.split()[1:]}
    except (OSError, ValueError):
        pass
    return set()


class ControlAccess:
    """The access rule of one control socket. ``group`` "" accepts root and the daemon's
    own user only; an unknown group is refused at start (``ValueError``)."""

    def __init__(self, group: str = "") -> None:
        self.group = group
        self.gid: int | None = None
        self._members: frozenset[str] = frozenset()
        if group:
            try:
                entry = grp.getgrnam(group)
            except KeyError:
                raise ValueError(f"control group {group!r} does not exist") from None
            self.gid = entry.gr_gid
            self._members = frozenset(entry.gr_mem)
        self.owner = os.geteuid()
        self.accepted = 0
        #: refused connections by uid
        self.refused: Counter[int] = Counter()

    @property
    def mode(self) -> int:
        """The socket file's mode: group read/write only with a group."""
        return 0o660 if self.gid is not None else 0o600

    def allows(self, caller: Caller) -> bool:
        if caller.uid in (0, self.owner):
            return True
        gid = self.gid
        if gid is None:
            return False
        if caller.gid == gid or gid in _supplementary_groups(caller.pid):
            return True
        try:
            return pwd.getpwuid(caller.uid).pw_name in self._members
        except KeyError:
            return False

    def check(self, caller: Caller) -> str | None:
        """None if ``caller`` may command this node, else the refusal it is sent (and
        the refusal is counted and logged)."""
        if self.allows(caller):
            self.accepted += 1
            return None
        self.refused[caller.uid] += 1
        who = "root or the daemon's user" + (f" or group {self.group}" if self.group else "")
        if self.refused[caller.uid] <= _LOGGED_PER_UID:
            log.warning(
                "control socket: refused uid %d (pid %d): not %s", caller.uid, caller.pid, who
            )
        return f"permission denied: uid {caller.uid} may not command this node (only {who})"

    def counts(self) -> dict[str, int]:
        return {"accepted": self.accepted, "refused": sum(self.refused.values())}
