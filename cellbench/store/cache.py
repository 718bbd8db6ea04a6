"""Where cellbench keeps downloads and built stores, and whether it may use the network.

Layout under ``CELLBENCH_HOME`` (default ``~/.cache/cellbench``)::

    downloads/<sha256[:2]>/<sha256>/<filename>   verified source files (content-addressed)
    stores/<id>/<version>.zarr                   built canonical stores
    registry/imported.json                       user stores registered with ``import``
    tmp/                                         work areas, renamed into place when complete
"""

from __future__ import annotations

import os
from pathlib import Path

_TRUE = {"1", "true", "yes", "on"}


def cellbench_home() -> Path:
    """Return the cache root (``$CELLBENCH_HOME`` or ``~/.cache/cellbench``), creating it."""
    root = os.environ.get("CELLBENCH_HOME")
    path = Path(root).expanduser() if root else Path.home() / ".cache" / "cellbench"
    path.mkdir(parents=True, exist_ok=True)
    return path


def is_offline() -> bool:
    """Return True when ``CELLBENCH_OFFLINE`` (or ``--offline``) forbids network access."""
    return os.environ.get("CELLBENCH_OFFLINE", "").strip().lower() in _TRUE


def downloads_dir() -> Path:
    """Directory of verified, content-addressed source downloads."""
    path = cellbench_home() / "downloads"
    path.mkdir(parents=True, exist_ok=True)
    return path


def stores_dir() -> Path:
    """Directory of built canonical stores (``<id>/<version>.zarr``)."""
    path = cellbench_home() / "stores"
    path.mkdir(parents=True, exist_ok=True)
    return path


def tmp_dir() -> Path:
    """Scratch space on the same filesystem as the cache, so renames are atomic."""
    path = cellbench_home() / "tmp"
    path.mkdir(parents=True, exist_ok=True)
    return path
