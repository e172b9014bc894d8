"""File streams: bulk data between peers on TCP, never on the UDP overlay.

A stream starts with a challenge-response on the cluster key, both ways, so only
cluster members can fetch or serve (the data itself is checked against its root)::

    server -> client   "DVMSF1" + nonce_s (16 bytes)
    client -> server   nonce_c (16) + HMAC-SHA256(key, "c" + nonce_s + nonce_c)
    server -> client   HMAC-SHA256(key, "s" + nonce_c + nonce_s)

then requests, one at a time per stream (a fetcher opens one stream per chunk it keeps
in flight). Each frame is a 4-byte big-endian length and a CBOR map; an answer that
carries data is followed by exactly ``size`` raw bytes::

    {op: "manifest", root}        -> {ok, size} + manifest bytes
    {op: "chunk", root, index}    -> {ok, size} + chunk bytes | {ok: false, missing: true}
                                     | {ok: false, busy: true} (upload slots and queue full)
    {op: "have", root}            -> {ok, complete, bits}
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import os
import struct
from collections.abc import Awaitable, Callable
from typing import Any

import cbor2
import trio

from dvms.wire.keys import Keyring

__all__ = [
    "FileConn",
    "Limiter",
    "StreamError",
    "open_file_conn",
    "serve_file_stream",
]

log = logging.getLogger("dvms.node.files")

MAGIC = b"DVMSF1"
NONCE = 16
MAC = 32
HEADER = struct.Struct(">I")
#: Raw data is sent in pieces of this many bytes (each waits on the upload limiter).
PIECE = 256 * 1024


class StreamError(Exception):
    """A file stream failed: refused, broken, timed out or malformed; says why."""


def _mac(key: bytes, label: bytes, a: bytes, b: bytes) -> bytes:
    return hmac.new(key, label + a + b, hashlib.sha256).digest()


class Limiter:
    """This node's uploads, shared by its streams: at most ``slots`` chunks sent at once
    (``slots`` the semaphore), and a rate (0: unlimited): each piece waits until the link
    would have sent the pieces before it."""

    def __init__(self, rate: float, slots: int, queue: int) -> None:
        self.rate = rate
        self.slots = trio.Semaphore(slots)
        #: requests waiting for a slot, and how many may
        self.waiting = 0
        self.queue = queue
        self.busy = 0
        self._next = -math.inf

    def full(self) -> bool:
        """Every slot busy and the queue full: a new chunk request is turned away."""
        return self.slots.value == 0 and self.waiting >= self.queue

    async def take(self, n: int) -> None:
        if self.rate <= 0:
            return
        now = trio.current_time()
        start = max(now, self._next)
        self._next = start + n / self.rate
        if start > now:
            await trio.sleep_until(start)


async def _recv_exact(stream: trio.abc.ReceiveStream, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        part = await stream.receive_some(min(n - len(buf), 1 << 20))
        if not part:
            raise StreamError("stream closed by the peer")
        buf += part
    return bytes(buf)


async def _send_frame(stream: trio.abc.SendStream, body: dict[str, Any]) -> None:
    data = cbor2.dumps(body)
    await stream.send_all(HEADER.pack(len(data)) + data)


async def _recv_frame(stream: trio.abc.ReceiveStream, limit: int) -> dict[str, Any]:
    (size,) = HEADER.unpack(await _recv_exact(stream, HEADER.size))
    if size > limit:
        raise StreamError(f"frame of {size} bytes exceeds {limit}")
    try:
        body = cbor2.loads(await _recv_exact(stream, size))
    except StreamError:
        raise
    except Exception as exc:
        raise StreamError(f"malformed frame: {exc}") from None
    if not isinstance(body, dict):
        raise StreamError("malformed frame: not a map")
    return body


async def _send_data(stream: trio.abc.SendStream, data: bytes, limiter: Limiter) -> None:
    view = memoryview(data)
    for at in range(0, len(data), PIECE):
        piece = view[at : at + PIECE]
        await limiter.take(len(piece))
        await stream.send_all(piece)


# ------------------------------------------------------------------------- serving


#: What the server needs of the store: blocking calls, run in a worker thread.
class Source:
    def __init__(
        self,
        manifest: Callable[[bytes], bytes | None],
        chunk: Callable[[bytes, int], bytes | None],
        have: Callable[[bytes], tuple[bool, bytes] | None],
    ) -> None:
        self.manifest = manifest
        self.chunk = chunk
        self.have = have


def _ring_keys(key: bytes | Keyring) -> list[bytes]:
    """The keys a stream may be authenticated with: every key of the cluster keyring
    (the one the client signs with is its primary), or one key."""
    return key.ordered_keys() if isinstance(key, Keyring) else [key]


async def serve_file_stream(
    stream: trio.SocketStream,
    key: bytes | Keyring,
    source: Source,
    limiter: Limiter,
    *,
    timeout: float,
    max_frame: int,
    on_served: Callable[[int], None] | None = None,
) -> None:
    """Answer one peer's stream until it closes (bad peers are dropped, not raised)."""
    async with stream:
        try:
            with trio.fail_after(timeout):
                nonce_s = os.urandom(NONCE)
                await stream.send_all(MAGIC + nonce_s)
                hello = await _recv_exact(stream, NONCE + MAC)
                nonce_c, tag = hello[:NONCE], hello[NONCE:]
                used = next(
                    (
                        k
                        for k in _ring_keys(key)
                        if hmac.compare_digest(tag, _mac(k, b"c", nonce_s, nonce_c))
                    ),
                    None,
                )
                if used is None:
                    log.warning("file stream from %s: bad cluster key", _peer(stream))
                    return
                await stream.send_all(_mac(used, b"s", nonce_c, nonce_s))
            while True:
                try:
                    req = await _recv_frame(stream, max_frame)
                except StreamError:
                    return
                with trio.fail_after(timeout):
                    await _answer(stream, req, source, limiter, on_served)
        except (StreamError, trio.BrokenResourceError, trio.TooSlowError, OSError) as exc:
            log.debug("file stream from %s ended: %s", _peer(stream), exc)


def _peer(stream: trio.SocketStream) -> str:
    try:
        return str(stream.socket.getpeername())
    except OSError:
        return "?"


async def _answer(
    stream: trio.SocketStream,
    req: dict[str, Any],
    source: Source,
    limiter: Limiter,
    on_served: Callable[[int], None] | None,
) -> None:
    op, root = req.get("op"), req.get("root")
    if not isinstance(root, bytes) or len(root) != 32:
        await _send_frame(stream, {"ok": False, "error": "bad root"})
        return
    if op == "manifest":
        data = await trio.to_thread.run_sync(source.manifest, root)
    elif op == "chunk":
        index = req.get("index")
        if not isinstance(index, int) or index < 0:
            await _send_frame(stream, {"ok": False, "error": "bad index"})
            return
        data = await trio.to_thread.run_sync(source.chunk, root, index)
    elif op == "have":
        have = await trio.to_thread.run_sync(source.have, root)
        if have is None:
            await _send_frame(stream, {"ok": False, "missing": True})
        else:
            await _send_frame(stream, {"ok": True, "complete": have[0], "bits": have[1]})
        return
    else:
        await _send_frame(stream, {"ok": False, "error": f"unknown op {op!r}"})
        return
    if data is None:
        await _send_frame(stream, {"ok": False, "missing": True})
        return
    if op == "chunk" and limiter.full():
        limiter.busy += 1
        await _send_frame(stream, {"ok": False, "busy": True})
        return
    limiter.waiting += 1
    try:
        await limiter.slots.acquire()
    finally:
        limiter.waiting -= 1
    try:
        await _send_frame(stream, {"ok": True, "size": len(data)})
        await _send_data(stream, data, limiter)
    finally:
        limiter.slots.release()
    if on_served is not None:
        on_served(len(data))


# ------------------------------------------------------------------------- fetching


class FileConn:
    """One authenticated stream to a peer's file server."""

    def __init__(self, stream: trio.SocketStream, *, timeout: float, max_frame: int) -> None:
        self.stream = stream
        self.timeout = timeout
        self.max_frame = max_frame

    async def aclose(self) -> None:
        await self.stream.aclose()

    async def _ask(self, req: dict[str, Any], max_data: int) -> tuple[dict[str, Any], bytes]:
        try:
            with trio.fail_after(self.timeout):
                await _send_frame(self.stream, req)
                head = await _recv_frame(self.stream, self.max_frame)
                size = head.get("size", 0) if head.get("ok") else 0
                if not isinstance(size, int) or not 0 <= size <= max_data:
                    raise StreamError(f"answer of {size!r} bytes, at most {max_data} expected")
                data = await _recv_exact(self.stream, size) if size else b""
        except trio.TooSlowError:
            raise StreamError(f"no answer within {self.timeout:g} s") from None
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise StreamError(f"stream broken: {exc}") from None
        return head, data

    async def manifest(self, root: bytes) -> bytes | None:
        head, data = await self._ask({"op": "manifest", "root": root}, self.max_frame)
        return data if head.get("ok") else None

    async def chunk(self, root: bytes, index: int, max_size: int) -> bytes | str:
        """Chunk ``index``'s bytes (unchecked), else "missing" (the peer does not hold
        it) or "busy" (its uploads are full: ask again later or elsewhere)."""
        head, data = await self._ask({"op": "chunk", "root": root, "index": index}, max_size)
        if head.get("ok"):
            return data
        return "busy" if head.get("busy") else "missing"

    async def have(self, root: bytes) -> tuple[bool, bytes] | None:
        head, _ = await self._ask({"op": "have", "root": root}, 0)
        if not head.get("ok"):
            return None
        bits = head.get("bits")
        return bool(head.get("complete")), bits if isinstance(bits, bytes) else b""


async def open_file_conn(
    host: str, port: int, key: bytes | Keyring, *, timeout: float, max_frame: int
) -> FileConn:
    """Connect and authenticate (``StreamError`` if the peer is down or not ours); with a
    keyring, under its primary key."""
    if isinstance(key, Keyring):
        key = key.primary
    try:
        with trio.fail_after(timeout):
            stream = await trio.open_tcp_stream(host, port)
            try:
                hello = await _recv_exact(stream, len(MAGIC) + NONCE)
                if hello[: len(MAGIC)] != MAGIC:
                    raise StreamError(f"{host}:{port} is not a dvms file stream")
                nonce_s = hello[len(MAGIC) :]
                nonce_c = os.urandom(NONCE)
                await stream.send_all(nonce_c + _mac(key, b"c", nonce_s, nonce_c))
                tag = await _recv_exact(stream, MAC)
                if not hmac.compare_digest(tag, _mac(key, b"s", nonce_c, nonce_s)):
                    raise StreamError(f"{host}:{port} does not hold the cluster key")
            except BaseException:
                await trio.aclose_forcefully(stream)
                raise
    except trio.TooSlowError:
        raise StreamError(f"{host}:{port}: no file stream within {timeout:g} s") from None
    except (OSError, trio.BrokenResourceError) as exc:
        raise StreamError(f"{host}:{port}: cannot open a file stream ({exc})") from None
    return FileConn(stream, timeout=timeout, max_frame=max_frame)


Served = Callable[[trio.SocketStream], Awaitable[None]]
