"""Where a store lives: a local path or a URL (no fsspec or zarr needed to tell)."""

from __future__ import annotations


def is_url(location: object) -> bool:
    """Whether ``location`` names a store by URL (``scheme://...``) rather than a local path."""
    if not isinstance(location, str) or "://" not in location:
        return False
    scheme = location.split("://", 1)[0]
    return scheme.replace("+", "").replace("-", "").replace(":", "").isalnum()
