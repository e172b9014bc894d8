"""``dvms events [--follow] [--all]``: a node's event stream (partitions, migrations,
vjob state changes, overloads, members joining and failing), like ``kubectl get events
--watch``. ``--json``: one document, or with ``--follow`` one JSON object per line.
``--follow`` long-polls the node, so an entry shows within a round trip of
happening; with ``--all`` it polls every node through the asked one."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from dvms.cli.main import UserError
from dvms.cli.node import socket_path
from dvms.cli.output import emit, event_doc, shaped
from dvms.runtime.client import ControlError, call

#: ``--follow``: the node holds each request this long when nothing happens, seconds.
FOLLOW_WAIT_S = 10.0
#: ``--follow --all``: seconds between two polls of the whole cluster, and how far back
#: each poll looks again (clocks of the nodes differ a little; repeats are dropped).
ALL_POLL_S = 0.5
ALL_OVERLAP_S = 5.0
#: Seconds a request may take beyond the node's wait (a cluster-wide gather: 3.5 s).
SLACK_S = 10.0

COLUMNS = ("time", "host", "type", "subject", "message")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "events",
        help="show a node's events (partitions, migrations, vjobs, overloads, members)",
        description="Show what happened on a node, oldest first, with ISO-8601 times. "
        "--all gathers every node's events through this one; --follow keeps printing "
        "new ones until interrupted.",
    )
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new events")
    p.add_argument("--all", action="store_true", help="every node's events, merged by time")
    p.set_defaults(func=events_cmd)


def events_cmd(args: argparse.Namespace) -> int:
    sock = socket_path(args)
    try:
        if args.all:
            _all(sock, args.follow, args.json)
        else:
            _one(sock, args.follow, args.json)
    except ControlError as exc:
        raise UserError(str(exc)) from None
    except KeyboardInterrupt:
        return 0
    return 0


def _one(sock: str, follow: bool, as_json: bool) -> None:
    res = call(sock, "events", {})
    if as_json and not follow:
        emit({"events": [event_doc(e) for e in res["events"]]})
        return
    _show(res["events"], as_json)
    last = res["last"]
    while follow:
        res = call(sock, "events", {"after": last, "wait": FOLLOW_WAIT_S},
                   timeout=FOLLOW_WAIT_S + SLACK_S)  # fmt: skip
        _show(res["events"], as_json)
        last = res["last"]


def _all(sock: str, follow: bool, as_json: bool) -> None:
    seen: set[tuple[str, int]] = set()
    since = 0.0
    while True:
        res = call(sock, "events", {"all": True, "since": since}, timeout=SLACK_S)
        fresh = [e for e in res["events"] if (e["host"], e["seq"]) not in seen]
        seen.update((e["host"], e["seq"]) for e in fresh)
        if as_json and not follow:
            emit({**res, "events": [event_doc(e) for e in res["events"]]})
            return
        _show(fresh, as_json)
        if not follow:
            if res["unreachable"] and not as_json:
                print(f"unreachable: {', '.join(res['unreachable'])}")
            return
        if res["events"]:
            since = max(since, max(e["ts"] for e in res["events"]) - ALL_OVERLAP_S)
        time.sleep(ALL_POLL_S)


def _show(events: list[dict[str, Any]], as_json: bool) -> None:
    for e in events:
        if as_json:
            print(json.dumps(shaped(event_doc(e)), sort_keys=True), flush=True)
        else:
            print(f"{e['time']}  {e['host']}  {e['type']:<14} {e['subject']}  {e['message']}",
                  flush=True)  # fmt: skip
