"""One node per state directory: the lock a daemon takes on it."""

import os

import pytest

from dvms.runtime.daemon import StateDirInUse, lock_state_dir


def test_the_lock_is_exclusive_and_names_its_holder(tmp_path):
    fd = lock_state_dir(tmp_path)
    try:
        with pytest.raises(
            StateDirInUse, match=rf"in use by another dvms node \(pid {os.getpid()}\)"
        ):
            lock_state_dir(tmp_path)
    finally:
        os.close(fd)
    again = lock_state_dir(tmp_path)  # released with its descriptor
    os.close(again)


def test_a_stale_lock_file_does_not_block(tmp_path):
    (tmp_path / "lock").write_text("999999\n")  # left by a node that died
    fd = lock_state_dir(tmp_path)
    try:
        assert (tmp_path / "lock").read_text() == f"{os.getpid()}\n"
    finally:
        os.close(fd)
