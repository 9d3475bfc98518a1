import json
import os
import stat

import pytest

from tlpo.fileio import write_json_atomically, write_text_atomically


@pytest.fixture
def umask_022():
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def test_written_file_follows_umask(tmp_path, umask_022):
    path = tmp_path / "report.html"
    write_text_atomically(path, "<p>ok</p>")
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert path.read_text(encoding="utf-8") == "<p>ok</p>"


def test_replace_leaves_no_temporary(tmp_path):
    path = tmp_path / "results.json"
    write_json_atomically(path, {"rpr": 1.0})
    write_json_atomically(path, {"rpr": 2.0, "text": "한국어"})
    assert json.loads(path.read_text(encoding="utf-8")) == {"rpr": 2.0, "text": "한국어"}
    assert [entry.name for entry in tmp_path.iterdir()] == ["results.json"]


def test_missing_folder_raises(tmp_path):
    with pytest.raises(FileNotFoundError):
        write_text_atomically(tmp_path / "missing" / "out.txt", "x")
