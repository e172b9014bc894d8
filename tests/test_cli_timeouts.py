"""``--timeout`` of the CLI commands that may wait for a partition: defaults and checks."""

from __future__ import annotations

import pytest

from dvms.cli.main import build_parser
from dvms.cli.vm import SUBMIT_TIMEOUT_S


def test_submit_script_and_vjob_show_take_a_timeout() -> None:
    p = build_parser()
    assert p.parse_args(["submit", "j.toml"]).timeout == SUBMIT_TIMEOUT_S
    assert p.parse_args(["submit", "j.toml", "--timeout", "12"]).timeout == 12.0
    assert p.parse_args(["script", "--timeout", "5"]).timeout == 5.0
    # vjob show: None = by --wait (SUBMIT_TIMEOUT_S with it, SHOW_TIMEOUT_S without)
    assert p.parse_args(["vjob", "show", "abc"]).timeout is None


@pytest.mark.parametrize("value", ["0", "-1", "soon"])
def test_a_timeout_must_be_positive_seconds(value: str) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["submit", "j.toml", "--timeout", value])
