"""Package version, read from the installed metadata when available."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__: str = version("cellbench")
except PackageNotFoundError:  # running from a source checkout without installation
    __version__ = "0.1.0"
