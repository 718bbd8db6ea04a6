"""Real servers on 127.0.0.1 for the fetch tests: HTTP with scripted faults, PyPI, S3 (moto)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.store.fetch_helpers import HTTPFileServer, PypiIndex


@pytest.fixture
def http_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[HTTPFileServer]:
    """A fresh fault-scripted HTTP server; proxies are bypassed for loopback."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    server = HTTPFileServer()
    yield server
    server.close()


@pytest.fixture
def pypi_index(
    http_server: HTTPFileServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> PypiIndex:
    """A local index, with pip configured to use only it (machine pip config ignored)."""
    for key in list(os.environ):
        if key.upper().startswith("PIP_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("PIP_INDEX_URL", http_server.url("/simple/"))
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_CACHE_DIR", str(tmp_path / "pip-cache"))
    monkeypatch.setenv("PIP_DISABLE_PIP_VERSION_CHECK", "1")
    return PypiIndex(http_server)
