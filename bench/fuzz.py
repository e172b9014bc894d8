"""Fuzz a live daemon: malformed datagrams at its UDP port and malformed requests at its
control socket. It must not crash, must keep answering, must keep its memory bounded,
and must count every datagram it drops by reason.

    python bench/fuzz.py                 # 1,000,000 datagrams, 100,000 control requests
    python bench/fuzz.py --quick         # 20,000 and 2,000 (what the test runs)
    python bench/fuzz.py --datagrams N --control M --seed S [--json]

A local cluster of two daemons (``dvms cluster up``, test hosts) is started in a
temporary directory; node1 is the target, node2 the other peer that must still get
answers. Datagrams, in equal shares (``KINDS``):

    random      random bytes, 0-1,400 long
    truncated   a valid signed message of a random type, cut short
    bitflip     a valid signed message with 1-8 bits flipped
    body        a signed message whose body has one field (maybe nested) of a wrong
                type or beyond its limits, or the wrong number of fields
    field       every schema field of every type in turn, with each wrong value
    envelope    a signed envelope with a wrong version, type, sender, rid, stamp, or
                not an array; or stamped outside the replay window
    length      CBOR claiming lengths far beyond the datagram (byte strings, arrays,
                maps of 2^32-2^63 items), signed
    valid       a valid message of a random type from a made-up node, random content
    replay      an exact copy of a datagram sent before

Datagrams go out in windows of ``--window``: the next leaves once the target has read
every datagram sent (its ``status``: accepted + dropped), so the kernel's socket buffer
does not overflow and every datagram is accounted for: sent = accepted + dropped by
reason (+ the kernel's drops at that socket, read from /proc/net/udp, reported), less
what node2 sent it meanwhile (``others_read``). The
per-source datagram limit is lifted for the run (``[limits] datagram_per_s``): with it,
one source is mostly dropped unread, which would test the limiter, not the decoder.

Control requests (``CONTROL_KINDS``): random bytes, length headers beyond the limit or
beyond the data, non-CBOR, CBOR that is not a map, no or non-string ``cmd``, ``args``
not a map, unknown commands, and every command with arguments of random wrong types
(no ``wait``: a long poll is not a malformed request). Each must be answered with an
error (or a result), never a dropped connection or a hang.

Prints inputs/s of each part, the drop table, the control outcomes, and the target's
memory (RSS) at the start, its peak and the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import shutil
import socket
import struct
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cbor2
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._hostile import Hostile, Raw, _hints
from dvms.runtime.client import FRAME_HEADER, MAX_CONTROL_MESSAGE, ControlError, call
from dvms.runtime.localcluster import cluster_down, cluster_up
from dvms.wire.envelope import DROP_REASONS, ID_BYTES, WIRE_VERSION
from dvms.wire.keys import load_key

KINDS = (
    "random",
    "truncated",
    "bitflip",
    "body",
    "field",
    "envelope",
    "length",
    "valid",
    "replay",
)
CONTROL_KINDS = (
    "random",
    "huge_length",
    "short_frame",
    "not_cbor",
    "not_a_map",
    "no_cmd",
    "cmd_not_str",
    "args_not_map",
    "unknown_cmd",
    "wrong_args",
)
#: Commands of the daemon (``dvms.runtime.control``) the fuzzer calls with wrong args.
COMMANDS = (
    "status", "peers", "members", "lookup", "submit", "vjob_list", "vjob_show",
    "vjob_stop", "vjob_remove", "vm_info", "vm_kill", "host", "partitions", "rtt", "ns",
    "debug_load", "debug_loads", "debug_capacity", "events", "file_list", "file_status",
    "file_providers", "file_delete", "file_add", "audit_show",
)  # fmt: skip
ARG_NAMES = ("id", "names", "namespace", "host", "target", "vms", "constraints", "name",
             "words", "cpus", "all", "count", "path", "ref", "after", "limit", "since")  # fmt: skip
#: Drops of a datagram before the codec accepts it; the others (``rate_lookup``,
#: ``busy``...) are of accepted datagrams, whose requests were then not served.
BEFORE = frozenset(DROP_REASONS) | {"rate_datagram", "new_peer_datagram"}
#: Control outcomes that are the daemon's failures, not refusals of bad input.
BAD_OUTCOMES = ("error: internal error", "no answer", "timeout")
#: Per-source datagram limit of the target during the run (lifted: see the docstring).
TARGET_TOML = "[limits]\ndatagram_per_s = 1e9\ndatagram_burst = 1000000000\n"


class Target:
    def __init__(self, row: dict[str, Any], other: dict[str, Any]) -> None:
        host, port = row["address"].rsplit(":", 1)
        self.addr = (host, int(port))
        self.sock = row["socket"]
        self.other = other["socket"]
        self.proc = psutil.Process(row["pid"])
        self.peak_rss = self.rss()

    def rss(self) -> int:
        return int(self.proc.memory_info().rss)

    def status(self) -> dict[str, Any]:
        st: dict[str, Any] = call(self.sock, "status", timeout=60)
        self.peak_rss = max(self.peak_rss, self.rss())
        return st

    def processed(self) -> int:
        """Datagrams read: accepted by the codec, or dropped before (``BEFORE``)."""
        st = self.status()
        return int(st["accepted"]) + sum(n for r, n in st["dropped"].items() if r in BEFORE)

    def kernel_drops(self) -> int:
        """Datagrams the kernel dropped at the target's socket (its buffer full)."""
        port = f":{self.addr[1]:04X}"
        with contextlib.suppress(OSError):
            for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
                cols = line.split()
                if cols[1].endswith(port):
                    return int(cols[-1])
        return 0

    def alive(self) -> None:
        """The target answers its control socket, and answers node2 over the network."""
        self.status()
        res = call(self.other, "rtt", {"host": "node1"}, timeout=60)
        if res.get("measured_ms") is None:
            raise RuntimeError("node1 did not answer node2")


class DatagramFuzzer:
    def __init__(self, h: Hostile, rng: random.Random) -> None:
        self.h = h
        self.rng = rng
        self.sent: list[bytes] = []
        self.fields = [
            (code, i) for code, cls in sorted(h.codes.items()) for i in range(_nfields(cls))
        ]
        self.field_turn = 0
        self.makers: dict[str, Callable[[float], bytes]] = {
            k: getattr(self, f"_{k}") for k in KINDS
        }

    def make(self, kind: str, now: float) -> bytes:
        data = self.makers[kind](now)
        if len(self.sent) < 4096:
            self.sent.append(data)
        else:
            self.sent[self.rng.randrange(4096)] = data
        return data[:65507]

    def _valid_msg(self, now: float) -> bytes:
        code = self.rng.choice(list(self.h.codes))
        return self.h.sign(Raw(code, self.h.body(self.h.codes[code])), now=now)

    def _random(self, now: float) -> bytes:
        return self.rng.randbytes(self.rng.randint(0, 1400))

    def _truncated(self, now: float) -> bytes:
        data = self._valid_msg(now)
        return data[: self.rng.randrange(len(data))]

    def _bitflip(self, now: float) -> bytes:
        data = bytearray(self._valid_msg(now))
        for _ in range(self.rng.randint(1, 8)):
            i = self.rng.randrange(len(data) * 8)
            data[i // 8] ^= 1 << (i % 8)
        return bytes(data)

    def _body(self, now: float) -> bytes:
        code = self.rng.choice(list(self.h.codes))
        return self.h.sign(Raw(code, self.h.mutated_body(self.h.codes[code])), now=now)

    def _field(self, now: float) -> bytes:
        code, i = self.fields[self.field_turn % len(self.fields)]
        self.field_turn += 1
        cls = self.h.codes[code]
        body = self.h.body(cls)
        body[i] = self.h.wrong(_field_type(cls, i))
        return self.h.sign(Raw(code, body), now=now)

    def _envelope(self, now: float) -> bytes:
        f = self.h.valid_fields(now)
        rng = self.rng
        which = rng.randrange(8)
        if which == 0:
            f[0] = rng.choice([0, WIRE_VERSION + 1, "1", None, -1])
        elif which == 1:
            f[1] = rng.choice([0, 9999, -5, "x", 2**70, None])
        elif which == 2:
            f[2] = rng.choice([b"", rng.randbytes(ID_BYTES + 1), 5, "x" * ID_BYTES])
        elif which == 3:
            f[3] = rng.choice([-1, 2**64, 1.5, b"x", None])
        elif which == 4:
            f[4] = rng.choice([now - 1e6, now + 1e6, 1, "now", float("nan"), None])
        elif which == 5:
            f = f[: rng.randrange(6)]
        elif which == 6:
            f = [*f, 0]
        else:
            return self.h.envelope({"v": f})  # type: ignore[arg-type]
        return self.h.envelope(f)

    def _length(self, now: float) -> bytes:
        rng = self.rng
        head = rng.choice([0x5B, 0x7B, 0x9B, 0xBB])  # bytes/text/array/map, 8-byte length
        claim = struct.pack(">Q", rng.choice([2**32, 2**40, 2**62, 2**63 - 1]))
        inner = bytes([head]) + claim + rng.randbytes(rng.randint(0, 64))
        f = self.h.valid_fields(now)[1:]  # the version is the header's byte
        payload = bytes([0x85]) + b"".join(cbor2.dumps(x) for x in f[:-1]) + inner
        if rng.random() < 0.5:
            payload = inner
        return self.h.signed(bytes([WIRE_VERSION]), payload)

    def _valid(self, now: float) -> bytes:
        return self._valid_msg(now)

    def _replay(self, now: float) -> bytes:
        if not self.sent:
            return self._valid_msg(now)
        return self.rng.choice(self.sent)


def _nfields(cls: type) -> int:
    import dataclasses

    return len(dataclasses.fields(cls))


def _field_type(cls: type, i: int) -> Any:
    return _hints(cls)[i][1]


def fuzz_datagrams(
    target: Target, key: bytes, n: int, window: int, seed: int, kinds_run: tuple[str, ...] = KINDS
) -> dict[str, Any]:
    rng = random.Random(seed)
    fz = DatagramFuzzer(Hostile(key, rng=random.Random(seed + 1)), rng)
    out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    read = target.processed()
    start = target.status()
    kernel0 = kernel_start = target.kernel_drops()
    kinds: Counter[str] = Counter()
    t0 = time.perf_counter()
    sent = 0
    while sent < n:
        now = time.time()
        batch = min(window, n - sent)
        for _ in range(batch):
            kind = kinds_run[sent % len(kinds_run)]
            kinds[kind] += 1
            out.sendto(fz.make(kind, now), target.addr)
            sent += 1
        # from what was read before this window (node2's datagrams meanwhile let a
        # window go a few early, never their sum over the run); loopback delivers
        # within sendto, so the kernel's drops of this window are known now
        kernel = target.kernel_drops()
        read = _drain(target, read + batch - (kernel - kernel0))
        kernel0 = kernel
    took = time.perf_counter() - t0
    end = target.status()
    drops = Counter(end["dropped"]) - Counter(start["dropped"])
    accepted = int(end["accepted"]) - int(start["accepted"])
    kernel = target.kernel_drops() - kernel_start
    before = sum(n for r, n in drops.items() if r in BEFORE)
    return {
        "datagrams": sent,
        "seconds": round(took, 1),
        "per_s": round(sent / took),
        "kinds": dict(kinds),
        "accepted": accepted,
        "dropped": dict(sorted(drops.items())),
        "kernel_dropped": kernel,
        # read and counted, less what was sent: node2's own datagrams meanwhile (< 0:
        # some datagram was neither accepted nor counted as a drop)
        "others_read": accepted + before + kernel - sent,
    }


def _drain(target: Target, until: int, timeout: float = 120.0) -> int:
    """Wait until the target has read ``until`` datagrams; returns what it has read."""
    deadline = time.monotonic() + timeout
    while (read := target.processed()) < until:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the target stopped reading (at {read})")
        time.sleep(0.002)
    return read


def _control_request(kind: str, rng: random.Random) -> bytes:
    def frame(obj: Any) -> bytes:
        data = cbor2.dumps(obj)
        return FRAME_HEADER.pack(len(data)) + data

    if kind == "random":
        return rng.randbytes(rng.randint(0, 512))
    if kind == "huge_length":
        return FRAME_HEADER.pack(rng.randint(MAX_CONTROL_MESSAGE + 1, 2**32 - 1)) + b"x"
    if kind == "short_frame":
        return FRAME_HEADER.pack(rng.randint(10, 10_000)) + rng.randbytes(rng.randint(0, 9))
    if kind == "not_cbor":
        junk = b"\xff\xfe" + rng.randbytes(rng.randint(0, 64))
        return FRAME_HEADER.pack(len(junk)) + junk
    if kind == "not_a_map":
        return frame(rng.choice([[1, 2], "status", 5, None, b"x", 1.5]))
    if kind == "no_cmd":
        return frame({"args": {}})
    if kind == "cmd_not_str":
        return frame({"cmd": rng.choice([1, None, [], b"status", {"a": 1}])})
    if kind == "args_not_map":
        return frame({"cmd": rng.choice(COMMANDS), "args": rng.choice([[], "x", 5, b"y"])})
    if kind == "unknown_cmd":
        return frame({"cmd": rng.choice(["", "x" * 300, "status ", "STATUS", "\x00", "🙂"])})
    args = {
        rng.choice(ARG_NAMES): rng.choice(
            [
                None,
                -1,
                2**70,
                1.5,
                float("nan"),
                "",
                "x" * 300,
                [],
                [1, "a"],
                {"k": []},
                b"\x00",
                True,
                "vm[1-99999999]",
                "../../etc/passwd",
            ]
        )
        for _ in range(rng.randint(0, 3))
    }
    return frame({"cmd": rng.choice(COMMANDS), "args": args})


def fuzz_control(target: Target, n: int, seed: int, workers: int = 4) -> dict[str, Any]:
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()
    counter = iter(range(n))

    def work(wseed: int) -> None:
        rng = random.Random(wseed)
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            kind = CONTROL_KINDS[i % len(CONTROL_KINDS)]
            got = _one_request(target.sock, _control_request(kind, rng))
            with lock:
                outcomes[got] += 1

    t0 = time.perf_counter()
    threads = [threading.Thread(target=work, args=(seed * 100 + w,)) for w in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.perf_counter() - t0
    target.status()
    return {
        "requests": n,
        "seconds": round(took, 1),
        "per_s": round(n / took),
        "outcomes": dict(sorted(outcomes.items(), key=lambda kv: -kv[1])),
    }


def _one_request(path: str, data: bytes) -> str:
    """Send ``data``; the kind of answer: ``error: <first words>``, ``ok``,
    ``no answer`` (the daemon closed without one) or ``timeout``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(30)
        try:
            s.connect(path)
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            head = _recv(s, 4)
            if len(head) < 4:
                return "no answer"
            (size,) = FRAME_HEADER.unpack(head)
            resp = cbor2.loads(_recv(s, size))
        except TimeoutError:
            return "timeout"
        except (ConnectionResetError, BrokenPipeError):
            return "no answer"
    if resp.get("ok"):
        return "ok"
    text = str(resp.get("error", "")).split(":")[0].split("'")[0]
    return "error: " + " ".join(text.split()[:3])


def _recv(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            break
        buf += chunk
    return buf


def run(
    datagrams: int, control: int, seed: int, window: int, kinds: tuple[str, ...] = KINDS
) -> dict[str, Any]:
    d = Path(tempfile.mkdtemp(prefix="dvms-fuzz-"))
    (d / "node.toml").write_text(TARGET_TOML)
    try:
        rows = cluster_up(d / "c", 2, metrics=False, config_file=str(d / "node.toml"))
        key = load_key(d / "c" / "cluster.key")
        target = Target(rows[0], rows[1])
        rss0 = target.rss()
        udp = fuzz_datagrams(target, key, datagrams, window, seed, kinds)
        target.alive()
        ctl = fuzz_control(target, control, seed)
        target.alive()
        rss1 = target.rss()
        crashed = target.proc.status() == psutil.STATUS_ZOMBIE or not target.proc.is_running()
        return {
            "seed": seed,
            "udp": udp,
            "control": ctl,
            "rss_mib": {
                "start": round(rss0 / 2**20, 1),
                "peak": round(target.peak_rss / 2**20, 1),
                "end": round(rss1 / 2**20, 1),
            },
            "bounds": target.status()["bounds"],
            "crashes": int(crashed),
            "still_answers": True,
        }
    except (ControlError, RuntimeError) as exc:
        tail = _log_tail(d / "c" / "node1" / "node.log")
        raise RuntimeError(f"{exc}; node1's log ends:\n{tail}") from None
    finally:
        with contextlib.suppress(Exception):
            cluster_down(d / "c")
        shutil.rmtree(d, ignore_errors=True)


def _log_tail(path: Path, lines: int = 80) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datagrams", type=int, default=1_000_000)
    p.add_argument("--control", type=int, default=100_000)
    p.add_argument("--quick", action="store_true", help="20,000 datagrams, 2,000 requests")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--window", type=int, default=32, help="datagrams in flight at most")
    p.add_argument("--kinds", default=",".join(KINDS), help="datagram kinds sent (all)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    kinds = tuple(args.kinds.split(","))
    if not kinds or not set(kinds) <= set(KINDS):
        p.error(f"--kinds: choose from {', '.join(KINDS)}")
    if args.quick:
        args.datagrams, args.control = 20_000, 2_000
    try:
        res = run(args.datagrams, args.control, args.seed, args.window, kinds)
    except (ControlError, RuntimeError) as exc:
        print(f"fuzz: the target failed: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        _print(res)
    bad = [k for k in res["control"]["outcomes"] if k.startswith(BAD_OUTCOMES)]
    ok = not res["crashes"] and res["udp"]["others_read"] >= 0 and not bad
    return 0 if ok else 1


def _print(res: dict[str, Any]) -> None:
    u, c, m = res["udp"], res["control"], res["rss_mib"]
    print(f"datagrams: {u['datagrams']:,} in {u['seconds']} s = {u['per_s']:,}/s; "
          f"accepted {u['accepted']:,}, kernel dropped {u['kernel_dropped']:,}, "
          f"other peers' read meanwhile {u['others_read']:,}")  # fmt: skip
    print(f"{'drop reason':<20} {'count':>10}")
    for reason, count in sorted(u["dropped"].items(), key=lambda kv: -kv[1]):
        print(f"{reason:<20} {count:>10,}")
    print(f"control requests: {c['requests']:,} in {c['seconds']} s = {c['per_s']:,}/s")
    print(f"{'control outcome':<40} {'count':>10}")
    for what, count in c["outcomes"].items():
        print(f"{what:<40} {count:>10,}")
    print(f"target RSS MiB: start {m['start']}, peak {m['peak']}, end {m['end']}; "
          f"crashes {res['crashes']}; still answers: {res['still_answers']}")  # fmt: skip
    print(f"bounded tables at the end: {res['bounds']}")


if __name__ == "__main__":
    sys.exit(main())
