"""Every ``CELLBENCH_*`` setting in one place (the way Hugging Face datasets' ``config.py`` does).

==========================  ==============================================================
variable                    meaning (default)
==========================  ==============================================================
``CELLBENCH_HOME``          cache root: downloads, built stores, imported-store registry,
                            scratch space (``~/.cache/cellbench``)
``CELLBENCH_OFFLINE``       ``1``/``true``/``yes``/``on``: never touch the network (off);
                            the CLI's ``--offline`` passes the same as a value
``CELLBENCH_CATALOG``       extra catalog folders searched first, ``os.pathsep``-separated
                            (none; then the installed and checkout catalogs)
``CELLBENCH_LEADERBOARDS``  leaderboard root, a folder or fsspec URL (``./leaderboards``)
``CELLBENCH_DB``            challenge server database URL (``cellbench serve``/``worker``;
                            none: the embedded SQLite file under the server's folder)
``CELLBENCH_TOKEN``         API token ``cellbench submit --server`` sends (none; ``--token``)
``CELLBENCH_CHUNK_CACHE``   size bound of the local cache of verified chunks read from stores
                            at URLs (``s3://...``), e.g. ``2GiB``, ``500MB``; ``0`` disables
                            it (``2GiB``; kept under ``CELLBENCH_HOME/chunks``)
``CELLBENCH_OBJECT_STORE``  how stores at ``s3://``/``gs://``/``az://`` URLs are read:
                            ``auto`` (obstore when installed, else fsspec), ``obstore`` or
                            ``fsspec`` (``auto``)
==========================  ==============================================================

Files under ``CELLBENCH_HOME`` that users may look at: ``sources.lock.json`` (the sha256 of
each source whose upstream publishes none, recorded by its first verified pull; see
:func:`lock_file`) and ``manual/<dataset id>/`` (files that must be downloaded by hand; see
:func:`manual_dir`).

Settings are read when asked for, never cached, so a test or a long-lived process that changes
the environment sees the change. Functions that can touch the network take an ``offline``
argument; ``None`` means "as :func:`offline` says".
"""

from __future__ import annotations

import os
from pathlib import Path

HOME = "CELLBENCH_HOME"
OFFLINE = "CELLBENCH_OFFLINE"
CATALOG = "CELLBENCH_CATALOG"
LEADERBOARDS = "CELLBENCH_LEADERBOARDS"
DB = "CELLBENCH_DB"
TOKEN = "CELLBENCH_TOKEN"
CHUNK_CACHE = "CELLBENCH_CHUNK_CACHE"
OBJECT_STORE = "CELLBENCH_OBJECT_STORE"

#: Every setting this module reads, for documentation and ``cellbench env``.
VARIABLES = (HOME, OFFLINE, CATALOG, LEADERBOARDS, DB, TOKEN, CHUNK_CACHE, OBJECT_STORE)

_TRUE = {"1", "true", "yes", "on"}


def home() -> Path:
    """The cache root (``$CELLBENCH_HOME`` or ``~/.cache/cellbench``), not created here."""
    root = os.environ.get(HOME)
    return Path(root).expanduser() if root else Path.home() / ".cache" / "cellbench"


def lock_file() -> Path:
    """The user's source lock file: sha256s recorded on the first pull of unpinned sources."""
    return home() / "sources.lock.json"


def manual_dir(dataset_id: str) -> Path:
    """Where the user puts files of ``dataset_id`` that must be downloaded by hand."""
    return home() / "manual" / dataset_id


def offline(value: bool | None = None) -> bool:
    """Whether network access is forbidden: ``value`` when given, else ``$CELLBENCH_OFFLINE``."""
    if value is not None:
        return bool(value)
    return os.environ.get(OFFLINE, "").strip().lower() in _TRUE


def catalog_dirs() -> list[Path]:
    """Folders named by ``$CELLBENCH_CATALOG``, in order (they come before the built-in ones)."""
    env = os.environ.get(CATALOG)
    return [Path(p).expanduser() for p in env.split(os.pathsep) if p] if env else []


def leaderboards_root() -> str:
    """Default leaderboard root: ``$CELLBENCH_LEADERBOARDS`` or ``./leaderboards``."""
    return os.environ.get(LEADERBOARDS) or str(Path.cwd() / "leaderboards")


def server_db(value: str | None = None) -> str | None:
    """The challenge server's database URL: ``value`` when given, else ``$CELLBENCH_DB``."""
    return value or os.environ.get(DB) or None


def server_token(value: str | None = None) -> str | None:
    """The API token for a challenge server: ``value`` when given, else ``$CELLBENCH_TOKEN``."""
    return value or os.environ.get(TOKEN) or None


def chunk_cache_bytes(value: str | None = None) -> int:
    """Bound of the chunk cache in bytes: ``value``, else ``$CELLBENCH_CHUNK_CACHE``, else 2 GiB.

    Raises:
        ValueError: For a value that is not a size (``2GiB``, ``500MB``, ``1048576``).
    """
    from cellbench.store.remote import parse_size

    text = value if value is not None else os.environ.get(CHUNK_CACHE, "").strip()
    if not text:
        return DEFAULT_CHUNK_CACHE
    try:
        return parse_size(text)
    except ValueError as err:
        raise ValueError(f"{CHUNK_CACHE}: {err}") from None


def object_store_backend(value: str | None = None) -> str:
    """``auto``, ``obstore`` or ``fsspec``: ``value``, else ``$CELLBENCH_OBJECT_STORE``.

    Raises:
        ValueError: For any other value.
    """
    chosen = (value or os.environ.get(OBJECT_STORE, "") or "auto").strip().lower()
    if chosen not in ("auto", "obstore", "fsspec"):
        raise ValueError(f"{OBJECT_STORE}: {chosen!r} is not one of auto, obstore, fsspec")
    return chosen


#: Default bound of the chunk cache (bytes).
DEFAULT_CHUNK_CACHE = 2 * 2**30


def current() -> dict[str, str]:
    """The value each setting has now (for ``cellbench env`` and bug reports).

    The token is a secret: only whether it is set is shown. A database URL may carry a password,
    which is masked.
    """
    db = server_db() or ""
    if "@" in db and ":" in db.split("@", 1)[0].split("//", 1)[-1]:
        scheme, _, rest = db.partition("//")
        user = rest.split("@", 1)[0].split(":", 1)[0]
        db = f"{scheme}//{user}:***@{rest.split('@', 1)[1]}"
    return {
        HOME: str(home()),
        OFFLINE: str(offline()).lower(),
        CATALOG: os.pathsep.join(str(p) for p in catalog_dirs()),
        LEADERBOARDS: leaderboards_root(),
        DB: db,
        TOKEN: "set" if server_token() else "",
        CHUNK_CACHE: os.environ.get(CHUNK_CACHE, "") or "2GiB",
        OBJECT_STORE: os.environ.get(OBJECT_STORE, "") or "auto",
    }
