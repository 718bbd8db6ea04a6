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
    os.environ["CELLBENCH_HOME"] = str(tmp_path_factory.mktemp("lb_session_home"))
    os.environ.setdefault("CELLBENCH_OFFLINE", "1")
    yield
    if before is None:
        os.environ.pop("CELLBENCH_HOME", None)
    else:
        os.environ["CELLBENCH_HOME"] = before
