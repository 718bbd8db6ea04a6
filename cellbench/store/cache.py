"""Where cellbench keeps downloads and built stores, and whether it may use the network.

Layout under ``CELLBENCH_HOME`` (default ``~/.cache/cellbench``)::

    downloads/<sha256[:2]>/<sha256>/<filename>   verified source files (content-addressed)
    stores/<id>/<version>.zarr                   built canonical stores
    registry/imported.json                       user stores registered with ``import``
    tmp/                                         work areas, renamed into place when complete
"""

from __future__ import annotations

from pathlib import Path

from cellbench import settings


def cellbench_home() -> Path:
    """Return the cache root (:func:`cellbench.settings.home`), creating it."""
    path = settings.home()
    path.mkdir(parents=True, exist_ok=True)
    return path


def is_offline(value: bool | None = None) -> bool:
    """Whether network access is forbidden (:func:`cellbench.settings.offline`)."""
    return settings.offline(value)


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
