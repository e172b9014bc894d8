"""Control-plane messages of file sharing (type codes 88-91; ``dvms.runtime.messages``
registers them with the node's): provider records go to the nodes closest to a root,
and are asked for there. Bulk data never rides these datagrams: it travels on the file
streams (``files_stream.py``).

::

    ProvideFile(record)   -> FileAck(ok)            announce or (ttl 0) withdraw
    FindProviders(root)   -> ProvidersFound(records)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from dvms.overlay.messages import Record
from dvms.wire.schema import MaxLen

__all__ = [
    "FILE_MESSAGES",
    "FILE_REQUESTS",
    "FILE_RESPONSES",
    "FileAck",
    "FindProviders",
    "ProvideFile",
    "ProvidersFound",
]

#: Provider records in one reply (each ~200 bytes: well inside one datagram).
MAX_PROVIDERS = 64


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


FILE_MESSAGES: dict[int, type] = {
    88: ProvideFile,
    89: FileAck,
    90: FindProviders,
    91: ProvidersFound,
}
FILE_REQUESTS = (ProvideFile, FindProviders)
FILE_RESPONSES = (FileAck, ProvidersFound)
