"""``dvms cluster up``'s checks that run before any node starts."""

import pytest

from dvms.cli.main import main
from dvms.runtime.localcluster import ClusterError, cluster_up


def test_a_dir_that_is_a_file_is_refused(tmp_path, capsys):
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    with pytest.raises(ClusterError, match="exists and is not a directory"):
        cluster_up(a_file, nodes=1)
    with pytest.raises(ClusterError, match="cannot create it"):
        cluster_up(a_file / "sub", nodes=1)
    assert main(["cluster", "up", "--dir", str(a_file), "--nodes", "1"]) == 1
    err = capsys.readouterr().err
    assert "exists and is not a directory" in err and "Traceback" not in err


def test_a_config_file_and_overlay_k_together_are_refused_before_anything_is_made(tmp_path):
    d = tmp_path / "c"
    with pytest.raises(ClusterError, match="not both"):
        cluster_up(d, 2, overlay_k=4, config_file=str(tmp_path / "node.toml"))
    assert not d.exists()
