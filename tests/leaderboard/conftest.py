"""Leaderboard tests: module-scoped fixtures publish sites, so give them a cellbench home too.

The suite-wide fixture in ``tests/conftest.py`` isolates ``CELLBENCH_HOME`` per test function,
but module-scoped fixtures run before it; this session-wide home keeps their figure cache (and
anything else they write under the home) out of the user's real cache.
"""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def _session_cellbench_home(tmp_path_factory):
    before = os.environ.get("CELLBENCH_HOME")
    home = tmp_path_factory.mktemp("lb_session_home")
    os.environ["CELLBENCH_HOME"] = str(home)
    os.environ.setdefault("CELLBENCH_OFFLINE", "1")
    yield home
    if before is None:
        os.environ.pop("CELLBENCH_HOME", None)
    else:
        os.environ["CELLBENCH_HOME"] = before


@pytest.fixture(scope="session")
def task_boards(tmp_path_factory, _session_cellbench_home):
    """One board per task from generated data, and its published site (pictures included).

    Returns:
        ``(leaderboard root, site folder, PublishResult)``; the datasets and the figure cache
        are in the session's cellbench home (``_session_cellbench_home``).
    """
    from cellbench.leaderboard import publish
    from tests.leaderboard.boards import build_task_boards

    root = tmp_path_factory.mktemp("task_boards")
    store = build_task_boards(root)
    site = tmp_path_factory.mktemp("task_site")
    lines: list[str] = []
    result = publish(store, site, progress=lines.append)
    result.progress = lines
    return root, site, result
