"""Where a store lives: a local path or a URL (no fsspec or zarr needed to tell)."""

from __future__ import annotations

import os
from pathlib import Path


def is_url(location: object) -> bool:
    """Whether ``location`` names a store by URL (``scheme://...``) rather than a local path."""
    if not isinstance(location, str) or "://" not in location:
        return False
    scheme = location.split("://", 1)[0]
    return scheme.replace("+", "").replace("-", "").replace(":", "").isalnum()


def is_remote(location: object) -> bool:
    """Whether ``location`` is a URL other than ``file://`` (which names a local path).

    Test this before making a ``Path``: pathlib folds ``s3://bucket/x`` into the local path
    ``s3:/bucket/x``.
    """
    return is_url(location) and not str(location).startswith("file://")


def local_path(location: str | os.PathLike[str]) -> Path:
    """The local path ``location`` names: a ``file://`` URL's path, or the path itself."""
    return Path(os.fspath(location).removeprefix("file://"))
