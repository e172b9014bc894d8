"""`dvms node run --log-format json`: one JSON object per log record."""

from __future__ import annotations

import json
import logging

from dvms.cli.main import build_parser
from dvms.cli.node import JsonLines


def test_json_lines_carry_level_logger_message_node_and_exception():
    fmt = JsonLines("node7")
    rec = logging.LogRecord("dvms.node", logging.WARNING, __file__, 1, "lost %d", (3,), None)
    assert json.loads(fmt.format(rec)) == {
        "level": "warning",
        "logger": "dvms.node",
        "msg": "lost 3",
        "node": "node7",
        "ts": round(rec.created, 6),
    }
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        rec.exc_info = sys.exc_info()
    assert "ValueError: boom" in json.loads(fmt.format(rec))["exc"]


def test_log_format_flag_is_offered_and_checked():
    args = build_parser().parse_args(["node", "run", "--log-format", "json"])
    assert args.log_format == "json"
