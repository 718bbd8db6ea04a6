"""cellbench: curated microscopy datasets, baselines, scoring and leaderboards.

The public API is re-exported here lazily so that ``import cellbench`` stays cheap
(torch is only imported by the training and submission modules that need it).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from cellbench._version import __version__

__all__ = ["__version__"]

_LAZY: dict[str, tuple[str, str]] = {}


def __getattr__(name: str) -> Any:
    """Resolve public names lazily (PEP 562)."""
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(import_module(module), attr)
    raise AttributeError(f"module 'cellbench' has no attribute {name!r}")
