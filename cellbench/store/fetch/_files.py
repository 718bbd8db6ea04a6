"""File plumbing for fetching: streamed hashing, locks, atomic finalisation, verified stamps."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import filelock

log = logging.getLogger("cellbench.fetch")

#: Read/write block size for hashing and copying (1 MiB).
BLOCK = 1 << 20


class MirrorError(Exception):
    """This mirror cannot deliver the source; move on to the next one."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class MismatchError(MirrorError):
    """The mirror delivered content whose size or sha256 differs from the card."""


class RetryableError(Exception):
    """A transient failure (reset, timeout, truncated body, 5xx); retry this mirror.

    Args:
        reason: What happened, for the final error message.
        immediate: Retry without backoff (e.g. the server ignored a Range request).
        retry_after: Seconds the server asked us to wait (HTTP ``Retry-After``), if any.
    """

    def __init__(self, reason: str, *, immediate: bool = False, retry_after: float | None = None):
        super().__init__(reason)
        self.reason = reason
        self.immediate = immediate
        self.retry_after = retry_after


def sha256_file(path: str | os.PathLike[str], *, block: int = BLOCK) -> str:
    """Return the sha256 hex digest of a file, read in blocks (constant memory).

    Args:
        path: The file.
        block: Read size in bytes.

    Returns:
        64 lowercase hex digits.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def hash_prefix(path: Path) -> tuple[hashlib._Hash, int]:
    """Hash an existing partial download so that appended bytes extend the same digest."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(BLOCK):
            digest.update(chunk)
            size += len(chunk)
    return digest, size


def part_path(dest: Path) -> Path:
    """The partial-download file for ``dest`` (``<dest>.part``, kept for resuming)."""
    return dest.with_name(dest.name + ".part")


def lock_path(dest: Path) -> Path:
    """The lock file guarding ``dest`` and its ``.part``."""
    return dest.with_name(f".{dest.name}.lock")


def stamp_path(dest: Path) -> Path:
    """The record that ``dest`` was verified (sha256, size, mtime, inode at that time)."""
    return dest.with_name(f".{dest.name}.verified")


def fsync_dir(path: Path) -> None:
    """Flush a directory entry change (rename) to disk where the OS supports it."""
    if os.name == "nt":  # pragma: no cover - directories cannot be opened on Windows
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_file(fh: BinaryIO) -> None:
    """Flush Python buffers and fsync a file opened for writing."""
    fh.flush()
    os.fsync(fh.fileno())


def _stamp_record(dest: Path, sha256: str) -> dict[str, object]:
    st = dest.stat()
    return {"sha256": sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "ino": st.st_ino}


def write_stamp(dest: Path, sha256: str) -> None:
    """Record that ``dest`` (as it is now on disk) has the verified ``sha256``."""
    stamp = stamp_path(dest)
    tmp = stamp.with_name(f"{stamp.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(_stamp_record(dest, sha256)))
    os.replace(tmp, stamp)


def has_valid_stamp(dest: Path, sha256: str) -> bool:
    """True when ``dest`` exists unchanged since it was verified to have ``sha256``."""
    try:
        recorded = json.loads(stamp_path(dest).read_text())
        return recorded == _stamp_record(dest, sha256)
    except (OSError, ValueError):
        return False


def finalize(part: Path, dest: Path, sha256: str) -> Path:
    """Move a verified ``.part`` to its final name atomically and stamp it as verified."""
    os.replace(part, dest)
    fsync_dir(dest.parent)
    write_stamp(dest, sha256)
    return dest


def remove(path: Path) -> None:
    """Delete a file if it exists."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def check_cached(dest: Path, sha256: str, size: int | None = None) -> bool:
    """Return True if ``dest`` holds the expected content; delete it if it does not.

    A file with a matching verified stamp is trusted without re-hashing. Any other file at
    ``dest`` (e.g. copied there by hand, or modified since) is hashed: kept and stamped when it
    matches, deleted when it does not. Call with the lock for ``dest`` held.

    Args:
        dest: A final cache path.
        sha256: Expected digest.
        size: Expected size in bytes, if known.

    Returns:
        Whether ``dest`` can be returned as is.
    """
    if not dest.is_file():
        return False
    if has_valid_stamp(dest, sha256):
        return True
    actual_size = dest.stat().st_size
    if (size is None or actual_size == size) and sha256_file(dest) == sha256:
        write_stamp(dest, sha256)
        return True
    log.warning("removing %s from the cache: its content does not match sha256 %s", dest, sha256)
    remove(dest)
    remove(stamp_path(dest))
    return False


class FileLock:
    """An exclusive inter-process lock on a lock file, from the maintained ``filelock`` package.

    ``filelock`` takes an OS lock (``flock`` on POSIX, ``msvcrt`` on Windows), which the kernel
    releases when its holder exits or dies, so a crashed download never leaves a stale lock; the
    lock file stays in place (``preserve_lock_file``) so a waiting process never locks a file
    that was just unlinked. Every :class:`FileLock` opens its own descriptor, so threads of one
    process are serialised as well. This wrapper only adds the log line shown while blocked.

    Args:
        path: The lock file (created if missing).
        what: What is being waited for, for the log message shown while blocked.
    """

    def __init__(self, path: Path, what: str = "") -> None:
        self.path = path
        self.what = what or str(path)
        self._lock: filelock.BaseFileLock | None = None

    def __enter__(self) -> FileLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = filelock.FileLock(self.path, thread_local=False, preserve_lock_file=True)
        try:
            lock.acquire(timeout=0)
        except filelock.Timeout:
            log.info("waiting for another process fetching %s", self.what)
            lock.acquire()
        self._lock = lock
        return self

    def __exit__(self, *exc_info: object) -> None:
        lock, self._lock = self._lock, None
        if lock is not None:
            lock.release()


@contextlib.contextmanager
def progress_bar(total: int | None, initial: int, desc: str, enabled: bool) -> Iterator[object]:
    """A tqdm byte counter on stderr, disabled unless ``enabled`` and stderr is a terminal."""
    import sys

    from tqdm import tqdm

    bar = tqdm(
        total=total,
        initial=initial,
        desc=desc,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        file=sys.stderr,
        leave=False,
        disable=not (enabled and sys.stderr.isatty()),
    )
    try:
        yield bar
    finally:
        bar.close()
