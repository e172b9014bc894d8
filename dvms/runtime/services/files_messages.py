"""Control-plane messages of file sharing (type codes 88-91; ``dvms.runtime.messages``
registers them with the node's): provider records go to the nodes closest to a root,
and are asked for there. Bulk data never rides these datagrams: it travels on the file
streams (``files_stream.py``).

::

    ProvideFile(record)   -> FileAck(ok)            announce or (ttl 0) withdraw
    FindProviders(root)   -> ProvidersFound(records)
    FetchesQuery()        -> FetchesReply(rows)     VMs waiting here for their files
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from dvms.overlay.messages import Record
from dvms.wire.schema import MaxLen, Range

__all__ = [
    "FILE_MESSAGES",
    "FILE_REQUESTS",
    "FILE_RESPONSES",
    "FetchRow",
    "FetchesQuery",
    "FetchesReply",
    "FileAck",
    "FindProviders",
    "ProvideFile",
    "ProvidersFound",
]

#: Provider records in one reply (each ~200 bytes: well inside one datagram).
MAX_PROVIDERS = 64
#: Waiting VMs in one ``FetchesReply`` (each row ~250 bytes at most).
MAX_FETCH_ROWS = 128
Name = Annotated[str, MaxLen(128)]


@dataclass(frozen=True, slots=True)
class ProvideFile:
    record: Record


@dataclass(frozen=True, slots=True)
class FileAck:
    ok: bool


@dataclass(frozen=True, slots=True)
class FindProviders:
    root: Annotated[bytes, MaxLen(32)]


@dataclass(frozen=True, slots=True)
class ProvidersFound:
    records: Annotated[tuple[Record, ...], MaxLen(MAX_PROVIDERS)]


@dataclass(frozen=True, slots=True)
class FetchesQuery:
    """Which VMs wait on this host for files before they are created (``vjob show``)."""


@dataclass(frozen=True, slots=True)
class FetchRow:
    """VM ``namespace/vm`` waits on ``host`` for its ``field`` (``disk``...) ``ref``
    (``file:`` name or root): ``done`` of ``total`` bytes, transfer ``state``
    (``resolving`` before the name is resolved, then ``file status``'s states)."""

    vm: Name
    namespace: Name
    host: Name
    field: Annotated[str, MaxLen(16)]
    ref: Name
    root: Annotated[bytes, MaxLen(32)]
    done: Annotated[int, Range(0, 2**62)]
    total: Annotated[int, Range(0, 2**62)]
    state: Annotated[str, MaxLen(16)]


@dataclass(frozen=True, slots=True)
class FetchesReply:
    rows: Annotated[tuple[FetchRow, ...], MaxLen(MAX_FETCH_ROWS)]


FILE_MESSAGES: dict[int, type] = {
    88: ProvideFile,
    89: FileAck,
    90: FindProviders,
    91: ProvidersFound,
    92: FetchesQuery,
    93: FetchesReply,
}
FILE_REQUESTS = (ProvideFile, FindProviders, FetchesQuery)
FILE_RESPONSES = (FileAck, ProvidersFound, FetchesReply)
