"""Card sources that are not plain pinned downloads: unpinned upstream and manual downloads.

A card source normally carries the ``sha256`` its upstream publishes (or one a maintainer
recorded), and :func:`cellbench.store.fetch.fetch` verifies every download against it. Two
other kinds exist in the field's data, and the card says which:

``sha256: unpinned``
    The upstream publishes no checksum (the Cell Tracking Challenge zips, many lab servers).
    The first pull downloads the file, hashes it, and, once the store built from it is complete
    (and matches the card's store checksum, when it has one), records the sha256 in the user's
    lock file (:func:`cellbench.settings.lock_file`, JSON). Every later download, on this
    machine, is verified against that record, so a file that changes upstream fails loudly.
    ``cellbench datasets pin ID`` writes the recorded sha256s back into the card (maintainers).

``manual: <page URL>``
    The data needs a login or its license forbids redistribution: cellbench never downloads
    it. The source names the ``filename`` to download from that page (and ``instructions``);
    the user puts it in :func:`cellbench.settings.manual_dir` and pulls again; the file is then
    verified like any other (``sha256`` pinned, or ``unpinned`` and recorded).

The lock file maps ``"<id>@<version>"`` to ``{source name: {"sha256", "size", "url",
"recorded"}}``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cellbench import settings
from cellbench.errors import CardError, ChecksumError, FetchError, OfflineError
from cellbench.store.fetch._files import (
    FileLock,
    MirrorError,
    RetryableError,
    check_cached,
    finalize,
    lock_path,
    part_path,
    sha256_file,
)
from cellbench.store.fetch.source import Source, UrlKind, redact, url_basename, url_kind

#: The ``sha256`` value of a source whose upstream publishes no checksum.
UNPINNED = "unpinned"
#: Card keys of this module (removed before the entry is given to :class:`Source`).
EXTRA_KEYS = frozenset({"manual", "instructions"})


@dataclass(frozen=True)
class Recorded:
    """A sha256 first seen on a pull, to be written to the lock file once the build succeeds."""

    key: str
    name: str
    sha256: str
    size: int
    url: str


def is_unpinned(entry: Mapping[str, Any]) -> bool:
    """Whether a card source says its upstream publishes no checksum."""
    return str(entry.get("sha256", "")).strip().lower() == UNPINNED


def read_lock() -> dict[str, dict[str, dict[str, Any]]]:
    """The user's lock file (empty when there is none).

    Raises:
        CardError: The lock file exists but is not valid JSON of the expected shape.
    """
    path = settings.lock_file()
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
            raise ValueError("expected {'<id>@<version>': {source: {sha256, ...}}}")
    except ValueError as err:
        raise CardError(f"{path}: unreadable source lock file ({err}); fix or delete it") from None
    return data


def record(entries: list[Recorded]) -> Path | None:
    """Add first-pull sha256s to the lock file (atomically: temp file, then rename)."""
    if not entries:
        return None
    path = settings.lock_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(path.with_name(f".{path.name}.lock"), "source lock file"):
        data = read_lock()
        now = datetime.now(UTC).isoformat(timespec="seconds")
        for e in entries:
            data.setdefault(e.key, {})[e.name] = {
                "sha256": e.sha256,
                "size": e.size,
                "url": e.url,
                "recorded": now,
            }
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    return path


def recorded_sha256(key: str, name: str) -> str | None:
    """The sha256 recorded for source ``name`` of dataset ``key`` (``id@version``), if any."""
    entry = read_lock().get(key, {}).get(name)
    return str(entry["sha256"]) if isinstance(entry, dict) and "sha256" in entry else None


def _pinned_entry(entry: Mapping[str, Any], sha256: str) -> dict[str, Any]:
    out = {k: v for k, v in entry.items() if k not in EXTRA_KEYS}
    out["sha256"] = sha256
    return out


def manual_instructions(key: str, dataset_id: str, name: str, entry: Mapping[str, Any]) -> str:
    """What the user must do to provide a manual source (one paragraph)."""
    filename = entry.get("filename") or "?"
    dest = settings.manual_dir(dataset_id) / str(filename)
    sha = entry.get("sha256")
    check = (
        f"it must have sha256 {sha}"
        if sha and not is_unpinned(entry)
        else "its sha256 is recorded on the first pull"
    )
    how = str(entry.get("instructions", "")).strip()
    return (
        f"dataset {key}: source {name!r} must be downloaded by hand "
        f"(login or license: cellbench does not download it). Open {entry.get('manual')}, "
        + (f"{how} " if how else "")
        + f"download {filename!r} and put it at {dest} ({check}), then pull again"
    )


def fetch_card_source(
    key: str,
    dataset_id: str,
    name: str,
    entry: Mapping[str, Any],
    *,
    base_dir: Path | None,
    offline: bool,
    progress: bool,
    pending: list[Recorded],
) -> Path:
    """Return the verified local file of one card source, whatever its kind.

    Args:
        key: ``id@version`` of the dataset (the lock file's key).
        dataset_id: The dataset id (the manual folder's name).
        name: The source's name in the card.
        entry: The card's source mapping.
        base_dir: The card's folder (relative local paths).
        offline: Forbid network access.
        progress: Show progress bars.
        pending: First-pull records are appended here; the caller writes them with
            :func:`record` once the build succeeded.

    Returns:
        The verified file.

    Raises:
        FetchError: A manual file is missing (the message says exactly what to do), or the
            download failed.
        ChecksumError: The file does not match the card's or the recorded sha256.
    """
    from cellbench.store.fetch import fetch

    where = f"dataset {key} source {name!r}"
    if "manual" in entry:
        filename = entry.get("filename")
        if not filename:
            raise CardError(f"{where}: a manual source needs 'filename' (the file to download)")
        path = settings.manual_dir(dataset_id) / str(filename)
        if not path.is_file():
            raise FetchError(manual_instructions(key, dataset_id, name, entry))
        local = {k: v for k, v in entry.items() if k not in EXTRA_KEYS}
        local["url"] = str(path)
        entry = local
    if not is_unpinned(entry):
        source = Source.from_card(entry, base_dir=base_dir, context=where)
        try:
            return fetch(source, offline=offline, progress=progress)
        except ChecksumError as err:
            if "manual" in entry or url_kind(source.urls[0]) is UrlKind.LOCAL:
                raise ChecksumError(f"{where}: {err} (replace the file by the right one)") from None
            raise
    recorded = recorded_sha256(key, name)
    if recorded is not None:
        source = Source.from_card(_pinned_entry(entry, recorded), base_dir=base_dir, context=where)
        try:
            return fetch(source, offline=offline, progress=progress)
        except ChecksumError as err:
            raise ChecksumError(
                f"{where} (unpinned upstream): {err}. The sha256 recorded on your first pull "
                f"({settings.lock_file()}) no longer matches: the file changed upstream. "
                f"If the change is expected, delete the entry {key}/{name} from the lock file "
                "and pull again"
            ) from None
    return _first_pull(key, name, entry, base_dir, offline, progress, pending)


def _first_pull(
    key: str,
    name: str,
    entry: Mapping[str, Any],
    base_dir: Path | None,
    offline: bool,
    progress: bool,
    pending: list[Recorded],
) -> Path:
    """Download an unpinned source, hash it, cache it under its sha256, queue the record."""
    from cellbench.store.cache import downloads_dir
    from cellbench.store.fetch._fs import download_fsspec, resolve_storage_options
    from cellbench.store.fetch._http import download_http

    where = f"dataset {key} source {name!r} (unpinned upstream)"
    if "member" in entry or "member_sha256" in entry:
        raise CardError(f"{where}: an unpinned source cannot name a member; pin it first")
    raw = entry.get("urls", entry.get("url"))
    urls = [raw] if isinstance(raw, str) else list(raw or [])
    if not urls:
        raise CardError(f"{where}: missing field 'url' (or 'urls')")
    filename = str(entry.get("filename") or url_basename(urls[0]))
    size = entry.get("size")
    stage = downloads_dir() / "unpinned" / key.replace("@", "-") / name
    stage.mkdir(parents=True, exist_ok=True)
    part = part_path(stage / filename)
    reasons: list[str] = []
    for url in urls:
        kind = url_kind(url)
        try:
            if kind is UrlKind.LOCAL:
                path = Path(url).expanduser()
                if base_dir is not None and not path.is_absolute():
                    path = base_dir / path
                if not path.is_file():
                    raise MirrorError("no such file")
                digest, got = sha256_file(path), path.stat().st_size
                source_file = path
            else:
                if offline and kind in (UrlKind.HTTP, UrlKind.PYPI):
                    reasons.append(f"{redact(url)}: skipped, offline")
                    continue
                if kind is UrlKind.HTTP:
                    digest = _retrying(
                        lambda u=url: download_http(
                            u, part, size=size, timeout=30.0, progress=progress, desc=filename
                        )
                    )
                elif kind is UrlKind.FSSPEC:
                    digest = download_fsspec(
                        url,
                        part,
                        storage_options=resolve_storage_options(
                            url, dict(entry.get("storage_options") or {})
                        ),
                        size=size,
                        progress=progress,
                        desc=filename,
                    )
                else:
                    raise MirrorError("pypi:// sources are verified by member_sha256; pin them")
                got = part.stat().st_size
                source_file = part
        except MirrorError as err:
            reasons.append(f"{redact(url)}: {err.reason}")
            part.unlink(missing_ok=True)
            continue
        if size is not None and got != size:
            reasons.append(f"{redact(url)}: {got} bytes, card says {size}")
            part.unlink(missing_ok=True)
            continue
        pending.append(Recorded(key, name, digest, got, url))
        if source_file is not part:  # a local file (e.g. a manual download) is used in place
            return source_file
        from cellbench.store.fetch.core import cache_file

        target = cache_file(digest, filename)
        target.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(lock_path(target), where):
            if not check_cached(target, digest):
                finalize(part, target, digest)
        return target
    message = f"could not fetch {where}: " + "; ".join(reasons)
    if offline and all(r.endswith("skipped, offline") for r in reasons):
        raise OfflineError(message + "; run without --offline to download it")
    raise FetchError(message)


def _retrying(call: Any, attempts: int = 3) -> str:
    """Run a download, resuming after transient failures (the part file keeps the bytes)."""
    for i in range(attempts):
        try:
            return call()
        except RetryableError as err:
            if i == attempts - 1:
                raise MirrorError(f"{err.reason} (gave up after {attempts} attempts)") from None
    raise AssertionError("unreachable")


# ---------------------------------------------------------------------------- pin
def pin_card_text(text: str, shas: Mapping[str, str], store: str | None) -> tuple[str, list[str]]:
    """Write recorded sha256s into a card's YAML text, keeping every other line as it is.

    Args:
        text: The card's text.
        shas: ``{source name: sha256}`` to write over ``sha256: unpinned``.
        store: The store digest for ``checksums.store`` (``None``: remove the line, since
            pinning sources changes the digest).

    Returns:
        The new text and the names of the sources that were pinned.
    """
    lines = text.splitlines(keepends=True)
    out: list[str] = []
    section = None
    current = None
    pinned: list[str] = []
    in_checksums = False
    wrote_store = False
    for line in lines:
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if indent == 0 and stripped:
            section = stripped.split(":", 1)[0]
            current = None
            if in_checksums and store is not None and not wrote_store:
                out.append(f"  store: {store}\n")
                wrote_store = True
            in_checksums = section == "checksums"
        elif section == "sources" and indent == 2 and stripped.endswith(":"):
            current = stripped[:-1]
        if (
            section == "sources"
            and current in shas
            and indent == 4
            and stripped.replace(" ", "") == f"sha256:{UNPINNED}"
        ):
            out.append(f"{' ' * indent}sha256: {shas[current]}\n")
            pinned.append(current)
            continue
        if in_checksums and stripped.startswith("store:"):
            if store is not None and not wrote_store:
                out.append(f"  store: {store}\n")
                wrote_store = True
            continue
        out.append(line)
    if store is not None and not wrote_store:
        if in_checksums:
            out.append(f"  store: {store}\n")
        else:
            if out and not out[-1].endswith("\n"):
                out[-1] += "\n"
            out.append(f"checksums:\n  store: {store}\n")
    return "".join(out), pinned
