"""Store format 4: image, label and target arrays in Zarr v3 shards.

Same content as format 2 (decoded sha256 of every array), far fewer files, byte-identical shard
files to zarr's own writer, verified reads of whole arrays and of patches, corruption named,
``convert --shard`` (also per item on a scheduler), ``datasets upgrade --shard``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import zarr
from click.testing import CliRunner

from cellbench.cli import main
from cellbench.errors import ChecksumError, CorruptStoreError, StoreError
from cellbench.formats.convert import convert
from cellbench.formats.registry import write_samples
from cellbench.registry import import_store, load, upgrade
from cellbench.store.chunk_reader import shard_index, shard_ranges
from cellbench.store.format import FORMATS, FormatV4, detect_format
from cellbench.store.integrity import forget_verdicts, verify_store
from cellbench.store.sample import Sample
from cellbench.store.verified import RangedMemo
from cellbench.store.zarr_store import DatasetStore, build_store
from tests.factories import TASK_FIXTURES, assert_samples_equal, toy_samples
from tests.ome_validation import validate_store_ome

CARD = {"id": "toy", "version": "1.0", "tasks": ["instance-segmentation"]}
V4 = FORMATS["4"]


def _big_samples() -> list[Sample]:
    """Arrays of several tiles and bricks, with edges that cut tiles and shards."""
    rng = np.random.default_rng(3)

    def labels(shape: tuple[int, ...]) -> np.ndarray:
        out = np.zeros(shape, np.uint16)
        out[..., 40:300, 100:260] = 5
        out[..., -20:, -30:] = 9  # the far corner: edge tiles of the edge shard
        return out

    plane = (2300, 600)  # 9 x 3 tiles: two shards down (8 + 1 tile rows), one across
    return [
        Sample(
            id="plane",
            image=rng.integers(0, 4000, (2, *plane), dtype=np.uint16),
            instances=labels(plane),
            split="test",
        ),
        Sample(
            id="small",
            image=rng.integers(0, 4000, (1, 520, 704), dtype=np.uint16),
            instances=labels((520, 704)),
            split="test",
        ),
        Sample(
            id="volume",
            image=rng.integers(0, 255, (1, 20, 300, 300), dtype=np.uint8),
            axes="czyx",
            instances=labels((20, 300, 300)),
            split="test",
        ),
    ]


def _files(path: Path) -> int:
    return sum(len(names) for _, _, names in os.walk(path))


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> tuple[DatasetStore, DatasetStore, list[Sample]]:
    root = tmp_path_factory.mktemp("sharded")
    samples = _big_samples()
    v2 = build_store(samples, root / "v2.zarr", CARD)
    v4 = build_store(samples, root / "v4.zarr", CARD, fmt=V4)
    return v2, v4, samples


def test_format_4_holds_the_same_content_in_far_fewer_files(pair):
    v2, v4, _ = pair
    assert (v2.format.version, v4.format.version) == ("2", "4")
    assert detect_format(v4.path).sharded and not detect_format(v2.path).sharded
    a2, a4 = v2.manifest["arrays"], v4.manifest["arrays"]
    assert a2.keys() == a4.keys()
    for path in a2:  # decoded content, shape and dtype: identical
        assert (a4[path]["sha256"], a4[path]["shape"]) == (a2[path]["sha256"], a2[path]["shape"])
    entry = a4["images/plane/0"]
    assert entry["chunks"] == [1, 256, 256] and entry["shards"] == [1, 2048, 768]
    assert sorted(entry["chunk_sha256"]) == ["c/0/0/0", "c/0/1/0", "c/1/0/0", "c/1/1/0"]
    for path, arr in a4.items():  # the writer's per-range record is the file's own
        for key, record in arr.get("shard_ranges", {}).items():
            per = tuple(s // c for s, c in zip(arr["shards"], arr["chunks"], strict=True))
            assert record == shard_ranges((v4.path / path / key).read_bytes(), per, key)
    # the second shard down holds rows 2048-2299: one tile row of its 8, the rest absent
    edge = shard_index((v4.path / "images/plane/0/c/0/1/0").read_bytes(), (1, 8, 3), "edge")
    assert [coords for coords, _ in edge] == [(0, 0, 0), (0, 0, 1), (0, 0, 2)]
    assert a4["images/volume/0"]["shards"] == [1, 16, 384, 384]
    assert a4["images/small/labels/instances/0"]["shards"] == [768, 768]
    assert "shards" not in a4["samples/id"]  # tables are not sharded
    assert _files(v4.path) < _files(v2.path) / 4
    assert verify_store(v4.path) == []
    assert validate_store_ome(v4.path) > 0  # sharding is valid OME-Zarr 0.5


def test_whole_arrays_and_patches_read_the_same(pair):
    v2, v4, samples = pair
    store = DatasetStore.open(v4.path)
    for s in samples:
        np.testing.assert_array_equal(store.read_image(s.id), s.image)  # hand-rolled reader
        np.testing.assert_array_equal(store.read_labels(s.id), s.instances)
        sel = (slice(None),) * (s.image.ndim - 2) + (slice(250, 2100), slice(5, 590))
        np.testing.assert_array_equal(store.image(s.id)[sel], s.image[sel])  # zarr, ranged
        assert_samples_equal(store.sample(s.id), v2.sample(s.id))


def test_shard_files_are_byte_identical_to_zarrs(pair, tmp_path):
    _, v4, _ = pair
    for path in ("images/plane/0", "images/volume/labels/instances/0"):
        mine = zarr.open_array(v4.path / path, mode="r")
        theirs = zarr.open_group(tmp_path / path.replace("/", "_"), mode="w").create_array(
            "a",
            shape=mine.shape,
            dtype=mine.dtype,
            chunks=mine.chunks,
            shards=mine.shards,
            compressors=mine.compressors,
            fill_value=0,
            config={"write_empty_chunks": True},
        )
        theirs[...] = mine[...]
        keys = v4.manifest["arrays"][path]["chunk_sha256"]
        for key in keys:
            ours = (v4.path / path / key).read_bytes()
            assert ours == Path(theirs.store.root, "a", key).read_bytes(), (path, key)


@pytest.mark.parametrize("task", TASK_FIXTURES)
def test_every_task_round_trips_in_format_4(tmp_path, task):
    samples = toy_samples(task)
    classes = {"label": ["a", "b", "c"]} if task == "classification" else {}
    store = build_store(samples, tmp_path / "s.zarr", {**CARD, "tasks": [task]}, classes, fmt=V4)
    assert store.format.version == "4" and store.verify() == []
    for s in samples:
        assert_samples_equal(s, store.sample(s.id))


def test_sparse_arrays_leave_out_empty_inner_chunks_and_shards(tmp_path):
    lab = np.zeros((600, 2100), np.uint16)
    lab[10:20, 10:20] = 3  # one inner chunk of the first shard; the second shard is empty
    sample = Sample(id="s", image=np.ones((1, 600, 2100), np.uint16), instances=lab, split="test")
    store = build_store([sample], tmp_path / "s.zarr", CARD, fmt=V4, sparse=["instances"])
    folder = store.path / "images/s/labels/instances/0"
    entry = store.manifest["arrays"]["images/s/labels/instances/0"]
    assert entry["sparse"] and sorted(entry["chunk_sha256"]) == ["c/0/0"]
    data = (folder / "c/0/0").read_bytes()
    present = shard_index(data, (3, 8), "x")
    assert [coords for coords, _ in present] == [(0, 0)]
    assert verify_store(store.path) == []
    np.testing.assert_array_equal(DatasetStore.open(store.path).read_labels("s"), lab)
    np.testing.assert_array_equal(DatasetStore.open(store.path).labels("s")[...], lab)
    (folder / "c/0/0").unlink()  # a listed shard is missing: an error, not zeros
    forget_verdicts()
    assert "is missing 1 chunk file(s): c/0/0" in "\n".join(verify_store(store.path))
    with pytest.raises(CorruptStoreError, match="missing chunk file c/0/0"):
        DatasetStore.open(store.path).read_labels("s")


def test_a_damaged_shard_is_named_by_every_read(tmp_path):
    samples = _big_samples()[1:2]
    store = build_store(samples, tmp_path / "s.zarr", CARD, fmt=V4)
    shard = store.path / "images/small/labels/instances/0/c/0/0"
    raw = bytearray(shard.read_bytes())
    where = dict(shard_index(bytes(raw), (3, 3), "x"))[(1, 1)]  # rows and columns 256-511
    raw[where[0] + where[1] // 2] ^= 0x01
    shard.write_bytes(bytes(raw))
    forget_verdicts()
    problems = verify_store(store.path)
    assert problems == [
        f"{store.path}: array 'images/small/labels/instances/0' has 1 corrupt chunk file(s) "
        "(sha256 differs from the manifest): c/0/0"
    ]
    reopened = DatasetStore.open(store.path)
    with pytest.raises(CorruptStoreError, match=r"labels/instances/0' \(sample 'small'\)"):
        reopened.read_labels("small")
    with pytest.raises(CorruptStoreError, match=r"chunk file c/0/0 does not match .* bytes"):
        reopened.labels("small")[300:310, 300:310]  # a ranged read checks what it reads
    np.testing.assert_array_equal(  # an intact inner chunk of the same shard still reads
        reopened.labels("small")[0:10, 90:110], samples[0].instances[0:10, 90:110]
    )


def test_shard_index_that_does_not_fit_is_one_line():
    with pytest.raises(StoreError, match="x: shard of 10 bytes cannot hold its index"):
        shard_index(b"0" * 10, (2, 2), "x")
    table = np.array([[0, 5], [2**64 - 1, 2**64 - 1], [3, 2**63], [0, 1]], "<u8")
    data = b"abcde" + table.tobytes() + b"crc!"
    with pytest.raises(StoreError, match="y: shard index points past the shard's chunks"):
        shard_index(data, (2, 2), "y")
    table[2] = (3, 2)
    assert shard_index(b"abcde" + table.tobytes() + b"crc!", (2, 2), "z") == [
        ((0, 0), (0, 5)),
        ((1, 0), (3, 2)),
        ((1, 1), (0, 1)),
    ]


def test_shard_shapes_are_whole_tiles_never_wider_than_the_array():
    fmt = FormatV4()
    assert fmt.shards((3, 100, 100), "cyx") == (1, 100, 100)  # one tile: the chunk itself
    assert fmt.shards((3, 5000, 300), "cyx") == (1, 2048, 512)
    assert fmt.shards((2, 1, 40, 1000, 1000), "tczyx") == (1, 1, 16, 1024, 1024)
    assert fmt.shards((700, 70), "yx") == (768, 70)


def test_ranged_memo_is_bounded_and_least_recently_used_goes_first():
    memo = RangedMemo(limit=10)
    memo.put("a", b"1234")
    memo.put("b", b"5678")
    assert memo.get("a") == b"1234"  # a is now the most recent
    memo.put("c", b"90ab")
    assert memo.get("b") is None and memo.get("a") == b"1234" and memo.get("c") == b"90ab"
    memo.put("big", b"x" * 11)  # over the limit: not kept, nothing evicted for it
    assert memo.get("big") is None and memo.get("a") == b"1234"


def _folder(tmp_path: Path) -> Path:
    samples = _big_samples()[:2]
    for s in samples:
        s.split = "train"
    write_samples("tiff", samples, tmp_path / "src")
    return tmp_path / "src"


def test_convert_shard_writes_format_4_also_per_item(tmp_path):
    src = _folder(tmp_path)
    res = CliRunner().invoke(
        main, ["convert", str(src), "--from", "tiff", "--to", "zarr", str(tmp_path / "a"), "-q"]
    )
    assert res.exit_code == 0, res.output
    args = ["convert", str(src), "--from", "tiff", "--to", "zarr", str(tmp_path / "b"), "-q"]
    res = CliRunner().invoke(main, [*args, "--shard"])
    assert res.exit_code == 0, res.output
    plain, sharded = DatasetStore.open(tmp_path / "a"), DatasetStore.open(tmp_path / "b")
    assert (plain.format.version, sharded.format.version) == ("2", "4")
    assert sharded.verify() == []
    for sid in plain.sample_ids():
        assert_samples_equal(plain.sample(sid), sharded.sample(sid))
    per_item = convert(src, "tiff", "zarr", tmp_path / "c", scheduler="threads", shard=True)
    assert DatasetStore.open(per_item).checksum == sharded.checksum
    res = CliRunner().invoke(main, [*args[:5], "tiff", str(tmp_path / "d"), "--shard"])
    assert res.exit_code == 2 and "applies to --to zarr" in res.output
    assert not (tmp_path / "d").exists()


def test_upgrade_shard_converts_on_request_and_checks_the_content(tmp_path, monkeypatch):
    samples = _big_samples()[1:2] + toy_samples("instance-segmentation", n=2)
    src = build_store(samples, tmp_path / "v2.zarr", CARD)
    expected = [src.sample(s.id) for s in samples]
    import_store(src.path)
    res = CliRunner().invoke(main, ["datasets", "upgrade", "toy@1.0", "-q"])
    assert "already store format 2" in res.output
    import cellbench.registry as registry

    real = registry.build_store

    def altered(samples, *args, **kwargs):  # a converter that loses a pixel
        def changed():
            for s in samples:
                if s.id == "small":
                    s.instances = s.instances.copy()
                    s.instances[0, 0] = 1
                yield s

        return real(changed(), *args, **kwargs)

    monkeypatch.setattr(registry, "build_store", altered)
    with pytest.raises(ChecksumError, match=r"differs .* in 1 array\(s\) \(first: images/small"):
        upgrade("toy@1.0", shard=True)
    monkeypatch.setattr(registry, "build_store", real)
    assert load("toy@1.0").format.version == "2"  # kept as it was
    res = CliRunner().invoke(main, ["datasets", "upgrade", "toy@1.0", "--shard", "-q"])
    assert res.exit_code == 0, res.output
    assert "upgraded from store format 2 to 4" in res.output
    up = load("toy@1.0")
    assert up.format.version == "4" and up.verify() == []
    for s in expected:
        assert_samples_equal(s, up.sample(s.id))
    res = CliRunner().invoke(main, ["datasets", "upgrade", "toy@1.0", "--shard", "-q"])
    assert "already store format 4" in res.output
    assert [p.name for p in up.path.parent.iterdir()] == [up.path.name]  # no scratch left


@pytest.mark.parametrize("version", ["2", "4"])
def test_region_reads_equal_zarr_slicing(tmp_path, version):
    """DatasetStore.read_region (the training reader's path on local stores, no Zarr) gives
    what slicing the zarr array gives, in both formats, for 2D, 3D and time-lapse arrays."""
    rng = np.random.default_rng(5)
    seq = rng.integers(0, 255, (3, 2, 300, 530), dtype=np.uint8)
    samples = [
        *_big_samples()[1:],
        Sample(
            id="movie",
            image=seq,
            axes="tcyx",
            instances=rng.integers(0, 9, (3, 300, 530), dtype=np.uint16),
            tracks=np.array([[k, 0, 2, 0] for k in range(1, 9)], np.int64),
            split="test",
        ),
    ]
    card = {**CARD, "tasks": ["instance-segmentation"]}
    store = build_store(samples, tmp_path / "s.zarr", card, fmt=FORMATS[version])
    store = DatasetStore.open(store.path)
    selections = {
        "small": [(slice(None), slice(250, 270), slice(500, 704)), (0, slice(0, 520), 3),
                  (-1, slice(519, 600), slice(None)), (slice(None), slice(10, 10))],
        "volume": [(slice(None), slice(3, 18), slice(120, 140), slice(250, 300)),
                   (0, 19, slice(None), slice(0, 1))],
        "movie": [(1, slice(None), slice(200, 290), slice(250, 520)), (2, 1, 299, 529)],
    }  # fmt: skip
    for sid, sels in selections.items():
        for sel in sels:
            got = store.read_region(sid, "image", sel)
            np.testing.assert_array_equal(got, store.image(sid)[sel])
            assert got.dtype == store.image(sid).dtype
            lab = sel[1:] if sid != "movie" else (sel[0], *sel[2:])
            np.testing.assert_array_equal(
                store.read_region(sid, "instances", lab), store.labels(sid)[lab]
            )
    with pytest.raises(IndexError):  # out of bounds: left to zarr, which says so
        store.read_region("small", "image", (5,))


def test_region_reads_of_a_damaged_tile_and_of_sparse_shards(tmp_path):
    lab = np.zeros((600, 2100), np.uint16)
    lab[300:310, 10:20] = 3
    sample = Sample(id="s", image=np.ones((1, 600, 2100), np.uint16), instances=lab, split="test")
    store = build_store([sample], tmp_path / "s.zarr", CARD, fmt=V4, sparse=["instances"])
    store = DatasetStore.open(store.path)
    np.testing.assert_array_equal(
        store.read_region("s", "instances", (slice(250, 350), slice(0, 2100))), lab[250:350]
    )  # the second shard across is absent: zeros
    shard = store.path / "images/s/0/c/0/0/0"
    raw = bytearray(shard.read_bytes())
    a, b = dict(shard_index(bytes(raw), (1, 3, 8), "x"))[(0, 1, 2)]  # rows 256-511, cols 512-767
    raw[a + b // 2] ^= 1
    shard.write_bytes(bytes(raw))
    fresh = DatasetStore.open(store.path)
    np.testing.assert_array_equal(  # other tiles of the shard read
        fresh.read_region("s", "image", (0, slice(0, 100), slice(0, 100))), np.ones((100, 100))
    )
    with pytest.raises(CorruptStoreError, match=r"images/s/0' \(sample 's'\) chunk file c/0/0/0"):
        fresh.read_region("s", "image", (0, slice(300, 310), slice(600, 610)))
