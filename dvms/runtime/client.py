"""The control-socket client: what the CLI (and any local tool) uses to talk to a node.

The control socket carries CBOR request/response over a unix stream socket (mode 0600,
or 0660 with a control group; the server is ``dvms.runtime.control.server``).

Framing: each message is a 4-byte big-endian length followed by that many bytes of CBOR.
A request is ``{"cmd": str, "args": map}``; a response is ``{"ok": true, "result": ...}``
or ``{"ok": false, "error": str}``. One request per connection keeps the client trivial.
Only root, the daemon's user and the members of its control group can talk to a node
(``dvms.runtime.control.access``); anyone else gets a one-line refusal.
"""

from __future__ import annotations

import contextlib
import socket
import struct
from dataclasses import asdict, replace
from typing import TYPE_CHECKING, Any

import cbor2

if TYPE_CHECKING:
    from dvms.placement.spec import VjobSpec

__all__ = [
    "FRAME_HEADER",
    "MAX_CONTROL_MESSAGE",
    "ControlError",
    "call",
    "submit_body",
]

#: Largest control message accepted either way, bytes.
MAX_CONTROL_MESSAGE = 16 * 1024 * 1024
#: Each message is this 4-byte big-endian length, then that many bytes of CBOR.
FRAME_HEADER = struct.Struct(">I")


class ControlError(Exception):
    """The node refused a request, or could not be reached; the message says why."""


def call(path: str, cmd: str, args: dict[str, Any] | None = None, *, timeout: float = 60.0) -> Any:
    """Send one request to the node at ``path`` and return its result (blocking)."""
    data = cbor2.dumps({"cmd": cmd, "args": args or {}})
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(path)
            # the node may answer early (a refusal) and cut the send short: read it
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                s.sendall(FRAME_HEADER.pack(len(data)) + data)
            header = _recv_exact(s, 4)
            (size,) = FRAME_HEADER.unpack(header)
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


def submit_body(vjob: VjobSpec, *, wait: bool) -> dict[str, Any]:
    """The ``submit`` request for ``vjob`` (``dvms.runtime.control.commands
    .launch_from_map`` reads it): its VMs and constraints in their wire form, the
    constraints' VM names qualified by the vjob's namespace."""
    from dvms.partition.messages import LaunchVm, WireConstraint

    ns = vjob.namespace
    constraints = [
        c if not ns else replace(c, vms=tuple(n if "/" in n else f"{ns}/{n}" for n in c.vms))
        for c in vjob.constraints
    ]
    return {
        "vms": [asdict(LaunchVm.from_spec(v)) for v in vjob.vms],
        "constraints": [asdict(WireConstraint.from_spec(c)) for c in constraints],
        "name": vjob.name,
        "namespace": ns,
        "wait": wait,
    }
