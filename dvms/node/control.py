"""The control socket: CBOR request/response over a unix stream socket (mode 0600).

Framing: each message is a 4-byte big-endian length followed by that many bytes of CBOR.
A request is ``{"cmd": str, "args": map}``; a response is ``{"ok": true, "result": ...}``
or ``{"ok": false, "error": str}``. One request per connection keeps the client trivial.
Only local users who can open the socket file (its owner) can talk to a node.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import struct
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import cbor2

if TYPE_CHECKING:
    import trio

__all__ = ["MAX_CONTROL_MESSAGE", "ControlError", "call", "serve_control"]

log = logging.getLogger("dvms.control")

#: Largest control message accepted either way, bytes.
MAX_CONTROL_MESSAGE = 16 * 1024 * 1024
_LEN = struct.Struct(">I")

Handler = Callable[[str, dict[str, Any]], Awaitable[Any]]


class ControlError(Exception):
    """The node refused a request, or could not be reached; the message says why."""


async def _read_exact(stream: trio.SocketStream, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = await stream.receive_some(n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return bytes(buf)


async def serve_control(path: str, handler: Handler, *, task_status: Any = None):
    """Listen on the unix socket ``path`` (replacing a stale one) until cancelled."""
    import trio  # here: the CLI imports this module for ``call`` and needs no trio

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
                (size,) = _LEN.unpack(await _read_exact(stream, 4))
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
    import trio

    data = cbor2.dumps(resp)
    with contextlib.suppress(trio.BrokenResourceError):
        await stream.send_all(_LEN.pack(len(data)) + data)


def call(path: str, cmd: str, args: dict[str, Any] | None = None, *, timeout: float = 60.0) -> Any:
    """Send one request to the node at ``path`` and return its result (blocking)."""
    data = cbor2.dumps({"cmd": cmd, "args": args or {}})
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(path)
            s.sendall(_LEN.pack(len(data)) + data)
            header = _recv_exact(s, 4)
            (size,) = _LEN.unpack(header)
            if size > MAX_CONTROL_MESSAGE:
                raise ControlError("response too large")
            resp = cbor2.loads(_recv_exact(s, size))
    except FileNotFoundError:
        raise ControlError(f"no node control socket at {path}") from None
    except ConnectionRefusedError:
        raise ControlError(f"node at {path} is not running (connection refused)") from None
    except TimeoutError:
        raise ControlError(f"node at {path} did not answer within {timeout:g} s") from None
    except OSError as exc:
        raise ControlError(f"cannot talk to node at {path}: {exc.strerror or exc}") from None
    if not isinstance(resp, dict) or "ok" not in resp:
        raise ControlError("malformed response from node")
    if not resp["ok"]:
        raise ControlError(str(resp.get("error")))
    return resp.get("result")


def _recv_exact(s: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ControlError("node closed the connection early")
        buf += chunk
    return bytes(buf)
