"""Shared fixtures: every test gets its own cellbench cache and never touches the network."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# huggingface_hub and datasets read these when first imported, before any fixture runs.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("MPLBACKEND", "Agg")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _isolated_cellbench_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch) -> Path:
    """Redirect ``CELLBENCH_HOME`` to a fresh temp dir and force offline mode by default."""
    home = tmp_path_factory.mktemp("cellbench_home")
    monkeypatch.setenv("CELLBENCH_HOME", str(home))
    monkeypatch.setenv("CELLBENCH_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(home / "hf"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    return home


@pytest.fixture
def cli_env() -> dict[str, str]:
    """Environment for running ``python -m cellbench`` in a subprocess from a source checkout."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


@pytest.fixture
def cli_cmd() -> list[str]:
    """Command prefix that runs the cellbench CLI with the current interpreter."""
    return [sys.executable, "-m", "cellbench"]
