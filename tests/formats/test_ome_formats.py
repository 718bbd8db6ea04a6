"""The ``ome-tiff`` and ``ome-zarr`` formats: axes, channel names, physical sizes, labels.

Real data: the OME-TIFF scratch assay of ``ndev-sampledata==0.0.3`` (pip download, sha256
checked, as the ndev-scratch-assay card pins it). OME-Zarr inputs come from an independent
writer (``ngff-zarr``) and from cellbench's own store.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner

from cellbench.cli import main
from cellbench.errors import ValidationError
from cellbench.formats.registry import get_format, read_by_items, read_samples, write_samples
from cellbench.store.sample import Sample
from cellbench.store.zarr_store import build_store
from tests.factories import assert_samples_equal, memory_available

CARD = {"id": "ome-test", "version": "1", "tasks": ["instance-segmentation"]}
NDEV_WHEEL = "ndev_sampledata-0.0.3-py3-none-any.whl"
NDEV_SHA256 = "e9e30806bd154c3919cc1744e01124ad978fa974f72ddf5f7f0a0bd74d840355"
NDEV_MEMBER = "ndev_sampledata/samples/scratch-assay-labeled-10T-2Ch.tiff"


def _samples() -> list[Sample]:
    rng = np.random.default_rng(0)
    lab = np.zeros((3, 12, 14), np.uint16)
    lab[:, 2:5, 3:7] = 4
    lab[1:, 8:11, 8:12] = 9
    return [
        Sample(
            id="movie",
            image=rng.integers(0, 3000, (3, 2, 12, 14)).astype(np.uint16),
            axes="tcyx",
            channel_names=["dapi", "gfp"],
            split="val",
            pixel_size={"x": 0.325, "y": 0.325, "t": 300.0},
            metadata={"well": "B03"},
            instances=lab,
        ),
        Sample(
            id="stack",
            image=rng.random((1, 4, 12, 14)).astype(np.float32),
            axes="czyx",
            channel_names=["actin"],
            pixel_size={"x": 0.1, "y": 0.1, "z": 0.5},
        ),
    ]


def test_ome_tiff_round_trip_and_ome_xml(tmp_path: Path) -> None:
    first = build_store(_samples(), tmp_path / "a.zarr", CARD)
    write_samples("ome-tiff", first.samples(), tmp_path / "ome")
    with tifffile.TiffFile(tmp_path / "ome" / "movie.ome.tif") as tif:
        pixels = tifffile.xml2dict(tif.ome_metadata)["OME"]["Image"][0]["Pixels"]
        assert [c["Name"] for c in pixels["Channel"]] == ["dapi", "gfp"]
        assert (pixels["PhysicalSizeX"], pixels["TimeIncrement"]) == (0.325, 300.0)
        assert [s.name for s in tif.series] == ["image", "instances"]
    assert get_format("ome-tiff").validate(tmp_path / "ome") == []
    back = build_store(read_samples("ome-tiff", tmp_path / "ome"), tmp_path / "b.zarr", CARD)
    assert back.checksum == first.checksum
    for sid in ("movie", "stack"):
        a, b = first.sample(sid), back.sample(sid)
        assert a.axes == b.axes and np.array_equal(a.image, b.image)
        assert (a.channel_names, a.pixel_size, a.split) == (b.channel_names, b.pixel_size, b.split)
    assert np.array_equal(back.sample("movie").instances, first.sample("movie").instances)


def test_ome_tiff_units_converted_unknown_left_unknown(tmp_path: Path) -> None:
    data = np.ones((2, 3, 8, 9), np.uint16)
    meta = {
        "axes": "ZCYX",
        "PhysicalSizeX": 650.0,
        "PhysicalSizeXUnit": "nm",
        "PhysicalSizeY": 0.65,
        "PhysicalSizeZ": 2.0,
        "PhysicalSizeZUnit": "furlong",
    }
    tifffile.imwrite(
        tmp_path / "f.ome.tif", data, ome=True, metadata=meta, photometric="minisblack"
    )
    (s,) = read_samples("ome-tiff", tmp_path / "f.ome.tif")
    assert s.axes == "czyx" and s.image.shape == (3, 2, 8, 9)
    assert s.pixel_size == pytest.approx({"x": 0.65, "y": 0.65})
    assert s.metadata["ome_notes"] == "PhysicalSizeZ unit 'furlong' unknown: size left unknown"
    assert s.channel_names == ["c0", "c1", "c2"]


def test_ome_tiff_bad_files_all_listed(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "plain.ome.tif", np.zeros((4, 4), np.uint8), ome=False)
    (tmp_path / "cut.ome.tif").write_bytes(b"II*\x00\x08\x00")
    tifffile.imwrite(
        tmp_path / "named.ome.tif",
        np.zeros((2, 4, 4), np.uint16),
        ome=True,
        metadata={"axes": "CYX", "Channel": {"Name": ["a", "b"]}},
        photometric="minisblack",
    )
    problems = get_format("ome-tiff").validate(tmp_path, labels="nuclei")
    assert problems[0].startswith("cut.ome.tif: cannot be read as OME-TIFF (")
    assert problems[1:] == [
        "named.ome.tif: no channel 'nuclei' (channels: a, b)",
        "plain.ome.tif: no OME-XML metadata (expected an OME-TIFF)",
    ]
    with pytest.raises(ValidationError, match="time='frames': expected one of axis, samples"):
        list(read_samples("ome-tiff", tmp_path, time="frames"))
    with pytest.raises(ValidationError) as err:  # reading lists every bad file at once too
        list(read_samples("ome-tiff", tmp_path, labels="nuclei"))
    assert err.value.problems == problems
    for time in ("axis", "samples"):  # one item at a time: the same lines
        with pytest.raises(ValidationError) as err:
            list(read_by_items(get_format("ome-tiff"), tmp_path, labels="nuclei", time=time))
        assert err.value.problems == problems


def test_ome_tiff_items_per_file_or_time_point_equal_read(tmp_path: Path) -> None:
    write_samples("ome-tiff", _samples(), tmp_path / "ome")
    fmt = get_format("ome-tiff")
    for time, items in (
        ("axis", ["movie.ome.tif", "stack.ome.tif"]),
        ("samples", ["movie.ome.tif:0", "movie.ome.tif:1", "movie.ome.tif:2", "stack.ome.tif"]),
    ):
        listing = fmt.items(tmp_path / "ome", time=time)
        assert listing.items == items and listing.problems == []
        reference = list(fmt.read(tmp_path / "ome", time=time))
        alone = [fmt.read_item(tmp_path / "ome", item, time=time) for item in items]
        assert [more for _, more in alone] == [[]] * len(items)
        for a, (b, _) in zip(reference, alone, strict=True):
            assert_samples_equal(a, b)
            assert a.metadata == b.metadata and a.pixel_size == b.pixel_size
    assert [s.id for s in read_by_items(fmt, tmp_path / "ome", time="samples")] == [
        "movie-t000",
        "movie-t001",
        "movie-t002",
        "stack",
    ]
    # a bad file with time points: its problem once (by time point 0), not once per frame
    tifffile.imwrite(
        tmp_path / "ome" / "named.ome.tif",
        np.zeros((3, 2, 4, 4), np.uint16),
        ome=True,
        metadata={"axes": "TCYX", "Channel": {"Name": ["a", "b"]}},
        photometric="minisblack",
    )
    assert fmt.items(tmp_path / "ome", time="samples").items[3:6] == [
        f"named.ome.tif:{t}" for t in range(3)
    ]
    expected = [  # every file once, the three-frame ones included
        "movie.ome.tif: no channel 'nuclei' (channels: dapi, gfp)",
        "named.ome.tif: no channel 'nuclei' (channels: a, b)",
        "stack.ome.tif: no channel 'nuclei' (channels: actin)",
    ]
    with pytest.raises(ValidationError) as err:
        list(read_by_items(fmt, tmp_path / "ome", time="samples", channels="nuclei"))
    assert err.value.problems == expected
    assert err.value.problems == fmt.validate(tmp_path / "ome", time="samples", channels="nuclei")
    dest = tmp_path / "out.zarr"
    res = CliRunner().invoke(
        main,
        ["convert", str(tmp_path / "ome"), "--from", "ome-tiff", "--to", "zarr", str(dest),
         "--option", "time=samples", "--option", "channels=nuclei", "--scheduler", "synchronous"],
    )  # fmt: skip
    assert res.exit_code == 1 and all(line in res.output for line in expected), res.output
    assert sorted(q.name for q in tmp_path.iterdir()) == ["ome"]  # no DEST, no scratch


@pytest.fixture(scope="module")
def ndev_tiff(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ndev")
    pip = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet"]
    subprocess.run(
        [*pip, "ndev-sampledata==0.0.3", "-d", str(folder)],
        check=True,
        timeout=600,
    )
    wheel = folder / NDEV_WHEEL
    assert hashlib.sha256(wheel.read_bytes()).hexdigest() == NDEV_SHA256
    out = folder / "scratch-assay.ome.tif"
    with zipfile.ZipFile(wheel) as zf:
        out.write_bytes(zf.read(NDEV_MEMBER))
    return out


def test_ome_tiff_real_scratch_assay(ndev_tiff: Path) -> None:
    with tifffile.TiffFile(ndev_tiff) as tif:
        raw = tif.series[0].asarray()  # CTYX: H3342, oblique, nuclei, cyto
    got = list(
        read_samples("ome-tiff", ndev_tiff, labels="nuclei", channels="oblique", time="samples")
    )
    assert [s.id for s in got] == [f"scratch-assay-t{t:03d}" for t in range(10)]
    s = got[3]
    assert s.axes == "cyx" and s.channel_names == ["oblique"]
    assert s.pixel_size == {"x": 0.619, "y": 0.619}  # PhysicalSizeZ of a 2D image dropped
    assert np.array_equal(s.image[0], raw[1, 3])
    assert np.array_equal(s.instances, raw[2, 3])
    assert int(s.instances.max()) > 50  # real nuclei labels
    opts = {"labels": "nuclei", "channels": "oblique", "time": "samples"}
    by_items = list(read_by_items(get_format("ome-tiff"), ndev_tiff, **opts))  # frame by frame
    assert len(by_items) == len(got)
    for a, b in zip(got, by_items, strict=True):
        assert_samples_equal(a, b)
    (whole,) = read_samples("ome-tiff", ndev_tiff, channels="H3342,oblique")
    assert whole.axes == "tcyx" and whole.image.shape == (10, 2, 210, 576)
    assert whole.channel_names == ["H3342", "oblique"] and whole.instances is None


def test_ome_zarr_from_cellbench_store_and_ngff_zarr(tmp_path: Path) -> None:
    store = build_store(_samples(), tmp_path / "a.zarr", CARD)
    got = {s.id: s for s in read_samples("ome-zarr", tmp_path / "a.zarr" / "images")}
    a = store.sample("movie")
    assert np.array_equal(got["movie"].image, a.image) and got["movie"].axes == "tcyx"
    assert np.array_equal(got["movie"].instances, a.instances)
    assert got["movie"].channel_names == ["dapi", "gfp"]
    assert got["movie"].pixel_size == pytest.approx(a.pixel_size)
    assert got["stack"].pixel_size == pytest.approx({"x": 0.1, "y": 0.1, "z": 0.5})
    # an independent writer, NGFF 0.4 on Zarr v2, nanometres
    nz = pytest.importorskip("ngff_zarr")
    data = np.arange(5 * 16 * 18, dtype=np.uint16).reshape(5, 16, 18)
    image = nz.to_ngff_image(
        data,
        dims=["z", "y", "x"],
        scale={"z": 2000.0, "y": 400.0, "x": 400.0},
        axes_units={"z": "nanometer", "y": "nanometer", "x": "nanometer"},
    )
    ms = nz.to_multiscales(image, scale_factors=[2])
    nz.to_ngff_zarr(str(tmp_path / "cells.ome.zarr"), ms, version="0.4")
    (s,) = read_samples("ome-zarr", tmp_path / "cells.ome.zarr")
    assert s.id == "cells" and s.axes == "czyx" and np.array_equal(s.image[0], data)
    assert s.pixel_size == pytest.approx({"z": 2.0, "y": 0.4, "x": 0.4})
    assert s.instances is None


def test_ome_zarr_problems(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert get_format("ome-zarr").validate(tmp_path / "empty") == [
        f"{tmp_path / 'empty'}: no multiscales metadata and no OME-Zarr image groups inside"
    ]
    build_store(_samples(), tmp_path / "a.zarr", CARD)
    with pytest.raises(ValidationError) as err:
        list(read_samples("ome-zarr", tmp_path / "a.zarr" / "images" / "movie", labels="cells"))
    assert err.value.problems == ["movie/labels: no label image 'cells' (found: instances)"]
    with pytest.raises(ValidationError) as err:  # every image of a folder, at once
        list(read_samples("ome-zarr", tmp_path / "a.zarr" / "images", labels="cells"))
    assert err.value.problems == [
        "movie/labels: no label image 'cells' (found: instances)",
        "stack/labels: no label image 'cells' (found: none)",
    ]


def test_ome_zarr_level_larger_than_memory_is_refused_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Zarr allocates a level's declared shape (filling absent chunks): checked first."""
    build_store(_samples(), tmp_path / "a.zarr", CARD)
    movie = tmp_path / "a.zarr" / "images" / "movie"  # (t, c, y, x) 3 x 2 x 12 x 14 uint16
    memory_available(monkeypatch, 1000)
    with pytest.raises(ValidationError) as err:
        list(read_samples("ome-zarr", movie))
    assert err.value.problems == [
        "movie/0: its 3 x 2 x 12 x 14 uint16 pixels need 2.0 KiB of memory to decode, more "
        "than the 1000 bytes available"
    ]
    memory_available(monkeypatch, 2016)
    assert [s.id for s in read_samples("ome-zarr", movie)] == ["movie"]
