"""Package version: a constant, kept equal to ``pyproject.toml``'s by a test.

Reading it from the installed metadata (``importlib.metadata.version``) cost about 0.1 s of every
process start (it imports the email parser), more than scoring a small CTC sequence.
"""

from __future__ import annotations

__version__: str = "0.1.0"
