"""Extract one member of a zip (wheel) or tar archive into a verified ``.part`` file."""

from __future__ import annotations

import difflib
import hashlib
import lzma
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from cellbench.store.fetch._files import BLOCK, MirrorError, sync_file


def _normalize(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return name.rstrip("/")


def _candidates(member: str, names: list[str], lenient: bool) -> list[str]:
    """Names under which ``member`` may appear, most specific first.

    With ``lenient`` (source distributions), the path may also be given relative to the
    archive's single top folder (``NAME-VERSION/``) or to its ``src/`` folder, so that the
    member path written for a wheel also finds the file in the sdist.
    """
    found = [member]
    if lenient:
        tops = {n.split("/", 1)[0] for n in names if "/" in n}
        if len(tops) == 1:
            (top,) = tops
            found += [f"{top}/{member}", f"{top}/src/{member}"]
    return found


@contextmanager
def _open_member(archive: Path, member: str, lenient: bool) -> Iterator[BinaryIO]:
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            infos = {_normalize(i.filename): i for i in zf.infolist() if not i.is_dir()}
            for name in _candidates(member, list(infos), lenient):
                if name in infos:
                    with zf.open(infos[name]) as fh:
                        yield fh  # type: ignore[misc]
                    return
            _missing(archive, member, list(infos))
    try:
        tf = tarfile.open(archive, "r:*")  # noqa: SIM115 - closed by the `with tf` below
    except tarfile.TarError:
        raise MirrorError(
            f"{archive.name} is not a zip, wheel or tar archive; cannot extract {member!r}"
        ) from None
    with tf:
        members = [m for m in tf.getmembers() if m.isfile()]
        by_name = {_normalize(m.name): m for m in members}
        for name in _candidates(member, list(by_name), lenient):
            if name in by_name:
                fh = tf.extractfile(by_name[name])
                assert fh is not None  # regular files always have content
                with fh:
                    yield fh  # type: ignore[misc]
                return
        _missing(archive, member, list(by_name))


def _missing(archive: Path, member: str, names: list[str]) -> None:
    close = difflib.get_close_matches(member, names, n=3, cutoff=0.5)
    if not close:
        basename = PurePosixPath(member).name
        close = [n for n in names if PurePosixPath(n).name == basename][:3]
    hint = f"; similar: {', '.join(close)}" if close else ""
    raise MirrorError(f"member {member!r} not found in {archive.name}{hint}")


def extract_member(archive: Path, member: str, part: Path, *, lenient: bool = False) -> str:
    """Stream ``member`` of ``archive`` into ``part`` and return its sha256.

    Archives are read in place; only the requested member is written, to ``part`` (never to a
    path taken from the archive, so hostile member names cannot escape the cache).

    Args:
        archive: A zip/wheel or a (compressed) tar file.
        member: POSIX path of the file inside the archive (``./`` prefixes are ignored).
        part: Destination ``.part`` file (overwritten).
        lenient: Also look under the archive's top folder and its ``src/`` (sdists).

    Returns:
        The sha256 hex digest of the extracted bytes.

    Raises:
        MirrorError: Not an archive, or the member is missing (close names are suggested).
    """
    digest = hashlib.sha256()
    try:
        with _open_member(archive, _normalize(member), lenient) as src, open(part, "wb") as out:
            while chunk := src.read(BLOCK):
                out.write(chunk)
                digest.update(chunk)
            sync_file(out)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, lzma.LZMAError) as exc:
        raise MirrorError(f"corrupt archive {archive.name}: {type(exc).__name__}: {exc}") from None
    return digest.hexdigest()
