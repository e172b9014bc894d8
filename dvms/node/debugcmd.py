"""Control commands for tests and demos (``dvms debug ...``): they change what a node
reports about itself, never the protocol. ``commands(daemon)`` maps command names to
coroutines taking the request's ``args``, as ``Daemon.commands`` does."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dvms.node.commands import Daemon

Handler = Callable[[dict[str, Any]], Awaitable[Any]]


def commands(daemon: Daemon) -> dict[str, Handler]:
    return {}
