"""``dvms node run``: one node of a cluster, as a Trio program.

Start-up: create the state directory (0700), load or create the node identity
(``identity.key``, Ed25519, so the node id survives restarts), load the cluster key, bind
the UDP transport, write ``node.json`` (id, address, pid) for tools, then run the overlay
node and the control socket until SIGINT/SIGTERM.
"""

from __future__ import annotations

import json
import logging
import os
import random
import signal
from pathlib import Path
from typing import Any

import trio

from dvms.node.config import NodeConfig, parse_hostport
from dvms.node.control import ControlError, serve_control
from dvms.overlay.config import KademliaConfig
from dvms.overlay.core import OverlayCore
from dvms.overlay.messages import Contact, register_overlay_messages
from dvms.overlay.node import OverlayNode
from dvms.overlay.records import Identity, ValidatorRegistry
from dvms.transport.udp import UdpTransport
from dvms.vivaldi import VivaldiClient, VivaldiConfig
from dvms.wire.envelope import MessageRegistry, WireCodec
from dvms.wire.keys import load_key

__all__ = ["load_identity", "run_node"]

log = logging.getLogger("dvms.node")


def load_identity(state_dir: Path) -> Identity:
    path = state_dir / "identity.key"
    if path.exists():
        return Identity.from_private_bytes(bytes.fromhex(path.read_text().strip()))
    ident = Identity.generate()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(ident.private_bytes().hex() + "\n")
    return ident


def _kademlia_profile(name: str) -> KademliaConfig:
    return {"lan": KademliaConfig.lan, "wan": KademliaConfig.wan, "local": KademliaConfig.local}[
        name
    ]()


class Daemon:
    """Owns the node's services and answers control requests."""

    def __init__(self, cfg: NodeConfig, node: OverlayNode, started: float) -> None:
        self.cfg = cfg
        self.node = node
        self.started = started
        self.commands = {"status": self.status, "peers": self.peers, "lookup": self.lookup}

    async def handle(self, cmd: str, args: dict[str, Any]) -> Any:
        fn = self.commands.get(cmd)
        if fn is None:
            raise ControlError(f"unknown command {cmd!r}")
        return await fn(args)

    async def status(self, args: dict[str, Any]) -> dict[str, Any]:
        core = self.node.core
        coord = core.coordinate()
        return {
            "name": self.cfg.name,
            "node_id": f"{core.node_id:040x}",
            "address": f"{core.contact.host}:{core.contact.port}",
            "joined": core.joined,
            "peers": len(core.table),
            "uptime_s": round(trio.current_time() - self.started, 1),
            "dropped": dict(self.node.codec.drops),
            "accepted": self.node.codec.accepted,
            "stats": dict(core.stats),
            "vivaldi_error": round(coord.error, 4) if coord is not None else None,
        }

    async def peers(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        core = self.node.core
        now = trio.current_time()
        out = []
        for node_id, e in sorted(core.table.index.items()):
            predicted = core.predicted_rtt(node_id)
            out.append(
                {
                    "node_id": f"{node_id:040x}",
                    "address": f"{e.contact.host}:{e.contact.port}",
                    "rtt_ms": round(e.srtt * 1000, 3) if e.srtt is not None else None,
                    "predicted_rtt_ms": round(predicted * 1000, 3) if predicted else None,
                    "failures": e.failures,
                    "last_seen_s": round(now - e.last_seen, 1),
                }
            )
        return out

    async def lookup(self, args: dict[str, Any]) -> list[str]:
        try:
            target = int(str(args.get("target", "")), 16)
        except ValueError:
            raise ControlError("lookup needs 'target', a hex node id") from None
        res = await self.node.lookup(target)
        return [f"{c.node_id:040x}" for c in res.contacts]


async def run_node(cfg: NodeConfig, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    state = Path(cfg.state_dir)
    state.mkdir(parents=True, exist_ok=True, mode=0o700)
    ident = load_identity(state)
    key = load_key(cfg.key_file)
    host, port = parse_hostport(cfg.listen, what="listen")
    seeds = [parse_hostport(s, what="seed") for s in cfg.seeds]
    transport = await UdpTransport.bind(host, port)
    async with transport:
        addr = transport.local_address
        contact = Contact(ident.node_id, addr[0], addr[1])
        rng = random.Random()
        core = OverlayCore(
            contact,
            _kademlia_profile(cfg.profile),
            rng,
            vivaldi=VivaldiClient(VivaldiConfig(), random.Random(rng.getrandbits(64))),
            validators=ValidatorRegistry(),
            now=trio.current_time(),
        )
        codec = WireCodec(key, register_overlay_messages(MessageRegistry()))
        node = OverlayNode(core, transport, codec)
        daemon = Daemon(cfg, node, trio.current_time())
        info = {"node_id": f"{ident.node_id:040x}", "address": f"{addr[0]}:{addr[1]}"}
        (state / "node.json").write_text(json.dumps({**info, "pid": os.getpid()}) + "\n")
        log.info("node %s listening on %s:%d", info["node_id"][:12], *addr)
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run, seeds)
            await nursery.start(serve_control, str(cfg.control_socket), daemon.handle)
            nursery.start_soon(_stop_on_signal, nursery.cancel_scope)
            task_status.started(addr)
    log.info("node stopped")


async def _stop_on_signal(scope: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for sig in signals:
            log.info("received %s, stopping", signal.Signals(sig).name)
            scope.cancel()
            return
