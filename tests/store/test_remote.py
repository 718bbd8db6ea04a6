"""Stores at fsspec URLs on a real S3 server (moto on 127.0.0.1): upload, streaming verified
reads through the bounded chunk cache, corruption, interrupted uploads, scoring from S3."""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from cellbench.errors import CorruptStoreError, StoreError
from cellbench.predictions import digest_path
from cellbench.store.zarr_store import DatasetStore, build_store
from tests.factories import toy_samples

pytest.importorskip("s3fs")
pytest.importorskip("moto.server")

CARD = {"id": "toy", "version": "1", "tasks": ["instance-segmentation"]}
TASK = "instance-segmentation"


@pytest.fixture
def s3(s3_endpoint, s3_bucket):
    """The moto server as the environment's S3 endpoint, and a fresh bucket on it."""
    return _Bucket(s3_endpoint.client, s3_bucket)


class _Bucket:
    def __init__(self, client, bucket: str) -> None:
        self.client, self.bucket = client, bucket


def _keys(s3, prefix: str) -> list[str]:
    out = s3.client.list_objects_v2(Bucket=s3.bucket, Prefix=prefix)
    return sorted(o["Key"] for o in out.get("Contents", []))


@pytest.fixture
def local_store(tmp_path) -> DatasetStore:
    return build_store(toy_samples("instance-segmentation", 8), tmp_path / "toy.zarr", CARD)


def _upload(local: DatasetStore, url: str) -> DatasetStore:
    from cellbench.store.remote import upload_store

    upload_store(local.path, url)
    return DatasetStore.open(url)


def test_remote_store_reads_equal_local_chunk_by_chunk(s3, local_store):
    from cellbench.store.remote import default_cache

    url = f"s3://{s3.bucket}/stores/toy.zarr"
    remote = _upload(local_store, url)
    assert remote.is_remote and remote.path == url
    assert remote.checksum == local_store.checksum
    assert remote.sample_ids("test") == local_store.sample_ids("test")
    cache = default_cache()
    before = cache.size
    sid = local_store.sample_ids()[0]
    np.testing.assert_array_equal(remote.image(sid)[...], local_store.image(sid)[...])
    # only that sample's chunk was fetched (plus metadata), not the store
    image_chunk = local_store.manifest["arrays"][f"images/{sid}/0"]["chunk_sha256"]
    assert (cache.root / next(iter(image_chunk.values()))[:2]).is_dir()
    fetched = cache.size - before
    whole = sum(p.stat().st_size for p in local_store.path.rglob("*") if p.is_file())
    assert 0 < fetched < whole / 4
    for s in local_store.sample_ids():
        a, b = remote.sample(s), local_store.sample(s)
        np.testing.assert_array_equal(a.instances, b.instances)
        assert a.metadata == b.metadata and a.pixel_size == b.pixel_size
    assert remote.verify() == []


def test_corrupt_remote_chunk_is_an_error_naming_it(s3, local_store):
    url = f"s3://{s3.bucket}/c/toy.zarr"
    remote = _upload(local_store, url)
    sid = local_store.sample_ids()[1]
    key = f"c/toy.zarr/images/{sid}/labels/instances/0/c/0/0"
    body = s3.client.get_object(Bucket=s3.bucket, Key=key)["Body"].read()
    s3.client.put_object(Bucket=s3.bucket, Key=key, Body=body[:-1] + bytes([body[-1] ^ 1]))
    with pytest.raises(CorruptStoreError) as err:
        remote.labels(sid)[...]
    msg = str(err.value)
    assert f"images/{sid}/labels/instances/0" in msg and "c/0/0" in msg and sid in msg
    problems = remote.verify()
    assert len(problems) == 1 and f"images/{sid}/labels/instances/0" in problems[0]


def test_corrupt_cached_chunk_is_an_error_then_refetched(s3, local_store):
    from cellbench.store.remote import default_cache

    url = f"s3://{s3.bucket}/cc/toy.zarr"
    remote = _upload(local_store, url)
    sid = local_store.sample_ids()[2]
    want = np.asarray(local_store.image(sid)[...])
    np.testing.assert_array_equal(remote.image(sid)[...], want)  # now cached
    digest = next(iter(local_store.manifest["arrays"][f"images/{sid}/0"]["chunk_sha256"].values()))
    entry = default_cache().root / digest[:2] / digest
    entry.write_bytes(b"garbage" + entry.read_bytes()[7:])
    with pytest.raises(CorruptStoreError, match=rf"images/{sid}/0.*c/0/0/0.*chunk cache"):
        DatasetStore.open(url).image(sid)[...]
    assert not entry.exists()  # the damaged copy is gone, nothing half-written left
    np.testing.assert_array_equal(DatasetStore.open(url).image(sid)[...], want)
    assert entry.is_file() and not list(entry.parent.glob(".*"))


def test_chunk_cache_is_bounded_and_evicts_least_recently_used(tmp_path):
    from cellbench.store.remote import ChunkCache

    cache = ChunkCache(tmp_path / "chunks", limit=250)
    for name in ("aa1", "aa2", "bb3"):
        cache.put(name, bytes(100))
        assert cache.size <= 250
    assert cache.get("aa1") is None  # evicted first (oldest)
    assert cache.get("aa2") == bytes(100)  # now most recently used
    cache.put("cc4", bytes(100))  # evicts bb3, not aa2
    assert cache.get("bb3") is None and cache.get("aa2") is not None
    cache.put("big", bytes(300))  # larger than the bound: not cached
    assert cache.get("big") is None
    files = [f for f in (tmp_path / "chunks").rglob("*") if f.is_file()]
    assert sum(f.stat().st_size for f in files) <= 250
    # a new process sees what is on disk
    again = ChunkCache(tmp_path / "chunks", limit=250)
    assert again.size == 200 and again.get("cc4") == bytes(100)


def test_chunk_cache_setting(monkeypatch):
    from cellbench import settings

    monkeypatch.setenv("CELLBENCH_CHUNK_CACHE", "3 MiB")
    assert settings.chunk_cache_bytes() == 3 * 2**20
    monkeypatch.setenv("CELLBENCH_CHUNK_CACHE", "0")
    assert settings.chunk_cache_bytes() == 0
    monkeypatch.setenv("CELLBENCH_CHUNK_CACHE", "lots")
    with pytest.raises(ValueError, match="CELLBENCH_CHUNK_CACHE: 'lots' is not a size"):
        settings.chunk_cache_bytes()


def test_interrupted_upload_leaves_nothing_that_opens(s3, local_store, monkeypatch):
    import s3fs

    from cellbench.store.remote import upload_store

    url = f"s3://{s3.bucket}/cut/toy.zarr"
    calls = {"n": 0}
    original = s3fs.S3FileSystem._put_file

    async def failing_put_file(self, lpath, rpath, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 20:  # the network goes away mid-upload
            raise ConnectionError("connection reset by peer")
        return await original(self, lpath, rpath, *args, **kwargs)

    monkeypatch.setattr(s3fs.S3FileSystem, "_put_file", failing_put_file)
    with pytest.raises(StoreError, match="upload failed after"):
        upload_store(local_store.path, url, batch=8)
    assert calls["n"] >= 20
    assert not any(k.endswith("cut/toy.zarr/zarr.json") for k in _keys(s3, "cut/"))
    with pytest.raises(StoreError, match="not a cellbench store"):
        DatasetStore.open(url)
    monkeypatch.setattr(s3fs.S3FileSystem, "_put_file", original)
    # the root zarr.json is the very last object written
    written: list[str] = []

    async def recording_put_file(self, lpath, rpath, *args, **kwargs):
        written.append(rpath)
        return await original(self, lpath, rpath, *args, **kwargs)

    monkeypatch.setattr(s3fs.S3FileSystem, "_put_file", recording_put_file)
    upload_store(local_store.path, url)
    assert written[-1].endswith("cut/toy.zarr/zarr.json")
    assert written[-2].endswith("cut/toy.zarr/manifest.json")
    assert DatasetStore.open(url).checksum == local_store.checksum
    with pytest.raises(StoreError, match="already there"):
        upload_store(local_store.path, url)
    # files that are not a store are never replaced silently
    s3.client.put_object(Bucket=s3.bucket, Key="other/data.zarr/keep.txt", Body=b"mine")
    with pytest.raises(StoreError, match="holds files but no store"):
        upload_store(local_store.path, f"s3://{s3.bucket}/other/data.zarr")
    assert _keys(s3, "other/") == ["other/data.zarr/keep.txt"]


def test_cli_pull_to_s3_verify_and_score_from_s3_equal_local(s3, tmp_path):
    from cellbench.cli import main
    from cellbench.predictions import Prediction, PredictionSet, write_predictions
    from cellbench.registry import pull
    from cellbench.store.remote import filesystem

    local = pull("synthetic-nuclei", options={"n_images": 8}, progress=False)  # cached build
    runner = CliRunner()
    res = runner.invoke(
        main, ["datasets", "pull", "synthetic-nuclei", "--to", f"s3://{s3.bucket}/ds", "-q"]
    )
    assert res.exit_code == 0, res.output
    url = f"s3://{s3.bucket}/ds/{local.ref}.zarr"
    assert url in res.output and local.checksum in res.output
    assert _keys(s3, f"ds/{local.ref}.zarr/zarr.json")
    res = runner.invoke(main, ["datasets", "verify", url, "-q"])
    assert res.exit_code == 0 and "OK" in res.output, res.output

    rng = np.random.default_rng(0)
    preds = []
    for sid in local.sample_ids("test"):
        mask = np.asarray(local.labels(sid)[...]).copy()
        ids = np.unique(mask)[1:]
        mask[np.isin(mask, rng.choice(ids, size=max(1, ids.size // 3), replace=False))] = 0
        preds.append(Prediction(sid, mask=mask))
    pset = PredictionSet.from_predictions(
        "instance-segmentation", preds, dataset=local.id, dataset_version=local.version
    )
    write_predictions(tmp_path / "preds.zarr", pset)
    fs, _ = filesystem(f"s3://{s3.bucket}")
    fs.put(str(tmp_path / "preds.zarr"), f"{s3.bucket}/sub/preds.zarr", recursive=True)

    reports = {}
    for name, dataset, predictions in (
        ("local", local.ref, str(tmp_path / "preds.zarr")),
        ("s3", url, f"s3://{s3.bucket}/sub/preds.zarr"),
    ):
        out = tmp_path / f"{name}.json"
        res = runner.invoke(
            main,
            ["score", "--task", "instance-segmentation", "--dataset", dataset, predictions,
             "--bootstrap", "50", "--out", str(out), "-q"],
        )  # fmt: skip
        assert res.exit_code == 0, res.output
        reports[name] = json.loads(out.read_text())
    a, b = reports["local"], reports["s3"]
    assert a["metrics"] == b["metrics"] and a["headline"] == b["headline"]
    assert a["groups"] == b["groups"] and a["per_sample"] == b["per_sample"]
    assert 0 < a["headline"]["value"] < 1
    assert b["provenance"]["extra"]["predictions_source"] == f"s3://{s3.bucket}/sub/preds.zarr"
    # the set's digest is its content's, on S3 as in the folder it was uploaded from
    digest = a["provenance"]["predictions_sha256"]
    assert digest == b["provenance"]["predictions_sha256"] == digest_path(tmp_path / "preds.zarr")
    assert digest != hashlib.sha256().hexdigest()  # (what the S3 set digested to before)


def test_format_1_store_is_refused_remotely(s3, tmp_path):
    from cellbench.store.format import FORMATS

    old = build_store(
        toy_samples("instance-segmentation", 4), tmp_path / "v1.zarr", CARD, fmt=FORMATS["1"]
    )
    url = f"s3://{s3.bucket}/v1/toy.zarr"
    from cellbench.store.remote import upload_store

    upload_store(old.path, url)
    with pytest.raises(StoreError, match=r"format 1 cannot be read remotely.*upgrade"):
        DatasetStore.open(url)


def test_missing_prefix_is_not_a_store(s3):
    with pytest.raises(StoreError, match="not a cellbench store"):
        DatasetStore.open(f"s3://{s3.bucket}/nothing/here.zarr")


def test_training_reader_streams_only_the_chunks_a_patch_touches(s3, tmp_path, monkeypatch):
    from cellbench.store.sample import Sample
    from cellbench.training.data.reader import StoreReader

    monkeypatch.setenv("CELLBENCH_CHUNK_CACHE", "10MB")
    rng = np.random.default_rng(0)
    samples = [
        Sample(
            id=f"big-{i}",
            image=rng.integers(0, 4096, (1, 600, 600), dtype=np.uint16),
            instances=np.zeros((600, 600), np.uint16),
            channel_names=["nuclei"],
            split="train",
        )
        for i in range(2)
    ]
    local = build_store(samples, tmp_path / "big.zarr", CARD)
    url = f"s3://{s3.bucket}/big/big.zarr"
    _upload(local, url)
    reader = StoreReader(url, {"mask": "instances"})
    region = (slice(300, 364), slice(10, 74))  # inside tile (1, 0) of a 3 x 3 grid
    patch = reader.read("big-1", "image", -1, region)
    np.testing.assert_array_equal(patch, np.asarray(local.image("big-1")[(slice(None), *region)]))
    digests = local.manifest["arrays"]["images/big-1/0"]["chunk_sha256"]
    cache_root = reader.store.root.store.cache.root
    cached = {p.name for p in cache_root.rglob("*") if p.is_file()}
    assert digests["c/0/1/0"] in cached
    assert not ({v for k, v in digests.items() if k != "c/0/1/0"} & cached)  # 1 of 9 tiles


@pytest.mark.parametrize("backend", ["fsspec", "obstore"])
def test_both_object_store_backends_read_the_same(s3, local_store, monkeypatch, backend):
    from zarr import storage

    if backend == "obstore":
        pytest.importorskip("obstore")
    expected = storage.ObjectStore if backend == "obstore" else storage.FsspecStore
    url = f"s3://{s3.bucket}/be/toy.zarr"
    from cellbench.store.remote import upload_store

    upload_store(local_store.path, url)
    monkeypatch.setenv("CELLBENCH_OBJECT_STORE", backend)
    monkeypatch.setenv("CELLBENCH_CHUNK_CACHE", "0")  # every read goes to the server
    remote = DatasetStore.open(url)
    assert isinstance(remote.root.store._store, expected)
    for sid in local_store.sample_ids():
        np.testing.assert_array_equal(remote.image(sid)[...], local_store.image(sid)[...])
    assert remote.verify() == []


def test_object_store_setting_is_checked(monkeypatch):
    from cellbench import settings

    monkeypatch.setenv("CELLBENCH_OBJECT_STORE", "boto")
    with pytest.raises(ValueError, match="'boto' is not one of auto, obstore, fsspec"):
        settings.object_store_backend()


def test_load_and_verify_with_a_scheduler_from_s3(s3, local_store):
    import cellbench

    url = f"s3://{s3.bucket}/lv/toy.zarr"
    remote = _upload(local_store, url)
    assert cellbench.load(url).checksum == local_store.checksum
    assert remote.verify(scheduler="threads") == []
    sid = local_store.sample_ids()[3]
    s3.client.delete_object(Bucket=s3.bucket, Key=f"lv/toy.zarr/images/{sid}/0/c/0/0/0")
    sequential = remote.verify()
    assert len(sequential) == 1 and "missing chunk file c/0/0/0" in sequential[0]
    assert remote.verify(scheduler="threads") == sequential


def test_missing_predictions_url_is_one_clear_problem(s3):
    from cellbench.errors import ValidationError
    from cellbench.predictions import load_predictions

    url = f"s3://{s3.bucket}/none/preds.zarr"
    with pytest.raises(ValidationError, match=r"no zarr\.json: not a canonical prediction set"):
        load_predictions(url)


def test_predictions_from_s3_ask_only_for_what_is_there(s3, local_store, tmp_path, caplog):
    """A prediction set on S3 is listed once: reading a sample's predictions fetches its
    arrays' metadata and chunks, with no request for the optional arrays it does not have
    (each was a failed GET, about twenty requests per sample) and none twice; the values are
    the local set's."""
    import logging

    from cellbench.predictions import (
        Prediction,
        PredictionSet,
        load_predictions,
        write_predictions,
    )
    from cellbench.store.remote import filesystem

    sids = local_store.sample_ids()
    preds = [Prediction(sid, mask=np.asarray(local_store.labels(sid)[...])) for sid in sids]
    pset = PredictionSet.from_predictions("instance-segmentation", preds)
    write_predictions(tmp_path / "preds.zarr", pset)
    fs, _ = filesystem(f"s3://{s3.bucket}")
    fs.put(str(tmp_path / "preds.zarr"), f"{s3.bucket}/listed/preds.zarr", recursive=True)
    local = load_predictions(tmp_path / "preds.zarr", "instance-segmentation")
    caplog.set_level(logging.INFO, logger="werkzeug")  # moto's request log
    remote = load_predictions(f"s3://{s3.bucket}/listed/preds.zarr", "instance-segmentation")
    caplog.clear()  # (opening: the root document and one listing)
    for sid in sids:
        shape = local_store.labels(sid).shape
        assert remote.declared(sid) == local.declared(sid) == {"mask": (shape, np.uint16)}
        np.testing.assert_array_equal(remote.get(sid).mask, local.get(sid).mask)
    requests = [r.getMessage() for r in caplog.records if "/listed/preds.zarr/" in r.getMessage()]
    assert requests and all('" 200 ' in m for m in requests), requests  # nothing missing asked
    gets = [m.split('"GET ')[1].split(" ")[0] for m in requests]
    assert len(gets) == len(set(gets)) <= 2 * len(sids), gets  # zarr.json + chunk per sample


def test_scoring_from_s3_fetches_the_next_samples_truth_ahead(
    s3, local_store, tmp_path, caplog, monkeypatch
):
    """Scoring from a remote store asks for the next samples' ground truth in the background
    while one is scored (here two ahead): in split order, each label chunk fetched once, and
    the report equal to the local store's."""
    import logging

    from cellbench import scoring

    monkeypatch.setenv("CELLBENCH_OBJECT_STORE", "fsspec")  # moto's log names each request
    monkeypatch.setattr(scoring, "READ_AHEAD", 2)
    url = f"s3://{s3.bucket}/ahead-score/toy.zarr"
    remote = _upload(local_store, url)
    ids = _half_missed(local_store, tmp_path / "p.zarr")
    asked: list[str] = []
    real = DatasetStore.prefetch_regions

    def spy(self, regions, **options):
        assert options == {"image_nodes": True}  # what `axes` reads of each sample, too
        asked.extend(sid for sid, _, _ in regions)
        return real(self, regions, **options)

    monkeypatch.setattr(DatasetStore, "prefetch_regions", spy)
    on_its_way: list[bool] = []  # each sample's group document, when scoring asks for it
    real_axes = DatasetStore.axes

    def axes_spy(self, sid):
        if self.is_remote:
            verified = self.remote_store
            name = verified._cache_name(f"images/{sid}/zarr.json")
            on_its_way.append(name in verified._pending or verified.cache.holds(name))
        return real_axes(self, sid)

    monkeypatch.setattr(DatasetStore, "axes", axes_spy)
    caplog.set_level(logging.INFO, logger="werkzeug")
    far = scoring.score(TASK, remote, "train", tmp_path / "p.zarr", n_bootstrap=0)
    near = scoring.score(TASK, local_store, "train", tmp_path / "p.zarr", n_bootstrap=0)
    same = json.dumps([far.metrics, far.per_sample], sort_keys=True, default=str)
    assert same == json.dumps([near.metrics, near.per_sample], sort_keys=True, default=str)
    assert far.provenance.predictions_sha256 == near.provenance.predictions_sha256
    assert asked[:3] == ids[:3] and asked == ids  # the first three at once, then one each
    gets = _chunk_gets(caplog, "ahead-score/toy.zarr/images/")
    label_gets = [m for m in gets if "/labels/instances/" in m]
    assert len(label_gets) == len(set(label_gets)) == len(ids), label_gets
    assert on_its_way and all(on_its_way), on_its_way  # fetched ahead, not when asked for


def _half_missed(store: DatasetStore, path) -> list[str]:
    """Write a canonical prediction set of ``store``'s train split at ``path``, half of each
    image missed; the split's sample ids."""
    from cellbench.predictions import Prediction, PredictionSet, write_predictions

    ids = store.sample_ids("train")
    preds = []
    for sid in ids:
        mask = np.asarray(store.labels(sid)[...]).copy()
        mask[: mask.shape[0] // 2] = 0
        preds.append(Prediction(sid, mask=mask))
    write_predictions(path, PredictionSet.from_predictions(TASK, preds))
    return ids


def _predictions_on_s3(s3, store: DatasetStore, tmp_path, key: str) -> tuple[list[str], str]:
    """:func:`_half_missed` under ``tmp_path / key``, uploaded to ``s3://bucket/key``."""
    from cellbench.store.remote import filesystem

    ids = _half_missed(store, tmp_path / key)
    fs, _ = filesystem(f"s3://{s3.bucket}")
    fs.put(str(tmp_path / key), f"{s3.bucket}/{key}", recursive=True)
    return ids, f"s3://{s3.bucket}/{key}"


def test_scoring_reads_a_prediction_set_on_s3_ahead(s3, local_store, tmp_path, caplog, monkeypatch):
    """Scoring a prediction set at a URL fetches the next samples' prediction files in the
    background while one is scored (here two ahead), in split order: every file zarr reads of
    a sample was fetched ahead (none is a request made when asked for), each file of the
    samples is fetched once (the report's digest hashes what scoring read, and waits for a
    fetch still on its way rather than asking again), and the report equals the local set's,
    its digest included."""
    import asyncio
    import logging

    from cellbench import scoring
    from cellbench.predictions import PredictionSet
    from cellbench.store import remote

    monkeypatch.setenv("CELLBENCH_OBJECT_STORE", "fsspec")  # moto's log names each request
    monkeypatch.setattr(scoring, "READ_AHEAD", 2)
    ids, url = _predictions_on_s3(s3, local_store, tmp_path, "ahead-preds/p.zarr")
    asked: list[str] = []
    real_prefetch = PredictionSet.prefetch

    def prefetch_spy(self, sids):
        asked.extend(sids)
        return real_prefetch(self, sids)

    handed: dict[str, bool] = {}  # the first time zarr asks for a sample's file: fetched ahead?
    real_take = remote.ListedStore._take_ahead

    def take_spy(self, key):
        fut = real_take(self, key)
        if key.startswith("samples/"):
            handed.setdefault(key, fut is not None)
        return fut

    from zarr.storage import FsspecStore

    real_get = FsspecStore.get

    async def slow_get(self, key, *args, **kwargs):  # the last group's zarr.json (read ahead,
        buf = await real_get(self, key, *args, **kwargs)  # never asked for): requested, then
        if key == f"samples/{ids[-1]}/zarr.json":  # still on its way when scoring ends
            await asyncio.sleep(0.5)
        return buf

    monkeypatch.setattr(PredictionSet, "prefetch", prefetch_spy)
    monkeypatch.setattr(remote.ListedStore, "_take_ahead", take_spy)
    monkeypatch.setattr(FsspecStore, "get", slow_get)
    caplog.set_level(logging.INFO, logger="werkzeug")
    far = scoring.score(TASK, local_store, "train", url, n_bootstrap=0)
    near = scoring.score(TASK, local_store, "train", tmp_path / "ahead-preds/p.zarr", n_bootstrap=0)
    same = json.dumps([far.metrics, far.per_sample], sort_keys=True, default=str)
    assert same == json.dumps([near.metrics, near.per_sample], sort_keys=True, default=str)
    assert far.provenance.predictions_sha256 == near.provenance.predictions_sha256
    assert asked[:3] == ids[:3] and asked == ids  # the first three at once, then one each
    assert {k.split("/")[1] for k in handed} == set(ids)
    assert all(handed.values()), handed
    requests = [
        r.getMessage() for r in caplog.records if "/ahead-preds/p.zarr/samples/" in r.getMessage()
    ]
    gets = [m.split('"GET ')[1].split(" ")[0] for m in requests if '"GET ' in m]
    assert all('" 200 ' in m for m in requests), requests
    folder = tmp_path / "ahead-preds/p.zarr"
    files = {
        f.relative_to(folder).as_posix() for f in (folder / "samples").rglob("*") if f.is_file()
    }
    assert len(gets) == len(set(gets)) == len(files), gets  # each file once
    assert {g.split("/p.zarr/")[1] for g in gets} == files and set(handed) < files


def test_dask_scoring_of_a_set_on_s3_fetches_each_file_once(s3, local_store, tmp_path, caplog):
    """Scored with a Dask scheduler (each worker thread opens the set at the URL itself), each
    sample's prediction files are fetched once: the workers send the hashes of the files they
    read with each sample's outcome, so the report's digest does not download the set again;
    the report equals the one-process report, digest included."""
    import logging

    from cellbench import scoring

    ids, url = _predictions_on_s3(s3, local_store, tmp_path, "dask-preds/p.zarr")
    near = scoring.score(TASK, local_store, "train", tmp_path / "dask-preds/p.zarr", n_bootstrap=0)
    caplog.set_level(logging.INFO, logger="werkzeug")
    far = scoring.score(TASK, local_store, "train", url, n_bootstrap=0, scheduler="threads")
    same = json.dumps([far.metrics, far.per_sample], sort_keys=True, default=str)
    assert same == json.dumps([near.metrics, near.per_sample], sort_keys=True, default=str)
    assert far.provenance.predictions_sha256 == near.provenance.predictions_sha256
    gets = [
        r.getMessage().split('"GET ')[1].split(" ")[0].split("/p.zarr/")[1]
        for r in caplog.records
        if '"GET ' in r.getMessage() and "/dask-preds/p.zarr/" in r.getMessage()
    ]
    folder = tmp_path / "dask-preds/p.zarr"
    files = {f.relative_to(folder).as_posix() for f in folder.rglob("*") if f.is_file()}
    sample_files = {f for f in files if f.startswith("samples/") and f.count("/") > 1}
    assert {f.split("/")[1] for f in sample_files} == set(ids)
    assert set(gets) <= files
    # each worker opening the set reads its root documents; each sample's files once in all
    assert sorted(g for g in gets if g in sample_files) == sorted(sample_files), gets


def test_prediction_set_on_s3_missing_a_chunk_file_is_refused_from_the_listing(
    s3, local_store, tmp_path, caplog, monkeypatch
):
    """A set on S3 that lost a chunk file (an interrupted upload) is refused for that sample,
    naming the file, from the listing: the lost file is never asked for (it would read as
    background); the other samples read as written."""
    import logging

    from cellbench.errors import ValidationError
    from cellbench.predictions import load_predictions

    monkeypatch.setenv("CELLBENCH_OBJECT_STORE", "fsspec")  # moto's log names each request
    ids, url = _predictions_on_s3(s3, local_store, tmp_path, "lost/p.zarr")
    s3.client.delete_object(Bucket=s3.bucket, Key=f"lost/p.zarr/samples/{ids[1]}/mask/c/0/0")
    caplog.set_level(logging.INFO, logger="werkzeug")
    caplog.clear()  # (the upload and the deletion)
    remote = load_predictions(url, TASK)
    with pytest.raises(ValidationError) as err:
        remote.get(ids[1])
    assert err.value.problems == [
        "mask: 1 of 1 chunk files are missing (c/0/0); the set's header says every chunk was "
        "written, so this copy is incomplete (an interrupted upload or copy?)"
    ]
    local = load_predictions(tmp_path / "lost/p.zarr", TASK)
    np.testing.assert_array_equal(remote.get(ids[0]).mask, local.get(ids[0]).mask)
    asked = [
        r.getMessage() for r in caplog.records if f"/samples/{ids[1]}/mask/c/" in r.getMessage()
    ]
    assert asked == []


def test_listed_store_reads_ahead_within_its_bounds(s3, local_store, tmp_path, monkeypatch):
    """Read-ahead keeps the files of the last ``AHEAD_NODES`` nodes only, and no file that
    would take it past ``AHEAD_BYTES`` (such a file is read when asked for, as without
    read-ahead); a pickled copy (a Dask process) reads the same and starts with nothing ahead."""
    import concurrent.futures
    import pickle

    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    from cellbench.store import remote

    ids, url = _predictions_on_s3(s3, local_store, tmp_path, "bounds/p.zarr")
    fs, root = remote.filesystem(url)
    store = remote.listed_store(url, fs, root)
    sizes = {k: v for k, v in store._files.items() if k.startswith("samples/")}
    assert sizes and all(isinstance(v, int) and v > 0 for v in sizes.values())
    chunk = next(k for k in sizes if k.startswith(f"samples/{ids[0]}/") and "/c/" in k)

    monkeypatch.setattr(remote, "AHEAD_NODES", 2)
    # each node's zarr.json (for the digest), its mask's zarr.json and chunk
    assert store.prefetch([f"samples/{s}" for s in ids[:3]]) == 3 * 3
    assert list(store._ahead_nodes) == [f"samples/{s}" for s in ids[1:3]]  # the first dropped
    held = set(store._ahead)
    assert held == {k for k in sizes if k.split("/")[1] in ids[1:3]}
    assert store._ahead_bytes == sum(sizes[k] for k in held)
    concurrent.futures.wait([fut for fut, _ in store._ahead.values()])
    key = next(k for k in held if "/c/" in k)
    got = sync(store.get(key, default_buffer_prototype()))
    assert got.to_bytes() == (tmp_path / "bounds/p.zarr" / key).read_bytes()
    assert key not in store._ahead and store._ahead_bytes == sum(sizes[k] for k in held - {key})

    small = remote.listed_store(url, fs, root)
    monkeypatch.setattr(remote, "AHEAD_BYTES", sizes[chunk] - 1)  # the chunk does not fit
    small.prefetch([f"samples/{ids[0]}"])
    assert chunk not in small._ahead
    assert small._ahead_bytes == sum(sizes[k] for k in small._ahead) <= sizes[chunk] - 1
    got = sync(small.get(chunk, default_buffer_prototype()))  # read when asked for
    assert got.to_bytes() == (tmp_path / "bounds/p.zarr" / chunk).read_bytes()

    copy = pickle.loads(pickle.dumps(store))
    assert not copy._ahead and copy._files == store._files
    got = sync(copy.get(chunk, default_buffer_prototype()))
    assert got.to_bytes() == (tmp_path / "bounds/p.zarr" / chunk).read_bytes()


def test_prediction_set_on_s3_with_too_many_files_is_one_line(s3, tmp_path, monkeypatch):
    """Like a local prediction set, one on S3 holding more files than a set can is refused
    in one line, before anything is read."""
    from cellbench import predictions
    from cellbench.errors import ValidationError
    from cellbench.predictions import Prediction, PredictionSet, write_predictions
    from cellbench.store.remote import filesystem

    pset = PredictionSet.from_predictions(
        "instance-segmentation",
        [Prediction(f"s{i}", mask=np.ones((8, 8), np.uint16)) for i in range(3)],
    )
    write_predictions(tmp_path / "preds.zarr", pset)
    fs, _ = filesystem(f"s3://{s3.bucket}")
    fs.put(str(tmp_path / "preds.zarr"), f"{s3.bucket}/many/preds.zarr", recursive=True)
    n = len(fs.find(f"{s3.bucket}/many/preds.zarr"))
    monkeypatch.setattr(predictions, "MAX_FILES", n - 1)
    with pytest.raises(ValidationError, match=f"holds more than {n - 1} files") as err:
        predictions.load_predictions(f"s3://{s3.bucket}/many/preds.zarr", "instance-segmentation")
    assert len(err.value.problems) == 1
    monkeypatch.setattr(predictions, "MAX_FILES", n)
    assert (
        predictions.load_predictions(f"s3://{s3.bucket}/many/preds.zarr").get("s1").mask.sum() == 64
    )


def test_one_get_and_no_head_per_chunk_file(s3, local_store, caplog, monkeypatch):
    """s3fs asks for a file's size (a HEAD) before a whole-file GET unless told not to split
    reads (``max_concurrency=1``): a cold chunk read is one request, not two."""
    import logging

    monkeypatch.setenv("CELLBENCH_OBJECT_STORE", "fsspec")
    monkeypatch.setenv("CELLBENCH_CHUNK_CACHE", "0")
    url = f"s3://{s3.bucket}/stores/toy.zarr"
    remote = _upload(local_store, url)
    sid = local_store.sample_ids()[0]
    chunks = local_store.manifest["arrays"][f"images/{sid}/0"]["chunk_sha256"]
    caplog.set_level(logging.INFO, logger="werkzeug")  # moto's request log
    np.testing.assert_array_equal(remote.image(sid)[...], local_store.image(sid)[...])
    for key in chunks:
        path = f"toy.zarr/images/{sid}/0/{key} "
        lines = [r.getMessage() for r in caplog.records if path in r.getMessage()]
        assert sum('"GET /' in m for m in lines) == 1, lines
        assert sum('"HEAD /' in m for m in lines) == 0, lines


def test_sharded_store_patch_reads_fetch_each_shard_once(s3, tmp_path, caplog, monkeypatch):
    """Store format 4 from S3: a patch fetches its whole shard once (one GET), checks it, and
    the index and chunk ranges of that and later patches of the shard are served from it."""
    import logging

    from cellbench.store.format import FORMATS
    from cellbench.store.sample import Sample
    from cellbench.training.data.reader import StoreReader

    monkeypatch.setenv("CELLBENCH_OBJECT_STORE", "fsspec")
    monkeypatch.setenv("CELLBENCH_CHUNK_CACHE", "0")  # no disk cache: only the shard memo
    rng = np.random.default_rng(1)
    image = rng.integers(0, 4096, (1, 600, 2300), dtype=np.uint16)  # 2 shards across
    sample = Sample(id="wide", image=image, instances=np.zeros((600, 2300), np.uint16))
    local = build_store([sample], tmp_path / "w.zarr", CARD, fmt=FORMATS["4"])
    shards = local.manifest["arrays"]["images/wide/0"]["chunk_sha256"]
    assert sorted(shards) == ["c/0/0/0", "c/0/0/1"]
    url = f"s3://{s3.bucket}/wide/w.zarr"
    _upload(local, url)
    reader = StoreReader(url, {"mask": "instances"})
    caplog.set_level(logging.INFO, logger="werkzeug")  # moto's request log
    for y, x in ((300, 10), (10, 500), (500, 1900)):  # three patches in the first shard
        region = (slice(y, y + 64), slice(x, x + 64))
        patch = reader.read("wide", "image", -1, region)
        np.testing.assert_array_equal(patch, image[(slice(None), *region)])
    gets = [m for m in (r.getMessage() for r in caplog.records) if '"GET /' in m]
    lines = [m for m in gets if "w.zarr/images/wide/0/c/" in m]
    assert sum("/c/0/0/0 " in m for m in lines) == 1, lines
    assert not [m for m in lines if "/c/0/0/1 " in m]  # the other shard: never fetched
    assert DatasetStore.open(url).verify() == []
    key = "wide/w.zarr/images/wide/0/c/0/0/1"  # damage the shard no patch has read
    body = s3.client.get_object(Bucket=s3.bucket, Key=key)["Body"].read()
    s3.client.put_object(
        Bucket=s3.bucket, Key=key, Body=body[:-9] + bytes([body[-9] ^ 1]) + body[-8:]
    )
    problems = DatasetStore.open(url).verify()
    assert len(problems) == 1 and "images/wide/0" in problems[0] and "c/0/0/1" in problems[0]
    with pytest.raises(CorruptStoreError, match="c/0/0/1"):
        reader.read("wide", "image", -1, (slice(0, 64), slice(2100, 2164)))


def test_cli_pull_shard_to_s3_uploads_a_format_4_store_with_the_same_content(s3):
    from cellbench.cli import main
    from cellbench.registry import pull

    local = pull("synthetic-nuclei", options={"n_images": 8}, progress=False)
    content = {p: e["sha256"] for p, e in local.manifest["arrays"].items()}
    res = CliRunner().invoke(
        main,
        ["datasets", "pull", "synthetic-nuclei", "--to", f"s3://{s3.bucket}/sh", "--shard", "-q"],
    )
    assert res.exit_code == 0, res.output
    remote = DatasetStore.open(f"s3://{s3.bucket}/sh/{local.ref}.zarr")
    assert remote.format.version == "4" and remote.verify() == []
    assert {p: e["sha256"] for p, e in remote.manifest["arrays"].items()} == content
    sharded = [p for p, e in remote.manifest["arrays"].items() if "shards" in e]
    assert sharded and all(p.startswith("images/") for p in sharded)  # tables are not
    cached = pull("synthetic-nuclei", progress=False)  # the cache now holds format 4
    assert cached.format.version == "4" and cached.checksum == remote.checksum
    res = CliRunner().invoke(main, ["datasets", "pull", "synthetic-nuclei", "--public", "--shard"])
    assert res.exit_code == 1 and "cannot be combined with --public" in res.output


def test_cached_shard_ranges_are_checked_piece_by_piece(s3, tmp_path, monkeypatch):
    """From a warm chunk cache a patch reads only its bytes of a cached shard, checked against
    the manifest's per-range digests; a damaged cached piece is named and the copy removed."""
    from cellbench.store.format import FORMATS
    from cellbench.store.remote import default_cache
    from cellbench.store.sample import Sample
    from cellbench.training.data.reader import StoreReader

    monkeypatch.setenv("CELLBENCH_CHUNK_CACHE", "1GB")
    rng = np.random.default_rng(2)
    image = rng.integers(0, 4096, (1, 600, 600), dtype=np.uint16)
    sample = Sample(id="sq", image=image, instances=np.zeros((600, 600), np.uint16))
    local = build_store([sample], tmp_path / "q.zarr", CARD, fmt=FORMATS["4"])
    url = f"s3://{s3.bucket}/q/q.zarr"
    _upload(local, url)
    region = (slice(300, 364), slice(10, 74))
    reader = StoreReader(url, {"mask": "instances"})
    np.testing.assert_array_equal(
        reader.read("sq", "image", -1, region), image[(slice(None), *region)]
    )
    record = local.manifest["arrays"]["images/sq/0"]["shard_ranges"]["c/0/0/0"]
    assert record["size"] == (local.path / "images/sq/0/c/0/0/0").stat().st_size
    assert len(record["ranges"]) == 9 + 1  # 3 x 3 tiles and the index
    digest = local.manifest["arrays"]["images/sq/0"]["chunk_sha256"]["c/0/0/0"]
    cached = Path(default_cache()._file(digest))
    raw = bytearray(cached.read_bytes())
    a, b, _ = record["ranges"][0]  # the first tile in file order: tile (0, 0)
    raw[(a + b) // 2] ^= 1
    cached.write_bytes(bytes(raw))
    fresh = StoreReader(url, {"mask": "instances"})  # (no in-memory copy of the shard)
    np.testing.assert_array_equal(  # tile (1, 0) is intact: read from the damaged copy
        fresh.read("sq", "image", -1, region), image[(slice(None), *region)]
    )
    with pytest.raises(CorruptStoreError, match=r"c/0/0/0 .*bytes \d+:\d+.*has been removed"):
        fresh.read("sq", "image", -1, (slice(0, 64), slice(0, 64)))
    assert not cached.exists()
    again = StoreReader(url, {"mask": "instances"})
    np.testing.assert_array_equal(  # fetched again from the store, intact
        again.read("sq", "image", -1, (slice(0, 64), slice(0, 64))), image[:, :64, :64]
    )


@pytest.mark.parametrize("version", ["2", "4"])
def test_region_reads_from_s3_equal_zarr_slicing(s3, tmp_path, version):
    """DatasetStore.read_region on a remote store (the training reader's path) reads through
    the verified chunk cache and gives what slicing the zarr array gives."""
    from cellbench.store.format import FORMATS
    from cellbench.store.sample import Sample

    rng = np.random.default_rng(7)
    image = rng.integers(0, 4096, (2, 600, 530), dtype=np.uint16)
    labels = rng.integers(0, 5, (600, 530), dtype=np.uint16)
    sample = Sample(id="r", image=image, instances=labels)
    local = build_store([sample], tmp_path / "r.zarr", CARD, fmt=FORMATS[version])
    remote = _upload(local, f"s3://{s3.bucket}/r{version}/r.zarr")
    for sel in ((slice(None), slice(250, 300), slice(500, 530)), (1, slice(590, 600), 7)):
        np.testing.assert_array_equal(remote.read_region("r", "image", sel), image[sel])
        np.testing.assert_array_equal(
            remote.read_region("r", "instances", sel[1:]), labels[sel[1:]]
        )


def _chunk_gets(caplog, marker: str) -> list[str]:
    """moto's logged GETs of chunk files whose path holds ``marker``."""
    return [
        m
        for m in (r.getMessage() for r in caplog.records)
        if '"GET /' in m and marker in m and "/c/" in m
    ]


def test_prefetch_fetches_a_batch_once_in_the_background_and_reads_use_it(
    s3, local_store, caplog, monkeypatch
):
    """``StoreReader.prefetch`` (what a training batch calls first) fetches every chunk file the
    batch's reads need, each once, without blocking; the reads then come from the chunk cache
    (no further request) and equal the local store's."""
    import logging

    from cellbench.store.remote import default_cache
    from cellbench.training.data.reader import StoreReader

    monkeypatch.setenv("CELLBENCH_OBJECT_STORE", "fsspec")  # moto's log names each request
    url = f"s3://{s3.bucket}/pf/toy.zarr"
    remote = _upload(local_store, url)
    sids = local_store.sample_ids()
    region = (slice(3, 30), slice(5, 33))
    reads = [(s, k, -1, region) for s in sids for k in ("image", "mask")]
    reads += reads[:4]  # repeated reads fetch nothing more
    reader = StoreReader(url, {"mask": "instances"})
    caplog.set_level(logging.INFO, logger="werkzeug")  # moto's request log
    reader.prefetch(reads)
    # the samples table the reads check their ids against was read before the fetches were
    # queued (it would otherwise wait behind all of them)
    assert reader.store._table is not None
    verified = reader.store.root.store
    for s in sids:
        for key in (f"images/{s}/0/c/0/0/0", f"images/{s}/labels/instances/0/c/0/0"):
            verified.wait(key)  # arrived (or raises what fetching it raised)
            name = verified._cache_name(key)
            assert default_cache().holds(name), key
    fetched = _chunk_gets(caplog, "pf/toy.zarr/images/")
    assert len(fetched) == 2 * len(sids), fetched  # one image and one mask chunk per sample
    for s, k, f, r in reads:
        expected = local_store.image(s)[:, 3:30, 5:33] if k == "image" else None
        got = reader.read(s, k, f, r)
        if expected is None:
            expected = local_store.labels(s)[3:30, 5:33]
        np.testing.assert_array_equal(got, expected)
    assert len(_chunk_gets(caplog, "pf/toy.zarr/images/")) == len(fetched)  # no more GETs
    assert remote.prefetch_regions([(sids[0], "image", (slice(None), *region))]) == 0
    monkeypatch.setenv("CELLBENCH_CHUNK_CACHE", "0")  # cache off: nothing to fetch ahead into
    assert DatasetStore.open(url).prefetch_regions([(sids[1], "image", (slice(None),))]) == 0


def test_prefetched_damaged_chunk_is_named_by_its_read(s3, local_store, monkeypatch):
    """A chunk damaged on S3 and fetched in the background does not pass silently: prefetch
    returns, the read of that sample names the chunk, and the other samples still read."""
    from cellbench.training.data.reader import StoreReader

    url = f"s3://{s3.bucket}/bad/toy.zarr"
    _upload(local_store, url)
    sids = local_store.sample_ids()
    key = f"bad/toy.zarr/images/{sids[1]}/0/c/0/0/0"
    body = s3.client.get_object(Bucket=s3.bucket, Key=key)["Body"].read()
    s3.client.put_object(Bucket=s3.bucket, Key=key, Body=body[:-1] + bytes([body[-1] ^ 1]))
    reader = StoreReader(url, {"mask": "instances"})
    region = (slice(0, 16), slice(0, 16))
    reader.prefetch([(s, "image", -1, region) for s in sids[:3]])
    np.testing.assert_array_equal(
        reader.read(sids[0], "image", -1, region), local_store.image(sids[0])[:, :16, :16]
    )
    with pytest.raises(CorruptStoreError, match=rf"images/{sids[1]}/0.*c/0/0/0"):
        reader.read(sids[1], "image", -1, region)
    np.testing.assert_array_equal(
        reader.read(sids[2], "image", -1, region), local_store.image(sids[2])[:, :16, :16]
    )


def test_training_loader_from_s3_reads_batches_ahead_and_equals_local(s3, local_store, monkeypatch):
    """The training loader over a store on S3 (0 workers) yields exactly the batches it
    yields over the same store on local disk, and asks for the files of the batches ahead
    before it needs them (the first ``READ_AHEAD`` batches up front, then one per batch)."""
    import torch

    from cellbench.training.data import LoaderOptions, build_index, loaders
    from cellbench.training.normalisation import Normaliser

    monkeypatch.setattr(loaders, "READ_AHEAD", 2)
    url = f"s3://{s3.bucket}/ahead/toy.zarr"
    remote = _upload(local_store, url)
    options = LoaderOptions(
        sample_mode="patch", batch_size=2, patch_size=(16, 16), samples_per_epoch=10
    )
    task = "instance-segmentation"

    def batches(store: DatasetStore) -> tuple[list[dict], list, list]:
        index = build_index(store, task, "train", Normaliser())
        source = loaders.train_source(index, options, torch.device("cpu"))
        events: list = []  # the keys of each prefetch call, and "batch" when one is yielded
        dataset = source.loader.dataset
        real = dataset.prefetch

        def spy(keys, remember=True):
            assert remember  # (read in this process: the plans are kept for the reads)
            events.append(list(keys))
            real(keys, remember)

        monkeypatch.setattr(dataset, "prefetch", spy)
        out = []
        for batch in source:
            out.append({k: v.clone() for k, v in batch.items()})
            events.append("batch")
        return out, events, list(source.sampler)

    local, local_events, _ = batches(local_store)
    far, far_events, keys = batches(remote)
    assert len(local) == len(far) == 5
    for a, b in zip(local, far, strict=True):
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    assert local_events == ["batch"] * 5  # local disk: nothing to fetch ahead
    ahead = [keys[i : i + 2] for i in range(0, 10, 2)]  # the epoch's batches, in order
    b0, b1, b2, b3, b4 = ahead
    assert far_events == [b0, b1, b2, "batch", b3, "batch", b4, "batch", "batch", "batch"]


def test_training_loader_workers_wait_for_the_main_process_fetches(
    s3, local_store, caplog, monkeypatch
):
    """With worker processes, the loader's main process reads the epoch's batches ahead and
    the forked workers wait for those files in the shared chunk cache instead of fetching
    them too: the batches equal local disk's and every chunk file is fetched once."""
    import logging

    import torch

    from cellbench.training.data import LoaderOptions, build_index, loaders
    from cellbench.training.normalisation import Normaliser

    monkeypatch.setenv("CELLBENCH_OBJECT_STORE", "fsspec")  # moto's log names each request
    url = f"s3://{s3.bucket}/workers/toy.zarr"
    remote = _upload(local_store, url)
    options = LoaderOptions(
        sample_mode="patch", batch_size=2, patch_size=(16, 16), samples_per_epoch=12, workers=2
    )

    def epoch(store: DatasetStore) -> list[dict]:
        index = build_index(store, "instance-segmentation", "train", Normaliser())
        source = loaders.train_source(index, options, torch.device("cpu"))
        try:
            return [{k: v.clone() for k, v in b.items()} for b in source]
        finally:
            source.close()

    local = epoch(local_store)
    from cellbench.store.remote import default_cache

    for f in list(default_cache().root.glob("??/*")):
        f.unlink()  # indexing read the images through the cache: start the epoch empty
    default_cache()._index = None
    caplog.set_level(logging.INFO, logger="werkzeug")  # moto's request log (this process)
    far = epoch(remote)
    assert len(local) == len(far) == 6
    for a, b in zip(local, far, strict=True):
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    gets = _chunk_gets(caplog, "workers/toy.zarr/images/")
    paths = [m.split('"GET ')[1].split(" ")[0] for m in gets]
    assert paths and len(paths) == len(set(paths)), sorted(paths)  # none fetched twice


def test_a_reader_waiting_for_another_process_takes_its_file_or_fetches_after_the_wait(
    s3, local_store, caplog, monkeypatch
):
    """``await_others``: a read missing from the chunk cache waits for another process to put
    the file there (no request of its own); if it does not come in time, the reader fetches
    it, and every later file, itself."""
    import logging
    import threading
    import time

    from cellbench.store.remote import default_cache

    monkeypatch.setenv("CELLBENCH_OBJECT_STORE", "fsspec")  # moto's log names each request
    url = f"s3://{s3.bucket}/await/toy.zarr"
    _upload(local_store, url)
    sids = local_store.sample_ids()
    waiting = DatasetStore.open(url)
    verified = waiting.root.store
    region = (slice(None), slice(0, 16), slice(0, 16))
    waiting.read_region(sids[2], "image", region)  # (the images' zarr.json: one, now cached)
    verified.await_others = 30.0
    key = f"images/{sids[0]}/0/c/0/0/0"
    body = (local_store.path / key).read_bytes()
    name = verified._cache_name(key)

    def other_process() -> None:  # what the loader's main process does: fetch into the cache
        time.sleep(0.3)
        default_cache().put(name, body)

    caplog.set_level(logging.INFO, logger="werkzeug")
    writer = threading.Thread(target=other_process)
    t0 = time.monotonic()
    writer.start()
    np.testing.assert_array_equal(
        waiting.read_region(sids[0], "image", region), local_store.image(sids[0])[region]
    )
    writer.join()
    assert 0.3 <= time.monotonic() - t0 < 20  # it waited for the file, and no longer
    assert verified.await_others == 30.0  # (the file came: it still waits for others)
    assert not _chunk_gets(caplog, f"await/toy.zarr/images/{sids[0]}/0/")  # ... not fetched
    verified.await_others = 0.2  # nobody fetches sids[1]: the reader gives up and fetches
    np.testing.assert_array_equal(
        waiting.read_region(sids[1], "image", region), local_store.image(sids[1])[region]
    )
    assert len(_chunk_gets(caplog, f"await/toy.zarr/images/{sids[1]}/0/")) == 1
    assert verified.await_others == 0.0  # and no longer waits for anyone


def test_fetch_ahead_here_makes_forked_copies_wait_and_not_prefetch(s3, local_store):
    """The process that calls ``fetch_ahead_here`` keeps fetching; its forked copies of the
    reader wait for its files and start no fetch of their own."""

    from cellbench.training.data.reader import StoreReader

    url = f"s3://{s3.bucket}/ahead-here/toy.zarr"
    _upload(local_store, url)
    reader = StoreReader(url, {"mask": "instances"})
    reader.fetch_ahead_here(7.0)
    assert reader.store.root.store.await_others == 0.0  # here: fetch
    sid = local_store.sample_ids()[0]
    assert _in_fork(_report_awaiting, reader, sid) == (7.0, 0)


def _in_fork(target, *args):
    """What ``target(*args, queue)`` puts on the queue, run in a forked child (which gets this
    process's very objects, not pickled copies); fails if the child hangs."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    child = ctx.Process(target=target, args=(*args, out))
    child.start()
    child.join(timeout=60)
    alive = child.is_alive()
    if alive:
        child.kill()
    assert not alive, "the forked child hung"
    return out.get(timeout=5)


def _report_awaiting(reader, sid, out):
    verified = reader.store.remote_store
    reader.prefetch([(sid, "image", -1, (slice(0, 8), slice(0, 8)))])
    out.put((verified.await_others, len(verified._pending)))


@pytest.mark.parametrize("backend", ["fsspec", "obstore"])
def test_reader_copied_into_a_forked_worker_reads_by_itself(s3, local_store, backend, monkeypatch):
    """A reader copied into a forked process (a DataLoader worker) after its parent read
    through it, with background fetches still pending, opens its own store and reads: it
    neither waits for the parent's fetches nor uses obstore, whose I/O threads a fork does
    not copy (``auto`` falls back to fsspec there)."""

    from cellbench.store import remote
    from cellbench.training.data.reader import StoreReader

    if backend == "obstore":
        pytest.importorskip("obstore")
        monkeypatch.setenv("CELLBENCH_OBJECT_STORE", "auto")
    else:
        monkeypatch.setenv("CELLBENCH_OBJECT_STORE", "fsspec")
    url = f"s3://{s3.bucket}/fork-{backend}/toy.zarr"
    _upload(local_store, url)
    sid = local_store.sample_ids()[0]
    region = (slice(0, 16), slice(0, 16))
    reader = StoreReader(url, {"mask": "instances"})
    reader.read(sid, "image", -1, region)  # the parent has used its backend
    verified = reader.store.root.store
    key = f"images/{sid}/labels/instances/0/c/0/0"
    verified._pending[verified._cache_name(key)] = concurrent.futures.Future()  # never done
    mask, backend_used = _in_fork(_read_in_child, reader, sid, region)
    np.testing.assert_array_equal(mask, local_store.labels(sid)[:16, :16])
    assert backend_used == "FsspecStore"
    if backend == "obstore":
        assert type(verified._store).__name__ == "ObjectStore"  # the parent's
        monkeypatch.setattr(remote, "_OBSTORE_PID", remote._OBSTORE_PID + 1)  # "forked"
        monkeypatch.setenv("CELLBENCH_OBJECT_STORE", "obstore")
        with pytest.raises(StoreError, match="forked after obstore was used"):
            remote.zarr_store(url)


def _read_in_child(reader, sid, region, out):
    mask = reader.read(sid, "mask", -1, region)
    out.put((mask, type(reader.store.remote_store._store).__name__))


def test_forked_workers_take_over_the_parents_store_and_make_no_request_of_their_own(
    s3, local_store, caplog, monkeypatch
):
    """A forked copy of a reader whose process fetches ahead (a training loader's worker)
    takes over the parent's store handle: it reads what the parent put into the chunk cache,
    with the parent's manifest and samples table, and makes no client of the URL and no
    request at all (reopening the store cost each worker two new S3 clients and two requests
    at the start of every epoch)."""
    import logging

    from cellbench.training.data.reader import StoreReader

    monkeypatch.setenv("CELLBENCH_OBJECT_STORE", "fsspec")  # moto's log names each request
    url = f"s3://{s3.bucket}/take-over/toy.zarr"
    _upload(local_store, url)
    sids = local_store.sample_ids()
    region = (slice(0, 16), slice(0, 16))
    reader = StoreReader(url, {"mask": "instances"})
    reader.fetch_ahead_here(30.0)
    for sid in sids[:2]:
        reader.read(sid, "mask", -1, region)  # fetched here, into the shared chunk cache
    caplog.set_level(logging.INFO, logger="werkzeug")  # (the server runs in this process)
    caplog.clear()
    masks, own_store, client_made, waits = _in_fork(_read_taken_over, reader, sids[:2], region)
    for sid, mask in zip(sids[:2], masks, strict=True):
        np.testing.assert_array_equal(mask, local_store.labels(sid)[region])
    assert own_store and not client_made and waits == 30.0
    requests = [r.getMessage() for r in caplog.records if "take-over/" in r.getMessage()]
    assert requests == []  # neither the root, the manifest, the table nor a chunk


def _read_taken_over(reader, sids, region, out):
    parent = reader._store
    masks = [reader.read(sid, "mask", -1, region) for sid in sids]
    store = reader.store
    made = store.remote_store._inner is not None
    out.put((masks, store is not parent, made, store.remote_store.await_others))


def test_chunk_cache_locks_are_new_in_a_forked_child():
    """A cache lock held by another thread at a fork (the I/O thread storing a fetched chunk)
    does not stay held for ever in the child."""

    from cellbench.store.remote import default_cache

    with default_cache()._lock:  # (held by this thread; a fork copies it held)
        assert _in_fork(_touch_cache) is False


def _touch_cache(out):
    from cellbench.store.remote import default_cache

    out.put(default_cache().holds("0" * 64))


def test_cli_convert_into_s3_and_score_report_to_s3(s3, tmp_path, monkeypatch):
    """`convert --to zarr s3://...` builds, verifies and uploads the store (the same content
    as a local conversion, nothing left in the cache's scratch space); `score --out s3://...`
    writes the report object itself. Outputs that only make sense on this machine refuse a
    URL in one line instead of writing a local folder named `s3:`; other formats cannot go to
    a URL; an occupied URL is refused before any work."""
    from cellbench.cli import main
    from cellbench.formats.registry import write_samples
    from cellbench.predictions import Prediction, PredictionSet, write_predictions
    from cellbench.report import ScoreReport

    monkeypatch.setenv("CELLBENCH_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    samples = toy_samples("instance-segmentation", 6)
    write_samples("tiff", samples, tmp_path / "tif")
    runner = CliRunner()
    url = f"s3://{s3.bucket}/conv/toy.zarr"
    args = ["convert", str(tmp_path / "tif"), "--from", "tiff", "--to", "zarr"]
    res = runner.invoke(main, [*args, url, "-q"])
    assert res.exit_code == 0, res.output
    assert url in res.output
    res = runner.invoke(main, [*args, str(tmp_path / "local.zarr"), "-q"])
    assert res.exit_code == 0, res.output
    remote, local = DatasetStore.open(url), DatasetStore.open(tmp_path / "local.zarr")
    assert remote.verify() == [] and remote.checksum == local.checksum
    assert not [p for p in (tmp_path / "home" / "tmp").iterdir() if p.name.startswith("convert-")]
    res = runner.invoke(main, [*args, url, "-q"])  # occupied: refused before the work
    assert res.exit_code == 1 and "a store is already there" in res.output, res.output
    res = runner.invoke(main, [*args[:-1], "coco", f"s3://{s3.bucket}/conv/c", "-q"])
    assert res.exit_code == 1 and "only a store (--to zarr) is written to a URL" in res.output

    preds = [Prediction(s, mask=np.asarray(local.labels(s)[...])) for s in local.sample_ids("test")]
    pset = PredictionSet.from_predictions(TASK, preds, local.id, local.version)
    write_predictions(tmp_path / "p.zarr", pset)
    report_url = f"s3://{s3.bucket}/reports/r.json"
    res = runner.invoke(
        main,
        ["score", "--task", TASK, "--dataset", str(tmp_path / "local.zarr"),
         str(tmp_path / "p.zarr"), "--bootstrap", "0", "--out", report_url, "-q"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert f"report written to {report_url}" in res.output
    report = ScoreReport.load(report_url)
    assert report.headline.value == 1.0 and report.task == TASK
    assert not (tmp_path / "s3:").exists()

    res = runner.invoke(  # a bucket that does not exist: refused before scoring
        main,
        ["score", "--task", TASK, "--dataset", str(tmp_path / "local.zarr"),
         str(tmp_path / "p.zarr"), "--out", "s3://no-such-bucket-here/r.json", "-q"],
    )  # fmt: skip
    assert res.exit_code == 2, res.output
    assert "there is no bucket 'no-such-bucket-here'" in res.output

    res = runner.invoke(main, ["leaderboard", "publish", "--out", f"s3://{s3.bucket}/site"])
    assert res.exit_code == 2, res.output
    assert f"s3://{s3.bucket}/site is a URL; this is written on this machine; publish to " in (
        res.output
    )
    assert not (tmp_path / "s3:").exists()


def test_cli_leaderboard_add_takes_a_report_on_s3(s3, tmp_path):
    """A report written to object storage (`score --out s3://...`) is added to a board by URL;
    a URL with no object, and a local path with no file, are one line each."""
    import yaml

    from cellbench.cli import main
    from cellbench.leaderboard import BoardKey, LeaderboardStore
    from tests.leaderboard.helpers import make_manifest, make_report
    from tests.leaderboard.site_fixture import build_store as build_board

    board = tmp_path / "lb"
    build_board(board)
    url = f"s3://{s3.bucket}/reports/r.json"
    assert make_report(0.77, ci=(0.7, 0.8)).save(url) == url
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(make_manifest("From S3", seed=0)))
    add = ["leaderboard", "add", "--manifest", str(tmp_path / "m.yaml"), "--root", str(board)]
    res = CliRunner().invoke(main, [*add[:2], url, *add[2:], "--submission-sha256", "cd" * 32])
    assert res.exit_code == 0, res.output
    entries = LeaderboardStore(board).entries(BoardKey("toy", "1.0", TASK, "test"))
    assert {e.name: e.report.headline.value for e in entries}["From S3"] == 0.77
    res = CliRunner().invoke(main, [*add[:2], f"s3://{s3.bucket}/reports/none.json", *add[2:]])
    assert res.exit_code == 1 and "reports/none.json: no such report" in res.output
    res = CliRunner().invoke(main, [*add[:2], str(tmp_path / "none.json"), *add[2:]])
    assert res.exit_code == 1 and "none.json: no such file" in res.output
