"""Temporaries of killed runs are removed by the next run or `cache clean`, never a live one's."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from cellbench.cli import main
from cellbench.registry import load, pull
from cellbench.store.cache import cellbench_home
from cellbench.store.scratch import (
    OWNER_FILE,
    clean_stale,
    make_scratch,
    owner_alive,
    process_start,
)

CARD = {
    "id": "slow-toy",
    "version": "1.0",
    "title": "Slow toy",
    "tasks": ["instance-segmentation"],
    "description": "Tiny images, built slowly so a pull can be killed mid-way.",
    "license": "CC0-1.0",
    "citation": "Nobody (2026).",
    "annotation": {"provenance": "simulated"},
    "splits": {"method": "fixed"},
    "sources": {},
}
RECIPE = textwrap.dedent(
    """
    import time
    from tests.factories import toy_samples

    def build(ctx):
        for s in toy_samples("instance-segmentation", n=8):
            time.sleep(ctx.options.get("sleep", 0.0))
            yield s
    """
)


@pytest.fixture
def slow_catalog(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "catalog"
    (root / "slow-toy").mkdir(parents=True)
    (root / "slow-toy" / "card.yaml").write_text(yaml.safe_dump(CARD))
    (root / "slow-toy" / "recipe.py").write_text(RECIPE)
    monkeypatch.setenv("CELLBENCH_CATALOG", str(root))
    return root


def _entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_owner_records_tell_live_from_dead(tmp_path):
    mine = make_scratch(tmp_path, prefix="live-")
    record = json.loads((mine / OWNER_FILE).read_text())
    assert record["pid"] == os.getpid() and record["start"] == process_start(os.getpid())
    assert owner_alive(mine) is True
    dead = make_scratch(tmp_path, prefix="dead-")
    (dead / OWNER_FILE).write_text(json.dumps({**record, "pid": _dead_pid()}))
    recycled = make_scratch(tmp_path, prefix="recycled-")  # our pid, another start time
    (recycled / OWNER_FILE).write_text(json.dumps({**record, "start": "1"}))
    unowned = tmp_path / "unowned"
    unowned.mkdir()
    assert owner_alive(dead) is False and owner_alive(recycled) is False
    assert owner_alive(unowned) is None
    assert sorted(p.name for p in clean_stale(tmp_path)) == sorted([dead.name, recycled.name])
    assert mine.is_dir() and unowned.is_dir()
    assert clean_stale(tmp_path, unowned_age_s=0) == [unowned]


def test_kill_during_pull_then_next_run_cleans_up(slow_catalog, cli_env, cli_cmd):
    home = cellbench_home()
    env = {**cli_env, "CELLBENCH_HOME": str(home), "CELLBENCH_CATALOG": str(slow_catalog)}
    code = (
        "from cellbench.registry import pull; "
        "pull('slow-toy', options={'sleep': 0.5}, progress=False)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], env=env)
    tmp = home / "tmp"
    deadline = time.monotonic() + 60
    while not any(tmp.glob("slow-toy-*/.store.zarr.*/store.zarr/images")):
        assert time.monotonic() < deadline and proc.poll() is None, "pull never started writing"
        time.sleep(0.05)
    time.sleep(0.6)  # a few samples in
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    left = _entries(tmp)
    assert left and left[0].startswith("slow-toy-")  # the killed pull's work area
    # a live process's scratch is never touched by the clean-up
    live = make_scratch(tmp, prefix="live-")
    res = CliRunner().invoke(main, ["cache", "clean"])
    assert res.exit_code == 0 and "1 stale temporary removed" in res.output, res.output
    assert _entries(tmp) == [live.name]
    (live / OWNER_FILE).unlink()
    live.rmdir()
    # kill another pull, and let the next pull (not cache clean) remove what it left
    proc = subprocess.Popen([sys.executable, "-c", code], env=env)
    deadline = time.monotonic() + 60
    while not any(tmp.glob("slow-toy-*")):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert _entries(tmp)
    store = pull("slow-toy", progress=False)
    assert store.verify() == [] and len(store) == 8
    assert _entries(tmp) == []
    assert load("slow-toy").checksum == store.checksum
