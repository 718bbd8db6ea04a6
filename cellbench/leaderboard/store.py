"""Where leaderboard entries live: one JSON file per entry, on a local disk or any fsspec URL.

Layout (``root`` is a local folder such as the repository's ``leaderboards/``, or a URL such as
``s3://bucket/leaderboards`` or ``memory://lb``)::

    <root>/<dataset>@<version>/<task>/<split>/entries/<name-slug>-<name-hash>__seed-<seed>.json

Why this layout: a leaderboard is a folder, an entry is a file, so a pull request adding a
result touches exactly one new file and never edits a shared one. There is no index file to
update: listing a board lists its ``entries/`` folder. Rendered outputs (``README.md``,
``leaderboard.json``, ``index.html``) can be published into the same tree without clashing.

Writes are atomic and write-once:

* local disks: the JSON is written to a hidden temporary file in the same folder, flushed to
  disk, then hard-linked to its final name; ``link`` fails if the name exists, so two
  processes storing the same replicate cannot overwrite each other and a reader never sees a
  partly written file. Temporary files start with ``.`` and are never read as entries.
* object stores and other fsspec filesystems: the entry is written in one ``open(path, "xb")``
  call (a single PUT, which object stores apply atomically; on S3 ``s3fs`` sends
  ``If-None-Match: *`` so an existing key is never replaced). For filesystems that do not
  support exclusive creation, an existence check precedes the write and the race window is
  documented in the error message.

Different entries and different seeds always have different file names, so concurrent
submissions never contend for a file.

Entry names are owned. The first writer of a name on a board owns it: before its entry is
written, :meth:`LeaderboardStore.add` creates ``<board>/owners/<name-slug>-<name-hash>.json``
(the authors and code URL) with the same write-once primitive as entries (exclusive hard link;
a conditional PUT on object stores). Exactly one of several concurrent writers creates the
record; every writer then reads it and is refused unless it names the same authors and code
URL. On boards written before ownership records existed, the record is created for the owner of
the name's earliest entry.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from cellbench.errors import CellbenchError, ValidationError
from cellbench.leaderboard.entry import BoardKey, LeaderboardEntry

ENTRIES_DIR = "entries"
OWNERS_DIR = "owners"


class EntryExistsError(CellbenchError):
    """An entry file with the same name (same entry name and seed) is already stored."""


class LeaderboardStoreError(CellbenchError):
    """A leaderboard location or entry file cannot be read."""


def default_root() -> str:
    """Default leaderboard root: ``$CELLBENCH_LEADERBOARDS`` or ``./leaderboards``."""
    return os.environ.get("CELLBENCH_LEADERBOARDS") or str(Path.cwd() / "leaderboards")


class LeaderboardStore:
    """The entries of every leaderboard under one root.

    Args:
        root: Local folder or fsspec URL (``s3://...``, ``memory://...``, ``file://...``);
            defaults to :func:`default_root`.
        storage_options: Extra options for the fsspec filesystem (credentials, endpoint).
    """

    def __init__(self, root: str | os.PathLike[str] | None = None, **storage_options: Any):
        root = str(root if root is not None else default_root())
        self.url = root
        self.fs, path = fsspec.core.url_to_fs(root, **storage_options)
        self.root = path.rstrip("/") or "/"
        self.local = isinstance(self.fs, LocalFileSystem)

    def __repr__(self) -> str:
        return f"LeaderboardStore({self.url!r})"

    # ------------------------------------------------------------------ paths
    def board_dir(self, key: BoardKey) -> str:
        """Folder of a leaderboard (rendered outputs go here)."""
        return f"{self.root}/{key.path}"

    def entries_dir(self, key: BoardKey) -> str:
        """Folder holding a leaderboard's entry files."""
        return f"{self.board_dir(key)}/{ENTRIES_DIR}"

    def entry_path(self, entry: LeaderboardEntry) -> str:
        """Full path an entry is (or would be) stored at."""
        return f"{self.entries_dir(entry.key)}/{entry.filename}"

    # ------------------------------------------------------------------ writing
    def add(self, entry: LeaderboardEntry) -> str:
        """Store a new entry, atomically and without ever replacing an existing file.

        Args:
            entry: The entry to store.

        Returns:
            The local path, or the URL for remote filesystems, that was written.

        Raises:
            ValidationError: If the entry is inconsistent (manifest vs report, unsafe names) or
                its name is owned by other authors (see :meth:`claim_name`).
            EntryExistsError: If this entry name already has a replicate with this seed.
        """
        problems = entry.problems()
        if problems:
            raise ValidationError(problems, context=f"leaderboard entry {entry.name!r}")
        self.claim_name(entry)
        data = entry.to_json().encode("utf-8")
        path = self.entry_path(entry)
        if not self._create(path, data):
            raise EntryExistsError(self._exists_message(entry, path))
        return path if self.local else str(self.fs.unstrip_protocol(path))

    def _exists_message(self, entry: LeaderboardEntry, path: str) -> str:
        return (
            f"{path}: entry {entry.name!r} already has a replicate with seed {entry.seed} on "
            f"{entry.key.path}; submit another seed or choose another entry name"
        )

    def _create(self, path: str, data: bytes) -> bool:
        """Write ``data`` to ``path`` only if it does not exist; False if it already did."""
        if self.local:
            return self._create_local(path, data)
        return self._create_remote(path, data)

    @staticmethod
    def _create_local(path: str, data: bytes) -> bool:
        folder = Path(path).parent
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{Path(path).name}.", suffix=".tmp", dir=folder)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False
            except OSError:
                # Filesystems without hard links: exclusive create, then write in place.
                try:
                    out = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                except FileExistsError:
                    return False
                with os.fdopen(out, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
            with contextlib.suppress(OSError):
                dir_fd = os.open(folder, os.O_RDONLY)
                try:
                    os.fsync(dir_fd)
                finally:
                    os.close(dir_fd)
            return True
        finally:
            Path(tmp).unlink(missing_ok=True)

    def _create_remote(self, path: str, data: bytes) -> bool:
        folder = path.rsplit("/", 1)[0]
        with contextlib.suppress(Exception):  # object stores have no folders
            self.fs.makedirs(folder, exist_ok=True)
        try:
            with self.fs.open(path, "xb") as fh:
                fh.write(data)
        except FileExistsError:
            return False
        except (ValueError, NotImplementedError, TypeError):
            # No exclusive-create mode on this filesystem: check, then write once.
            if self.fs.exists(path):
                return False
            self.fs.pipe_file(path, data)
        except OSError as err:
            if "PreconditionFailed" in str(err) or "412" in str(err):
                return False
            raise
        return True

    # ------------------------------------------------------------------ ownership
    def owner_path(self, entry: LeaderboardEntry) -> str:
        """Where the ownership record of an entry's name is (or would be) stored."""
        return f"{self.board_dir(entry.key)}/{OWNERS_DIR}/{entry.name_id}.json"

    def owner(self, entry: LeaderboardEntry) -> dict[str, Any] | None:
        """The ownership record of an entry's name on its board, or None if unclaimed.

        Raises:
            LeaderboardStoreError: If the record is not valid JSON (names the file).
        """
        path = self.owner_path(entry)
        try:
            raw = self.fs.cat_file(path)
        except FileNotFoundError:
            return None
        try:
            record = json.loads(raw.decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as err:
            raise LeaderboardStoreError(f"{path}: not a valid ownership record ({err})") from err
        if not isinstance(record, dict):
            raise LeaderboardStoreError(f"{path}: not a valid ownership record (not an object)")
        return record

    def claim_name(self, entry: LeaderboardEntry) -> dict[str, Any]:
        """Make sure the entry's name belongs to its authors and code URL (atomically).

        The first writer of a name creates its ownership record (write-once, so exactly one of
        several concurrent writers succeeds); every writer then compares itself with the
        stored record.

        Returns:
            The ownership record.

        Raises:
            ValidationError: If the name is owned by other authors or another code URL.
        """
        record = self.owner(entry)
        if record is None:
            claim = self._legacy_owner(entry) or {"name": entry.name, **entry.owner}
            data = json.dumps(claim, indent=2, sort_keys=True).encode("utf-8") + b"\n"
            self._create(self.owner_path(entry), data)  # False: another writer was first
            record = self.owner(entry)
            if record is None:  # pragma: no cover - a store that lost a completed write
                raise LeaderboardStoreError(f"{self.owner_path(entry)}: ownership record vanished")
        theirs = {"authors": record.get("authors"), "code_url": record.get("code_url", "")}
        if theirs != entry.owner:
            raise ValidationError(
                [
                    f"entry name {entry.name!r} is already used on {entry.key.path} by "
                    f"authors {theirs['authors']} with code {theirs['code_url']!r}; replicates "
                    "of one entry must share authors and code URL (choose another name)"
                ],
                context="leaderboard entry",
            )
        return record

    def _legacy_owner(self, entry: LeaderboardEntry) -> dict[str, Any] | None:
        """Owner of a name stored before ownership records: its earliest entry's authors."""
        same = [e for e in self.entries(entry.key) if e.name == entry.name]
        if not same:
            return None
        first = min(same, key=lambda e: (e.submitted, e.entry_id))
        return {"name": entry.name, **first.owner}

    # ------------------------------------------------------------------ reading
    def boards(self) -> list[BoardKey]:
        """Every leaderboard under the root that holds at least one entry, sorted."""
        pattern = f"{self.root}/*@*/*/*/{ENTRIES_DIR}/*.json"
        keys = set()
        for path in self.fs.glob(pattern):
            rel = str(path)[len(self.root) :].strip("/")
            parts = rel.split("/")
            if len(parts) != 5 or parts[-1].startswith("."):
                continue
            try:
                key = BoardKey.from_path("/".join(parts[:3]))
            except ValueError:
                continue
            if not key.problems():
                keys.add(key)
        return sorted(keys)

    def _entry_files(self, key: BoardKey) -> Iterator[str]:
        folder = self.entries_dir(key)
        if not self.fs.exists(folder):
            return
        for path in sorted(self.fs.glob(f"{folder}/*.json")):
            if not str(path).rsplit("/", 1)[-1].startswith("."):
                yield str(path)

    def entries(self, key: BoardKey) -> list[LeaderboardEntry]:
        """Every entry of a leaderboard, in file-name order.

        Raises:
            LeaderboardStoreError: If an entry file is not valid entry JSON (names the file).
        """
        out = []
        for path in self._entry_files(key):
            try:
                text = self.fs.cat_file(path).decode("utf-8")
                entry = LeaderboardEntry.from_json(text)
            except (ValueError, KeyError, TypeError) as err:
                raise LeaderboardStoreError(
                    f"{path}: not a valid leaderboard entry ({err})"
                ) from err
            out.append(entry)
        return out

    def find_board(self, dataset: str, task: str, split: str = "test") -> BoardKey:
        """Resolve ``dataset`` (``id`` or ``id@version``) to a stored board.

        Without a version, the board of the highest version (by natural sort) is chosen.

        Raises:
            LeaderboardStoreError: If no such board exists (lists the ones that do).
        """
        ident, _, version = dataset.partition("@")
        matches = [
            k
            for k in self.boards()
            if k.dataset == ident
            and k.task == task
            and k.split == split
            and (not version or k.version == version)
        ]
        if not matches:
            known = ", ".join(k.path for k in self.boards()) or "none"
            raise LeaderboardStoreError(
                f"no leaderboard for {dataset} / {task} / {split} under {self.url} "
                f"(boards: {known})"
            )
        return max(matches, key=lambda k: _natural(k.version))


def _natural(version: str) -> tuple[Any, ...]:
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", version))
