"""``convert --scheduler``: one Dask task per image or sequence, the sequential result exactly.

Sources are written by the formats' own writers from toy samples; each is converted in this
process (the reference), on Dask's thread pool and on a real ``dask.distributed.LocalCluster``
(two worker processes on loopback, the ``cluster`` fixture of ``tests/conftest.py``), and the
store digests (or the written files, byte for byte) must be equal.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner

from cellbench.cli import main
from cellbench.errors import ValidationError
from cellbench.formats import registry
from cellbench.formats.convert import convert
from cellbench.formats.registry import Format, format_names, get_format, write_samples
from cellbench.store.zarr_store import DatasetStore
from tests.factories import assert_samples_equal, toy_samples

distributed = pytest.importorskip("distributed")

from tests.dask_helpers import one_worker_killed  # noqa: E402 (needs distributed)

try:  # fnet-czi sources are written with pylibCZIrw (the optional czi extra)
    import pylibCZIrw  # noqa: F401

    HAVE_CZI = True
except ImportError:
    HAVE_CZI = False


def _source(fmt: str, root: Path, n: int = 6) -> Path:
    """A source of ``n`` items in format ``fmt``, written by the format's own writer."""
    task = {"ctc": "tracking", "geff": "tracking", "image-folder": "classification"}.get(
        fmt, "instance-segmentation"
    )
    src = root / f"src-{fmt}"
    samples = toy_samples(task, n, seed=3)
    if fmt == "ome-zarr":  # read-only: a cellbench store's images/ is a folder of OME-Zarr images
        write_samples("tiff", samples, root / "tiff-for-ome-zarr")
        return Path(convert(root / "tiff-for-ome-zarr", "tiff", "zarr", src)) / "images"
    if fmt == "fnet-czi":  # read-only: Allen label-free CZI files and their pytorch_fnet table
        from tests.data.allen_label_free import ROWS, csv_text, write_czi

        (src / "data" / "fibrillarin").mkdir(parents=True)
        for i, (stem, _) in enumerate(ROWS[:n]):
            write_czi(src / "data" / "fibrillarin" / f"{stem}.czi", i)
        (src / "fibrillarin.csv").write_text(csv_text(ROWS[:n]))
        return src
    if fmt == "tissuenet":  # read-only: DeepCell npz, one stored and one compressed file
        rng = np.random.default_rng(3)
        x = rng.random((n, 24, 24, 2), dtype=np.float32)
        y = rng.integers(0, 4, (n, 24, 24, 2), dtype=np.int32)
        src.mkdir()
        np.savez(src / "cells_train.npz", X=x[: n // 2], y=y[: n // 2])
        np.savez_compressed(src / "cells_test.npz", X=x[n // 2 :], y=y[n // 2 :])
        return src
    if fmt == "ctc" and n > 2:  # SEG truth in one sequence: the store becomes format 3
        seg = np.zeros_like(samples[2].instances)
        seg[1] = samples[2].instances[1]
        samples[2].seg, samples[2].seg_annotated = seg, np.array([[1, -1]], np.int64)
    write_samples(fmt, samples, src)
    return src


#: Every format with per-item hooks needs a source here (the test below checks it).
SOURCES = (
    "bbbc-labels",
    "cellpose",
    "coco",
    "ctc",
    "dsb",
    "fnet-czi",
    "geff",
    "image-folder",
    "ome-tiff",
    "ome-zarr",
    "stardist",
    "tiff",
    "tissuenet",
)


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sources")
    return {fmt: _source(fmt, root) for fmt in SOURCES if fmt != "fnet-czi" or HAVE_CZI}


def _tree(path: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()
    }


def test_every_per_item_format_reads_what_read_yields(sources) -> None:
    per_item = [n for n in format_names() if get_format(n).per_item]
    assert set(per_item) == set(SOURCES)  # a format gaining the hooks gains a source above
    for name in (n for n in per_item if n in sources):
        fmt = get_format(name)
        listing = fmt.items(sources[name])
        assert listing.problems == [] and len(listing.items) == 6
        by_items = [fmt.read_item(sources[name], item)[0] for item in listing.items]
        reference = list(fmt.read(sources[name]))
        assert len(by_items) == len(reference) == 6
        for a, b in zip(by_items, reference, strict=True):
            assert_samples_equal(a, b)
        assert [s.id for s in registry.read_by_items(fmt, sources[name])] == [
            s.id for s in reference
        ]


@pytest.mark.parametrize("fmt", SOURCES)
def test_store_digest_identical_on_threads_and_a_cluster(fmt, sources, cluster, tmp_path):
    if fmt not in sources:
        pytest.skip(f"{fmt} sources need an optional extra")
    reference = DatasetStore.open(convert(sources[fmt], fmt, "zarr", tmp_path / "seq.zarr"))
    assert reference.sample_ids() and len(reference.sample_ids()) == 6
    assert reference.manifest["format_version"] == ("3" if fmt == "ctc" else "2")
    if fmt == "image-folder":  # the class table reaches the store on every path
        assert reference.class_names("label") == ["class_0", "class_1", "class_2"]
    for k, scheduler in enumerate(("synchronous", "threads", cluster.scheduler_address)):
        tally: dict[str, int] = {}
        out = convert(
            sources[fmt], fmt, "zarr", tmp_path / f"par{k}.zarr", scheduler=scheduler, tally=tally
        )
        got = DatasetStore.open(out)
        assert got.manifest["format_version"] == reference.manifest["format_version"]
        assert got.checksum == reference.checksum, scheduler
        assert got.sample_ids() == reference.sample_ids()
        assert tally["samples"] == 6


def test_format_to_format_files_identical_on_a_cluster(sources, cluster, tmp_path):
    convert(sources["coco"], "coco", "tiff", tmp_path / "seq")
    convert(sources["coco"], "coco", "tiff", tmp_path / "par", scheduler=cluster.scheduler_address)
    seq, par = _tree(tmp_path / "seq"), _tree(tmp_path / "par")
    assert len(seq) == 13 and seq == par  # 6 images, 6 masks, cellbench.json


def test_worker_killed_mid_ingest_store_unchanged(sources, cluster, tmp_path):
    reference = DatasetStore.open(convert(sources["ctc"], "ctc", "zarr", tmp_path / "seq.zarr"))
    with one_worker_killed(cluster, tmp_path / "killed", "_ingest_item"):
        out = convert(
            sources["ctc"], "ctc", "zarr", tmp_path / "par.zarr",
            scheduler=cluster.scheduler_address,
        )  # fmt: skip
    assert DatasetStore.open(out).checksum == reference.checksum


def _bad_tiff(root: Path) -> Path:
    src = _source("tiff", root)
    data = (src / "masks" / "inst-000.tif").read_bytes()
    (src / "masks" / "inst-000.tif").write_bytes(data[: len(data) // 3])  # truncated
    tifffile.imwrite(src / "masks" / "inst-002.tif", np.full((40, 36), 0.5, np.float32))  # dtype
    tifffile.imwrite(src / "masks" / "inst-004.tif", np.zeros((30, 36), np.uint16))  # shape
    (src / "masks" / "inst-005.tif").unlink()  # image without mask
    return src


def _bad_ctc(root: Path) -> Path:
    src = _source("ctc", root, n=3)
    (src / "trac-000" / "t001.tif").unlink()  # a missing frame
    tifffile.imwrite(src / "trac-002" / "t000.tif", np.zeros((5, 5), np.uint16))  # other shape
    return src


@pytest.mark.parametrize(("fmt", "make", "n"), [("tiff", _bad_tiff, 4), ("ctc", _bad_ctc, 2)])
def test_bad_input_on_a_cluster_lists_every_problem_like_sequential(
    fmt, make, n, cluster, tmp_path
):
    src = make(tmp_path)
    errors = []
    for k, scheduler in enumerate((None, "threads", cluster.scheduler_address)):
        dest = tmp_path / f"out{k}.zarr"
        with pytest.raises(ValidationError) as err:
            convert(src, fmt, "zarr", dest, scheduler=scheduler)
        assert not dest.exists()
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(f".out{k}")]
        errors.append((err.value.context, err.value.problems))
    assert errors[0] == errors[1] == errors[2]
    assert len(errors[0][1]) >= n
    if fmt == "ctc":  # both bad sequences are named, not only the first
        text = "\n".join(errors[0][1])
        assert "trac-000" in text and "trac-002" in text and "trac-001" not in text


def test_cli_convert_takes_a_scheduler_and_notes_a_sequential_fallback(
    sources, cluster, tmp_path, monkeypatch
):
    runner = CliRunner()
    digests = []
    for k, extra in enumerate(([], ["--scheduler", cluster.scheduler_address])):
        dest = tmp_path / f"cli{k}.zarr"
        args = ["convert", str(sources["coco"]), "--from", "coco", "--to", "zarr", str(dest)]
        res = runner.invoke(main, [*args, "-q", *extra])
        assert res.exit_code == 0, res.output
        assert "(coco, 6 samples)" in res.output
        digests.append(DatasetStore.open(dest).checksum)
    assert digests[0] == digests[1]

    tiff = get_format("tiff")
    plain = Format("plain-tiff", "tiff without item hooks", tiff.tasks, read=tiff.read)
    monkeypatch.setitem(registry._registered, plain.name, plain)
    res = runner.invoke(main, ["convert", str(sources["tiff"]), "--from", "plain-tiff",
                               "--to", "zarr", str(tmp_path / "plain.zarr"), "-q",
                               "--scheduler", "threads"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "note: format plain-tiff has no per-item reader; reading it sequentially" in res.output
    bad = ["convert", str(sources["tiff"]), "--from", "tiff", "--to", "zarr", str(tmp_path / "x")]
    res = runner.invoke(main, [*bad, "--scheduler", "fast"])
    assert res.exit_code != 0 and "expected one of" in res.output


@pytest.mark.slow
def test_local_process_pool_gives_the_same_store(sources, tmp_path):
    reference = DatasetStore.open(convert(sources["tiff"], "tiff", "zarr", tmp_path / "a.zarr"))
    out = convert(sources["tiff"], "tiff", "zarr", tmp_path / "b.zarr", scheduler="processes")
    assert DatasetStore.open(out).checksum == reference.checksum


def _dup_items(src, **_):
    return registry.ItemList([f"i{k}" for k in range(8)], [], str(src))


def _dup_read_item(src, item, **_):
    sample = toy_samples("instance-segmentation", 1)[0]  # the same id for every item
    return sample, []


def _dup_read(src, **_):
    for item in _dup_items(src).items:
        yield _dup_read_item(src, item)[0]


def test_writer_error_mid_ingest_leaves_nothing_beside_dest(tmp_path, monkeypatch):
    dup = Format("dup", "every item has one id", ("instance-segmentation",), read=_dup_read,
                 items=_dup_items, read_item=_dup_read_item)  # fmt: skip
    monkeypatch.setitem(registry._registered, dup.name, dup)
    (tmp_path / "src").mkdir()
    for scheduler in (None, "threads"):
        with pytest.raises(ValidationError, match="duplicate id"):
            convert(tmp_path / "src", "dup", "zarr", tmp_path / "out.zarr", scheduler=scheduler)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]
