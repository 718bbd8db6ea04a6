"""Every CELLBENCH_* setting is read in cellbench/settings.py and nowhere else."""

import re
from pathlib import Path

from cellbench import settings

PACKAGE = Path(__file__).resolve().parents[1] / "cellbench"


def test_settings_are_read_in_one_module():
    readers = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "settings.py" and path.parent == PACKAGE:
            continue
        text = path.read_text(encoding="utf-8")
        if re.search(r"environ(\.get)?\s*[\[(]\s*[\"']CELLBENCH_", text) or re.search(
            r"getenv\(\s*[\"']CELLBENCH_", text
        ):
            readers.append(str(path.relative_to(PACKAGE)))
    assert readers == []


def test_settings_follow_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("CELLBENCH_HOME", str(tmp_path / "h"))
    monkeypatch.setenv("CELLBENCH_OFFLINE", "yes")
    monkeypatch.setenv("CELLBENCH_CATALOG", f"{tmp_path / 'a'}:{tmp_path / 'b'}")
    monkeypatch.setenv("CELLBENCH_LEADERBOARDS", "s3://bucket/boards")
    assert settings.home() == tmp_path / "h"
    assert settings.offline() is True and settings.offline(False) is False
    assert settings.catalog_dirs() == [tmp_path / "a", tmp_path / "b"]
    assert settings.leaderboards_root() == "s3://bucket/boards"
    assert set(settings.current()) == set(settings.VARIABLES)
    monkeypatch.setenv("CELLBENCH_OFFLINE", "0")
    monkeypatch.delenv("CELLBENCH_LEADERBOARDS")
    assert settings.offline() is False and settings.offline(True) is True
    assert settings.leaderboards_root() == str(Path.cwd() / "leaderboards")
