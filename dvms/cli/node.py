"""``dvms node run``, ``dvms node leave`` and the node inspection commands (``status``,
``peers``)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from typing import Any

from dvms.cli.main import UserError
from dvms.runtime.choices import PROFILES, RECRUITMENT
from dvms.runtime.client import ControlError, call
from dvms.wire.keys import KeyFileError


def register(sub: argparse._SubParsersAction) -> None:
    node = sub.add_parser("node", help="run a node daemon", description="Node daemon commands.")
    nsub = node.add_subparsers(dest="node_command", metavar="COMMAND", required=True)
    run = nsub.add_parser(
        "run",
        help="run a node in the foreground",
        description="Run one dvms node until SIGTERM/SIGINT. Settings come from the "
        "profile, then --config (TOML with [host], [overlay], [vivaldi], [partition] and "
        "[placement] tables; docs/daemon.md lists every key), then the flags.",
    )
    run.add_argument("--config", help="TOML configuration file")
    run.add_argument("--listen", help="UDP address for peers, host:port (port 0 = any)")
    run.add_argument("--seed", action="append", dest="seeds", help="peer to join, host:port")
    run.add_argument("--key", dest="key_file", help="cluster key file (dvms keygen)")
    run.add_argument("--state-dir", help="identity, control socket and journal directory")
    run.add_argument(
        "--profile",
        choices=PROFILES,
        help="base settings the file changes (default: the file's profile key, else lan; "
        "local = fast overlay timers for one machine)",
    )
    run.add_argument("--hostname", help="host name shown to users")
    run.add_argument(
        "--hypervisor",
        metavar="URI",
        help="libvirt URI of this node's hypervisor (default: a test:/// host of its own "
        "under the state dir)",
    )
    run.add_argument(
        "--recruitment",
        choices=RECRUITMENT,
        help="partition recruitment order, [partition] recruitment (default vivaldi)",
    )
    run.add_argument("--host-cpus", type=int, help="CPUs of the default test host, [host] cpus (8)")
    run.add_argument(
        "--host-memory", type=int, help="memory of the default test host, MiB, [host] memory_mib"
    )
    run.add_argument(
        "--metrics",
        metavar="HOST:PORT",
        help="serve Prometheus /metrics, /healthz and /readyz over HTTP there (port 0 = any "
        "free port; default: the config's metrics key, else off)",
    )
    run.add_argument(
        "--log-level",
        default="info",
        choices=("debug", "info", "warning"),
        help="least severe log lines printed on stderr (info)",
    )
    run.add_argument(
        "--log-format",
        default="text",
        choices=("text", "json"),
        help="text lines, or one JSON object per line (ts, level, logger, msg, node)",
    )
    run.set_defaults(func=run_cmd)
    leave = nsub.add_parser(
        "leave",
        help="stop a node cleanly, telling its peers it leaves",
        description="Ask the node of --socket to stop as on SIGTERM: it finishes or "
        "releases its partition, tells the peers of its routing table (signed) that it "
        "leaves, so `dvms members` on the others shows it left, not failed, and exits. "
        "Waits until its control socket is gone.",
    )
    leave.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        help="seconds to wait for the node to exit (60); it keeps stopping after that",
    )
    leave.set_defaults(func=leave_cmd)
    from dvms.cli import keys

    keys.register_revoke(nsub)

    for name, helptext in (("status", "show a node's status"), ("peers", "list a node's peers")):
        # `peers` names a peer once this node has heard from it (vm info, rtt, host)
        p = sub.add_parser(name, help=helptext, description=helptext.capitalize() + ".")
        p.set_defaults(func=lambda args, name=name: show(args, name))


class JsonLines(logging.Formatter):
    """Structured logs: one JSON object per record, for log shippers."""

    def __init__(self, node: str) -> None:
        super().__init__()
        self.node = node

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "node": self.node,
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, sort_keys=True)


def flag_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The flags of ``node run`` as dotted config keys (None: not given)."""
    return {
        "listen": args.listen,
        "seeds": tuple(args.seeds) if args.seeds else None,
        "key_file": args.key_file,
        "state_dir": args.state_dir,
        "hostname": args.hostname,
        "hypervisor": args.hypervisor,
        "metrics": args.metrics,
        "partition.recruitment": args.recruitment,
        "host.cpus": args.host_cpus,
        "host.memory_mib": args.host_memory,
    }


def run_cmd(args: argparse.Namespace) -> int:
    handler = logging.StreamHandler(sys.stderr)
    logging.basicConfig(level=args.log_level.upper(), handlers=[handler])
    from dvms.runtime.config import ConfigError, load_config
    from dvms.runtime.daemon import run_node

    try:
        cfg = load_config(args.config, profile=args.profile, overrides=flag_overrides(args))
        handler.setFormatter(log_formatter(args.log_format, cfg.name))
        import trio

        trio.run(run_node, cfg)
    except (ConfigError, KeyFileError) as exc:
        raise UserError(str(exc)) from None
    except OSError as exc:
        raise UserError(f"cannot start node: {exc.strerror or exc}") from None
    return 0


def leave_cmd(args: argparse.Namespace) -> int:
    path = socket_path(args)
    result = node_call(args, "leave", {})
    deadline = time.monotonic() + args.timeout
    stopped = False
    while time.monotonic() < deadline:
        try:
            call(path, "status", timeout=5.0)
        except ControlError:
            stopped = True
            break
        time.sleep(0.1)
    if args.json:
        from dvms.cli.output import emit

        emit({"name": result["name"], "stopped": stopped})
    elif stopped:
        print(f"{result['name']} left the cluster and stopped")
    else:
        print(f"{result['name']} is leaving; still running after {args.timeout:g} s")
    return 0 if stopped else 1


def log_formatter(kind: str, node: str) -> logging.Formatter:
    """Every line names the node (its host name), so merged logs stay readable."""
    if kind == "json":
        return JsonLines(node)
    node = node.replace("%", "%%")
    return logging.Formatter(f"%(asctime)s %(levelname)s {node} %(name)s: %(message)s")


def socket_path(args: argparse.Namespace) -> str:
    """The node to talk to: ``--socket``, else ``$DVMS_SOCKET``, else the control socket
    of a node run with the platform's default state dir on this machine."""
    path = getattr(args, "socket", None) or os.environ.get("DVMS_SOCKET")
    if path:
        return str(path)
    from dvms.runtime.config import default_state_dir

    default = default_state_dir() / "dvms.sock"
    if default.exists():
        return str(default)
    raise UserError(
        f"no node to talk to: pass --socket PATH or set DVMS_SOCKET "
        f"(no node runs with the default state dir: {default} does not exist)"
    )


def node_call(args: argparse.Namespace, cmd: str, body: dict[str, Any], **kw: Any) -> Any:
    """``cmd`` on the node of ``--socket``/``$DVMS_SOCKET``; a refusal or an unreachable
    node is a one-line ``UserError``."""
    try:
        return call(socket_path(args), cmd, body, **kw)
    except ControlError as exc:
        raise UserError(str(exc)) from None


def show(args: argparse.Namespace, cmd: str) -> int:
    try:
        result: Any = call(socket_path(args), cmd)
    except ControlError as exc:
        raise UserError(str(exc)) from None
    if args.json:
        from dvms.cli.output import emit

        emit({"peers": result} if cmd == "peers" else result)
    elif cmd == "peers":
        print_table(
            result, ("name", "node_id", "address", "rtt_ms", "predicted_rtt_ms", "failures")
        )
    else:
        for key, value in result.items():
            print(f"{key.replace('_', ' '):>16}  {for_people(value)}")
    return 0


def for_people(value: Any) -> str:
    """One status value as a person reads it: yes/no, ``-`` for nothing, ``k=v`` pairs
    and comma-separated lists instead of Python's reprs."""
    if value is None or value == "" or value == [] or value == {}:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={for_people(v)}" for k, v in sorted(value.items()))
    if isinstance(value, list | tuple):
        return ", ".join(for_people(v) for v in value)
    return str(value)


def print_table(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> None:
    """Print ``rows`` in minimega's table layout (the namespace renderer's), missing
    values as ``-``; like minimega, an empty table prints nothing."""
    from dvms.namespace.effects import Table
    from dvms.namespace.render import render_table

    cells = tuple(tuple("-" if r.get(c) is None else str(r[c]) for c in columns) for r in rows)
    print(render_table(Table(columns, cells)), end="")
