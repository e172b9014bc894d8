"""Effect values returned by the sans-I/O cores. The Trio node runner and the simulator
carry them out; the cores never do I/O themselves."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Address", "Emit", "Send"]

Address = tuple[str, int]


@dataclass(frozen=True, slots=True)
class Send:
    """Send ``msg`` to ``dst`` in an envelope with request id ``rid`` (a fresh id for a
    request, the request's id for a response)."""

    dst: Address
    rid: int
    msg: Any


@dataclass(frozen=True, slots=True)
class Emit:
    """Tell the application layer something happened (lookup finished, joined ...)."""

    event: Any
