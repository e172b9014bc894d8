"""The control-socket server: one request per connection on a unix socket (mode 0600, or
0660 with a control group), answered by the daemon's command handler. Who may connect is
checked first, with the peer's credentials (``access.py``); framing and errors are the
client's (``dvms.runtime.client``)."""

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
from dvms.runtime.control.access import Caller, ControlAccess, peer_credentials

__all__ = ["Handler", "serve_control"]

log = logging.getLogger("dvms.control")

#: Bytes of a refused caller's request read (and dropped) before the refusal is sent.
MAX_REFUSED_READ = 65536

#: ``handler(cmd, args, caller)``: the connecting process is ``caller``.
Handler = Callable[[str, dict[str, Any], Caller], Awaitable[Any]]


async def _read_exact(stream: trio.SocketStream, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = await stream.receive_some(n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return bytes(buf)


async def serve_control(
    path: str,
    handler: Handler,
    *,
    access: ControlAccess | None = None,
    task_status: trio.TaskStatus[None] | None = None,
) -> None:
    """Listen on the unix socket ``path`` (replacing a stale one) until cancelled, for
    the callers ``access`` allows (default: root and the daemon's user)."""
    access = access or ControlAccess()
    if os.path.exists(path):
        os.unlink(path)
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        await sock.bind(path)
    finally:
        os.umask(old)
    if access.gid is not None:
        # the group reaches the socket: its directory (0700) becomes searchable by it
        parent = os.path.dirname(os.path.abspath(path))
        os.chown(parent, -1, access.gid)
        os.chmod(parent, os.stat(parent).st_mode & 0o7777 | 0o010)
        os.chown(path, -1, access.gid)
    os.chmod(path, access.mode)
    sock.listen(64)
    listener = trio.SocketListener(sock)

    async def serve_one(stream: trio.SocketStream) -> None:
        async with stream:
            try:
                caller = peer_credentials(stream.socket)
            except OSError:
                return  # gone before we looked
            refusal = access.check(caller)
            if refusal is not None:
                # take (and ignore) the start of the request first: an answer sent before
                # it arrived would reset the caller's send, and it would see no refusal
                with trio.move_on_after(1.0), contextlib.suppress(trio.BrokenResourceError):
                    await stream.receive_some(MAX_REFUSED_READ)
                await _reply(stream, {"ok": False, "error": refusal})
                return
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
                result = await handler(req["cmd"], args, caller)
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
