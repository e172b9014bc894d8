"""The audit log: one JSON line per control command that changes something, hash-chained.

Each line is a JSON object, written and ``fsync``ed before the command's answer goes
back::

    {"seq": 7, "time": "2026-12-06T23:40:01.123Z", "uid": 1000, "pid": 4242,
     "cmd": "vm_kill", "args": {"names": "vm[1-2]"}, "result": "ok",
     "prev": "<sha256 of line 6, hex>"}

``prev`` of the first line is 64 zeros; ``result`` is ``ok`` or ``error: TEXT``. A line
removed or edited breaks the chain at the line after it, which ``verify`` names. The
last line has no successor: ``PATH.head`` holds the line count and the hash of the last
line (rewritten, fsynced, after each append), so truncating the log or editing its last
line is found too. An attacker who rewrites the whole chain and the head is not caught
(that needs a copy elsewhere: ship the log off the host).

Which commands are written is one table, ``CHANGES``, with its complement
``READS``: every control command is in exactly one of them (a test checks it), and
``ns`` is written unless its words are one of the reads of ``NS_READS``.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "BEFORE",
    "CHANGES",
    "GENESIS",
    "READS",
    "AuditLog",
    "Problem",
    "changes",
    "summarize",
    "verify",
]

GENESIS = "0" * 64

#: Control commands that change something: written to the audit log.
CHANGES = frozenset(
    {
        "submit",
        "vjob_stop",
        "vjob_remove",
        "vm_kill",
        "ns",  # unless its words are a read (NS_READS)
        "debug_load",
        "debug_capacity",
        "file_add",
        "file_get",  # fetches and stores a file on this node
        "file_delete",
        "leave",  # the node leaves the cluster and stops
        # cluster keys and revocation
        "keys",  # unless its op is "list"
        "revoke",
    }
)

#: Changes that end the node (its answer must leave before the node stops): written
#: before they run, with the result ``requested``.
BEFORE = frozenset({"leave"})

#: Control commands that only read: not written.
READS = frozenset(
    {
        "status",
        "peers",
        "members",
        "lookup",
        "vjob_list",
        "vjob_show",
        "vm_info",
        "host",
        "partitions",
        "rtt",
        "events",
        "debug_loads",
        "debug_domains",
        "debug_ha",
        "file_list",
        "file_status",
        "file_providers",
        "audit_show",
    }
)

#: ``ns`` command lines that only read (after output flags and ``namespace NAME``),
#: by their leading words; abbreviations are resolved against these words.
NS_READS = (
    ("vm", "info"),
    ("host",),
    ("ns", "hosts"),
    ("ns", "queue"),
    ("ns", "schedule", "status"),
    ("ns", "schedule", "dump"),
    ("ns", "schedule", "dry-run"),
)

#: Longest text kept of one argument's value in a line, characters.
MAX_ARG_TEXT = 200


def changes(cmd: str, args: dict[str, Any]) -> bool:
    """Whether control command ``cmd`` with ``args`` is written to the audit log. A
    command in neither table counts as a change (written rather than forgotten)."""
    if cmd == "ns":
        words = args.get("words")
        return not (isinstance(words, list) and _ns_reads(words))
    if cmd == "keys":
        return args.get("op", "list") != "list"
    return cmd not in READS


def _ns_reads(words: list[Any]) -> bool:
    words = [w for w in words if isinstance(w, str)]
    while words and words[0].startswith("."):  # output flags: .columns a,b / .annotate x
        words = words[2:]
    if not words:
        return True
    if "namespace".startswith(words[0]) and len(words[0]) >= 2:
        if len(words) <= 2:  # list namespaces, or make NAME the session's namespace
            return True
        return _ns_reads(words[2:])
    for read in NS_READS:
        if len(words) >= len(read) and all(
            w and full.startswith(w) for w, full in zip(words, read, strict=False)
        ):
            return len(words) == len(read) or read == ("vm", "info")
    return False


def summarize(args: dict[str, Any]) -> dict[str, Any]:
    """``args`` as an audit line keeps them: scalars as they are, anything longer or
    nested as JSON text cut to ``MAX_ARG_TEXT`` characters (a ``vms`` list: its size
    and names)."""
    out: dict[str, Any] = {}
    for key, value in sorted(args.items(), key=lambda kv: str(kv[0])):
        k = str(key)[:64]
        if k == "vms" and isinstance(value, list):
            names = [str(v.get("name")) for v in value if isinstance(v, dict)]
            value = {"count": len(value), "names": names[:20]}
        if value is None or isinstance(value, bool | int | float):
            out[k] = value
            continue
        text = value if isinstance(value, str) else json.dumps(value, default=repr)
        out[k] = text if len(text) <= MAX_ARG_TEXT else text[:MAX_ARG_TEXT] + "..."
    return out


def _hash(line: bytes) -> str:
    return hashlib.sha256(line).hexdigest()


def _utc(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"


class AuditLog:
    """Appends hash-chained lines to ``path`` (created 0600 with its directory at the
    first write). Thread-safe: the daemon writes from a worker thread (``fsync``)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.head_path = path.with_name(path.name + ".head")
        self._lock = threading.Lock()
        self._prev: str | None = None
        self._seq = 0
        self.written = 0

    def _load_tail(self) -> None:
        """Continue the chain of an existing log from its head file (or its last line)."""
        self._prev, self._seq = GENESIS, 0
        try:
            head = json.loads(self.head_path.read_text())
            self._prev, self._seq = str(head["hash"]), int(head["lines"])
            return
        except (OSError, ValueError, KeyError, TypeError):
            pass
        for line in _lines(self.path):
            self._prev, self._seq = _hash(line), self._seq + 1

    def append(self, entry: dict[str, Any], *, now: float | None = None) -> dict[str, Any]:
        """Write one line (``entry`` plus seq, time and prev) and fsync it; returns it."""
        with self._lock:
            if self._prev is None:
                self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                self._load_tail()
            assert self._prev is not None
            line = {
                "seq": self._seq + 1,
                "time": _utc(time.time() if now is None else now),
                **entry,
                "prev": self._prev,
            }
            data = json.dumps(line, sort_keys=False, separators=(",", ":")).encode()
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, data + b"\n")
                os.fsync(fd)
            finally:
                os.close(fd)
            self._prev, self._seq = _hash(data), self._seq + 1
            _write_head(self.head_path, self._seq, self._prev)
            self.written += 1
            return line


def _write_head(path: Path, lines: int, last: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, json.dumps({"lines": lines, "hash": last}).encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _lines(path: Path) -> Iterator[bytes]:
    try:
        with open(path, "rb") as f:
            for raw in f:
                yield raw.rstrip(b"\n")
    except FileNotFoundError:
        return


@dataclass(frozen=True, slots=True)
class Problem:
    """One break of the chain: the line (1-based) where it shows, and what is wrong."""

    line: int
    what: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.what}"


def verify(path: Path) -> tuple[int, list[Problem]]:
    """Check the chain of the audit log at ``path``: (lines read, problems found). A
    removed line shows as a gap in ``seq`` at the line after it; an edited one as a
    ``prev`` that does not match it, named on the edited line itself."""
    problems: list[Problem] = []
    prev, expected, n = GENESIS, 1, 0
    for n, line in enumerate(_lines(path), start=1):
        try:
            entry = json.loads(line)
            seq, link = int(entry["seq"]), str(entry["prev"])
        except (ValueError, KeyError, TypeError):
            problems.append(Problem(n, "not an audit line (edited or corrupt)"))
            prev, expected = _hash(line), expected + 1
            continue
        if seq != expected:
            gone = f"lines {expected}-{seq - 1}" if seq - 1 > expected else f"line {expected}"
            what = f"seq {seq} follows {expected - 1}: {gone} removed"
            if seq < expected:
                what = f"seq {seq} follows {expected - 1}: lines reordered or repeated"
            problems.append(Problem(n, what))
        elif link != prev:
            problems.append(Problem(n - 1, "edited: the next line's hash of it does not match"))
        prev, expected = _hash(line), seq + 1
    head_path = path.with_name(path.name + ".head")
    try:
        head = json.loads(head_path.read_text())
        lines, last = int(head["lines"]), str(head["hash"])
    except FileNotFoundError:
        return n, problems
    except (OSError, ValueError, KeyError, TypeError):
        problems.append(Problem(n, f"{head_path.name} is unreadable"))
        return n, problems
    if expected - 1 < lines:
        problems.append(Problem(n + 1, f"the log ends at seq {expected - 1}, {lines} were written"))
    elif expected - 1 == lines and last != prev:
        problems.append(Problem(n, "edited: does not match the last hash in the head file"))
    return n, problems


def tail(path: Path, count: int) -> list[dict[str, Any]]:
    """The last ``count`` lines of the log, parsed (unparseable lines as ``raw``)."""
    kept: list[bytes] = []
    for line in _lines(path):
        kept.append(line)
        if len(kept) > count:
            del kept[0]
    out = []
    for line in kept:
        try:
            out.append(json.loads(line))
        except ValueError:
            out.append({"raw": line.decode(errors="replace")})
    return out
