"""A minimal HTTP/1.1 server on Trio for a node's ``/metrics``, ``/healthz`` and
``/readyz``: GET (and HEAD) of a fixed set of paths, one request per connection
(``Connection: close``), each answered by a synchronous page function that must be quick
(it runs on the event loop: the pages read in-memory state only).

Anything else gets a short error status: 404 for an unknown path, 405 for another
method, 400 for a request line that does not parse or headers over ``MAX_REQUEST``
bytes, and a client that sends nothing for ``timeout_s`` is dropped.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence

import trio

__all__ = ["MAX_REQUEST", "Page", "open_http_listeners", "serve_http"]

log = logging.getLogger("dvms.runtime.services.http")

#: Largest request head read, bytes.
MAX_REQUEST = 8192

#: A page: () -> (status code, content type, body).
Page = Callable[[], tuple[int, str, bytes]]

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            503: "Service Unavailable"}  # fmt: skip


async def open_http_listeners(host: str, port: int) -> tuple[list[trio.SocketListener], int]:
    """Bind ``host:port`` (port 0: any free one); returns the listeners and the port."""
    listeners = await trio.open_tcp_listeners(port, host=host)
    bound = listeners[0].socket.getsockname()[1]
    return listeners, int(bound)


async def serve_http(
    listeners: Sequence[trio.SocketListener],
    pages: Mapping[str, Page],
    *,
    timeout_s: float,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    async def serve_one(stream: trio.SocketStream) -> None:
        async with stream:
            with trio.move_on_after(timeout_s):
                head = await _read_head(stream)
                status, ctype, body, send_body = _answer(head, pages)
                out = (
                    f"HTTP/1.1 {status} {_REASONS.get(status, '')}\r\n"
                    f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                    "Connection: close\r\n\r\n"
                ).encode()
                with contextlib.suppress(trio.BrokenResourceError):
                    await stream.send_all(out + body if send_body else out)

    async with trio.open_nursery() as nursery:
        task_status.started()
        await trio.serve_listeners(serve_one, list(listeners), handler_nursery=nursery)


async def _read_head(stream: trio.SocketStream) -> bytes | None:
    buf = bytearray()
    while b"\r\n\r\n" not in buf and b"\n\n" not in buf:
        try:
            chunk = await stream.receive_some(4096)
        except trio.BrokenResourceError:
            return None
        if not chunk:
            break
        buf += chunk
        if len(buf) > MAX_REQUEST:
            return None
    return bytes(buf)


def _answer(head: bytes | None, pages: Mapping[str, Page]) -> tuple[int, str, bytes, bool]:
    """(status, content type, body, whether to send the body) for a request head."""
    text = "text/plain; charset=utf-8"
    if not head:
        return 400, text, b"bad request\n", True
    parts = head.split(b"\r\n", 1)[0].split(b"\n", 1)[0].split()
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
        return 400, text, b"bad request\n", True
    method, target = parts[0], parts[1].decode("latin-1")
    if method not in (b"GET", b"HEAD"):
        return 405, text, b"method not allowed\n", True
    page = pages.get(target.split("?", 1)[0])
    if page is None:
        return 404, text, b"not found\n", method == b"GET"
    try:
        status, ctype, body = page()
    except Exception:  # a page bug: answer 500-like, keep serving
        log.exception("page %s failed", target)
        return 503, text, b"page failed\n", True
    return status, ctype, body, method == b"GET"
