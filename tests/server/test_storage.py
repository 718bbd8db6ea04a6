"""Uploads: content-addressed blobs, archives vetted before and capped during extraction."""

import io
import tarfile
import zipfile

import pytest

from cellbench.errors import ValidationError
from cellbench.server.storage import (
    ArchiveLimits,
    BlobStore,
    archive_problems,
    safe_filename,
    unpack,
)


def _zip(path, members, symlink=None):
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = 0o120777 << 16
            zf.writestr(info, "/etc/passwd")
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_blobs_are_content_addressed_and_capped(tmp_path):
    blobs = BlobStore(tmp_path)
    a, n = blobs.put(io.BytesIO(b"hello"), 10)
    b, _ = blobs.put(io.BytesIO(b"hello"), 10)
    assert a == b and n == 5 and blobs.path(a).read_bytes() == b"hello"
    with pytest.raises(ValidationError, match="larger than the limit of 4 bytes"):
        blobs.put(io.BytesIO(b"hello"), 4)
    assert [p.name for p in (tmp_path / "blobs" / "sha256").rglob("*") if p.is_file()] == [a]


def test_hostile_archives_listed_and_never_extracted(tmp_path):
    limits = ArchiveLimits(max_members=50, max_total_bytes=1 << 20)
    bad = _zip(
        tmp_path / "bad.zip",
        {"ok/a": b"1", "../escape": b"x", "/abs": b"x", "ok/bomb": b"\0" * (4 << 20)},
        symlink="ok/link",
    )
    problems = archive_problems(bad, limits)
    text = "\n".join(problems)
    for expected in (
        "path traversal",
        "absolute path",
        "symbolic link",
        "zip bomb?",
        "more than 1048576",
    ):
        assert expected in text, expected
    with pytest.raises(ValidationError):
        unpack(bad, tmp_path / "out", limits)
    assert not (tmp_path / "out").exists() and not (tmp_path / "escape").exists()
    many = _zip(tmp_path / "many.zip", {f"f{i}": b"" for i in range(60)})
    assert archive_problems(many, limits) == ["more than 50 members"]
    tar = tmp_path / "t.tar"
    with tarfile.open(tar, "w") as tf:
        for name, kind in (("d/hard", tarfile.LNKTYPE), ("d/dev", tarfile.CHRTYPE)):
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, "x"
            tf.addfile(info)
    assert archive_problems(tar, limits) == [
        "member 'd/hard' is a hard link",
        "member 'd/dev' is not a regular file or folder",
    ]
    (tmp_path / "plain").write_bytes(b"not an archive")
    assert archive_problems(tmp_path / "plain", limits) == ["not a zip or tar archive"]


def test_good_archive_unpacks_to_its_folder(tmp_path):
    good = _zip(tmp_path / "g.zip", {"p.zarr/zarr.json": b"{}", "p.zarr/a/b": b"xyz"})
    root = unpack(good, tmp_path / "out", ArchiveLimits())
    assert root == tmp_path / "out" / "p.zarr" and (root / "a" / "b").read_bytes() == b"xyz"
    assert safe_filename("../../<i>evil.zip") == "_i_evil.zip"
    assert safe_filename("..") == "upload"
