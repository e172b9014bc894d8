import stat

import pytest

from dvms.cli.main import main
from dvms.wire.keys import KEY_BYTES, KeyFileError, load_key


def test_keygen_writes_private_key_and_refuses_overwrite(tmp_path, capsys):
    path = tmp_path / "cluster.key"
    assert main(["keygen", str(path)]) == 0
    key = load_key(path)
    assert len(key) == KEY_BYTES
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert main(["keygen", str(path)]) == 1
    assert "already exists" in capsys.readouterr().err
    assert load_key(path) == key
    assert main(["keygen", "--force", str(path)]) == 0
    assert load_key(path) != key


@pytest.mark.parametrize(
    ("content", "problem"),
    [("zz", "not hex"), ("abcd", "holds 2 bytes"), ("", "holds 0 bytes")],
)
def test_load_key_names_the_problem(tmp_path, content, problem):
    path = tmp_path / "k"
    path.write_text(content)
    with pytest.raises(KeyFileError, match=problem):
        load_key(path)


def test_load_key_missing_file(tmp_path):
    with pytest.raises(KeyFileError, match="does not exist"):
        load_key(tmp_path / "nope")
