"""The control-socket server: one request per connection on a unix socket (mode 0600),
answered by the daemon's command handler. Framing and errors are the client's
(``dvms.runtime.client``)."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import cbor2
import trio

from dvms.runtime.client import FRAME_HEADER, MAX_CONTROL_MESSAGE, ControlError

__all__ = ["Handler", "serve_control"]

log = logging.getLogger("dvms.control")

Handler = Callable[[str, dict[str, Any]], Awaitable[Any]]


async def _read_exact(stream: trio.SocketStream, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = await stream.receive_some(n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return bytes(buf)


async def serve_control(
    path: str, handler: Handler, *, task_status: trio.TaskStatus[None] | None = None
) -> None:
    """Listen on the unix socket ``path`` (replacing a stale one) until cancelled."""
    if os.path.exists(path):
        os.unlink(path)
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        await sock.bind(path)
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    sock.listen(64)
    listener = trio.SocketListener(sock)

    async def serve_one(stream: trio.SocketStream) -> None:
        async with stream:
            try:
                (size,) = FRAME_HEADER.unpack(await _read_exact(stream, 4))
                if size > MAX_CONTROL_MESSAGE:
                    raise ValueError("request too large")
                req = cbor2.loads(await _read_exact(stream, size))
                if not isinstance(req, dict) or not isinstance(req.get("cmd"), str):
                    raise ValueError("request must be a map with a string 'cmd'")
                args = req.get("args") or {}
                if not isinstance(args, dict):
                    raise ValueError("'args' must be a map")
            except (EOFError, ValueError, cbor2.CBORDecodeError) as exc:
                await _reply(stream, {"ok": False, "error": f"bad request: {exc}"})
                return
            try:
                result = await handler(req["cmd"], args)
                resp = {"ok": True, "result": result}
            except ControlError as exc:
                resp = {"ok": False, "error": str(exc)}
            except Exception as exc:  # a bug on our side: report it, keep serving
                log.exception("control command %s failed", req["cmd"])
                resp = {"ok": False, "error": f"internal error: {exc!r}"}
            await _reply(stream, resp)

    async with trio.open_nursery() as nursery:
        if task_status is not None:  # started with nursery.start
            task_status.started()
        await trio.serve_listeners(serve_one, [listener], handler_nursery=nursery)


async def _reply(stream: trio.SocketStream, resp: dict[str, Any]) -> None:
    data = cbor2.dumps(resp)
    with contextlib.suppress(trio.BrokenResourceError):
        await stream.send_all(FRAME_HEADER.pack(len(data)) + data)
