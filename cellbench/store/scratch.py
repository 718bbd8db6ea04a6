"""Scratch folders that record their owner, and removal of those left by dead processes.

Every temporary folder cellbench makes in its cache (pull work areas, store builds, ``pip
download`` areas, Hugging Face imports, prediction sets being written for a submission) is made
by :func:`make_scratch`, which writes an owner record (:data:`OWNER_FILE`: process id, the
process's start time and the host) inside it before anything else. A process killed mid-way
(Ctrl-C twice, ``kill -9``, a full disk) leaves its folder behind; :func:`clean_stale` removes
such folders when their owner is gone, and never one whose owner still runs: a process id is
only taken as the owner when its start time matches too, so a recycled id does not keep a
stale folder alive and a live process's folder is never touched. ``pull``, ``import`` and
``submit`` clean up at their start; ``cellbench cache clean`` does it on request.

A folder in ``tmp/`` without an owner record (made by an older cellbench, or a process killed
between creating the folder and writing the record) is removed once it is older than
:data:`UNOWNED_AGE_S`.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path

OWNER_FILE = ".cellbench-owner.json"
#: Age after which an owner-less folder in the cache's ``tmp/`` counts as abandoned.
UNOWNED_AGE_S = 24 * 3600


def process_start(pid: int) -> str | None:
    """An identifier of when process ``pid`` started (None if it does not run or is unknown).

    Linux: the start time in clock ticks from ``/proc/<pid>/stat``; elsewhere ``psutil``'s
    create time when it is installed.
    """
    stat = Path(f"/proc/{pid}/stat")
    if stat.parent.parent.is_dir() and Path("/proc/self/stat").exists():
        try:
            text = stat.read_text()
        except OSError:
            return None
        fields = text[text.rfind(")") + 2 :].split()
        return fields[19] if len(fields) > 19 else None
    try:
        import psutil
    except ImportError:
        return "?" if _pid_alive(pid) else None
    try:
        return f"{psutil.Process(pid).create_time():.3f}"
    except psutil.Error:
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def owner_record() -> dict[str, object]:
    """The owner record of the current process."""
    pid = os.getpid()
    return {"pid": pid, "start": process_start(pid), "host": socket.gethostname()}


def make_scratch(parent: str | os.PathLike[str], prefix: str) -> Path:
    """Create a private folder under ``parent`` with this process's owner record in it.

    Args:
        parent: Where to create it (made if missing).
        prefix: Start of the folder name.

    Returns:
        The new folder.
    """
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    (folder / OWNER_FILE).write_text(json.dumps(owner_record()), encoding="utf-8")
    return folder


def owner_alive(folder: Path) -> bool | None:
    """Whether the process that made ``folder`` still runs (None: no readable owner record).

    A record from another host counts as alive (that host's processes cannot be seen).
    """
    try:
        record = json.loads((folder / OWNER_FILE).read_text(encoding="utf-8"))
        pid = int(record["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if record.get("host") not in (None, socket.gethostname()):
        return True
    start = process_start(pid)
    if start is None:
        return False
    recorded = record.get("start")
    return recorded is None or start == "?" or str(recorded) == start


def clean_stale(parent: str | os.PathLike[str], unowned_age_s: float | None = None) -> list[Path]:
    """Remove the scratch folders in ``parent`` whose owner process is gone.

    Args:
        parent: Folder holding scratch folders (not searched recursively).
        unowned_age_s: Also remove folders without an owner record that are at least this old
            (None: never remove those).

    Returns:
        The folders removed.
    """
    parent = Path(parent)
    removed: list[Path] = []
    if not parent.is_dir():
        return removed
    now = time.time()
    for entry in sorted(parent.iterdir()):
        if not entry.is_dir() or entry.is_symlink():
            continue
        alive = owner_alive(entry)
        if alive is None:
            if unowned_age_s is None:
                continue
            try:
                age = now - entry.stat().st_mtime
            except OSError:
                continue
            if age < unowned_age_s:
                continue
        elif alive:
            continue
        shutil.rmtree(entry, ignore_errors=True)
        if not entry.exists():
            removed.append(entry)
    return removed


def clean_cache() -> list[Path]:
    """Remove every stale temporary of dead processes in the cellbench cache.

    Looks in ``tmp/`` (owner-less folders there once older than :data:`UNOWNED_AGE_S`), beside
    the built stores (``stores/<id>/``), in ``submissions/`` (model runs) and in each kept
    submission folder (prediction sets being written).

    Returns:
        What was removed.
    """
    from cellbench import settings

    home = settings.home()  # nothing is created here: cleaning must not leave folders either
    removed = clean_stale(home / "tmp", unowned_age_s=UNOWNED_AGE_S)
    stores = home / "stores"
    for folder in sorted(p for p in stores.iterdir() if p.is_dir()) if stores.is_dir() else []:
        removed += clean_stale(folder)
    subs = home / "submissions"
    removed += clean_stale(subs)  # model runs that were killed before their result was kept
    if subs.is_dir():
        for folder in sorted(p for p in subs.iterdir() if p.is_dir()):
            removed += clean_stale(folder)  # prediction sets being written when killed
    return removed
