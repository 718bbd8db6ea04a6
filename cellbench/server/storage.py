"""Server storage: content-addressed uploads, and archives unpacked without trusting them.

Layout of the storage folder (default ``$CELLBENCH_HOME/server``)::

    blobs/sha256/<ab>/<sha256>     every upload, named by its digest (written once)
    challenges/<id>/               derived files of each challenge (cellbench.challenge.prepare)
    keys/                          receipt signing key (0600), public keys, session secret
    work/                          per-job scratch folders (removed after each job)

Uploads of folders (a Zarr prediction store, a TIFF folder, a safetensors package) arrive as
zip or tar archives. :func:`archive_problems` lists everything wrong with one before a byte is
extracted - absolute or ``..`` member names, links and device files, duplicate names, too many
members, too many bytes in total, compression ratios of zip bombs - and :func:`unpack` then
extracts regular files only, counting the bytes actually written, never following a link.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import stat
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from cellbench.errors import ValidationError
from cellbench.submissions.safety import member_name_problems


@dataclass(frozen=True)
class ArchiveLimits:
    """Bounds of an unpacked upload.

    Attributes:
        max_members: Files and folders in the archive.
        max_total_bytes: Bytes after unpacking.
        max_ratio: Highest compression ratio of one zip member.
    """

    max_members: int = 20_000
    max_total_bytes: int = 4 << 30
    max_ratio: float = 200.0


class BlobStore:
    """Uploads stored once under their sha256.

    Args:
        root: The storage folder.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.blobs = self.root / "blobs" / "sha256"
        self.blobs.mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        """Where the blob with this digest lives."""
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ValueError(f"not a sha256 digest: {digest!r}")
        return self.blobs / digest[:2] / digest

    def put(self, source: BinaryIO, max_bytes: int) -> tuple[str, int]:
        """Copy a stream in, hashing as it goes; refuse more than ``max_bytes``.

        Returns:
            ``(sha256, size)``.

        Raises:
            ValidationError: If the stream is larger than ``max_bytes``.
        """
        tmp = self.blobs / f".upload-{secrets.token_hex(8)}"
        h = hashlib.sha256()
        size = 0
        try:
            with tmp.open("xb") as out:
                for block in iter(lambda: source.read(1 << 20), b""):
                    size += len(block)
                    if size > max_bytes:
                        raise ValidationError(
                            [f"upload is larger than the limit of {max_bytes} bytes"], "upload"
                        )
                    h.update(block)
                    out.write(block)
            digest = h.hexdigest()
            final = self.path(digest)
            final.parent.mkdir(exist_ok=True)
            if final.exists():
                tmp.unlink()
            else:
                os.chmod(tmp, 0o400)
                os.replace(tmp, final)
            return digest, size
        finally:
            tmp.unlink(missing_ok=True)


def archive_kind(path: Path) -> str | None:
    """``zip``, ``tar`` (plain or compressed) or None."""
    if zipfile.is_zipfile(path):
        with path.open("rb") as fh:
            if fh.read(4) in (b"PK\x03\x04", b"PK\x05\x06"):
                return "zip"
    try:
        if tarfile.is_tarfile(path):
            return "tar"
    except (OSError, tarfile.TarError):
        return None
    return None


def _name_problems(name: str) -> list[str]:
    out = member_name_problems(name)
    parts = PurePosixPath(name).parts
    if any(p.startswith("..") and p != ".." for p in parts) or any(len(p) > 255 for p in parts):
        out.append(f"member {name!r}: unusual path component")
    return out


def _zip_members(path: Path) -> Iterator[tuple[str, str, int, int]]:
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            fmt = stat.S_IFMT(info.external_attr >> 16)  # 0: no Unix mode recorded
            kind = "dir" if info.is_dir() else "file"
            if fmt == stat.S_IFLNK:
                kind = "symlink"
            elif fmt and fmt not in (stat.S_IFREG, stat.S_IFDIR):
                kind = "special"
            yield info.filename, kind, info.file_size, info.compress_size


def _tar_members(path: Path) -> Iterator[tuple[str, str, int, int]]:
    with tarfile.open(path, "r:*") as tar:
        for info in tar:
            if info.isdir():
                kind = "dir"
            elif info.isreg():
                kind = "file"
            elif info.issym():
                kind = "symlink"
            elif info.islnk():
                kind = "hardlink"
            else:
                kind = "special"
            yield info.name, kind, info.size, info.size


def archive_problems(path: Path, limits: ArchiveLimits) -> list[str]:
    """Everything wrong with an uploaded archive, found without extracting it."""
    kind = archive_kind(path)
    if kind is None:
        return ["not a zip or tar archive"]
    members = _zip_members if kind == "zip" else _tar_members
    problems: list[str] = []
    seen: set[str] = set()
    count = total = 0
    try:
        for name, what, size, packed in members(path):
            count += 1
            if count > limits.max_members:
                problems.append(f"more than {limits.max_members} members")
                break
            problems += _name_problems(name)
            clean = name.rstrip("/")
            if clean in seen:
                problems.append(f"member {name!r} appears twice")
            seen.add(clean)
            if what in ("symlink", "hardlink"):
                link = "symbolic" if what == "symlink" else "hard"
                problems.append(f"member {name!r} is a {link} link")
            elif what == "special":
                problems.append(f"member {name!r} is not a regular file or folder")
            total += size
            if kind == "zip" and packed and size / packed > limits.max_ratio:
                problems.append(
                    f"member {name!r} expands {packed} bytes into {size} "
                    f"(ratio over {limits.max_ratio:g}: zip bomb?)"
                )
            if total > limits.max_total_bytes:  # stop before reading (decompressing) more
                problems.append(
                    f"unpacks to more than {limits.max_total_bytes} bytes (declared sizes)"
                )
                break
    except (zipfile.BadZipFile, tarfile.TarError, OSError, EOFError) as err:
        problems.append(f"unreadable archive ({type(err).__name__}: {err})")
    return problems


def _copy_capped(src: BinaryIO, dest: Path, budget: list[int]) -> None:
    with dest.open("xb") as out:
        for block in iter(lambda: src.read(1 << 20), b""):
            budget[0] -= len(block)
            if budget[0] < 0:
                raise ValidationError(["archive unpacks to more bytes than it declares"], "upload")
            out.write(block)


def unpack(path: Path, dest: Path, limits: ArchiveLimits) -> Path:
    """Extract a vetted archive's regular files and folders into ``dest`` (must not exist).

    Returns:
        The single top-level folder of the archive, or ``dest`` when there are several.

    Raises:
        ValidationError: Listing every problem of the archive (nothing is extracted then).
    """
    problems = archive_problems(path, limits)
    if problems:
        raise ValidationError(problems, context="upload")
    dest.mkdir(parents=True)
    root = dest.resolve()
    budget = [limits.max_total_bytes]

    def target(name: str) -> Path:
        out = (root / name).resolve()
        if not out.is_relative_to(root):  # already refused above; checked again here
            raise ValidationError([f"member {name!r} leaves the upload folder"], "upload")
        return out

    if archive_kind(path) == "zip":
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                out = target(info.filename)
                if info.is_dir():
                    out.mkdir(parents=True, exist_ok=True)
                    continue
                out.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src:
                    _copy_capped(src, out, budget)
    else:
        with tarfile.open(path, "r:*") as tar:
            for info in tar:
                out = target(info.name)
                if info.isdir():
                    out.mkdir(parents=True, exist_ok=True)
                    continue
                out.parent.mkdir(parents=True, exist_ok=True)
                src = tar.extractfile(info)
                if src is None:
                    raise ValidationError([f"member {info.name!r} cannot be read"], "upload")
                with src:
                    _copy_capped(src, out, budget)
    entries = list(dest.iterdir())
    if len(entries) == 1 and entries[0].is_dir():
        return entries[0]
    return dest


def safe_filename(name: str, default: str = "upload") -> str:
    """A harmless file name from a client-supplied one (no folders, no odd characters)."""
    base = PurePosixPath(name.replace("\\", "/")).name
    cleaned = "".join(c if c.isalnum() or c in "._-" else "_" for c in base)[:100].lstrip(".")
    return cleaned or default


def remove_tree(path: Path) -> None:
    """Remove a scratch folder, ignoring what is already gone."""
    shutil.rmtree(path, ignore_errors=True)
