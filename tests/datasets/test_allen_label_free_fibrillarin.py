"""Recipe allen-label-free-fibrillarin: fake CZI archive + pytorch_fnet table from 127.0.0.1.

The CZI files are written with pylibCZIrw (the optional ``czi`` extra), so the module skips
when it is absent. The card pins the real table's sha256; the fake table has another, so the
test swaps the pin in its copy of the card (and checks the real pin is in the card first).
"""

from __future__ import annotations

import hashlib
import io
import shutil
import tarfile
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest

from cellbench.errors import ValidationError
from cellbench.formats.registry import get_format, read_by_items, read_samples
from cellbench.registry import pull
from cellbench.store.zarr_store import DatasetStore
from tests.data.allen_label_free import (
    ROWS,
    SCALE_UM,
    csv_text,
    fake_archive,
    volume,
    write_czi,
)
from tests.datasets.recipe_check import REPO, card_of
from tests.store.fetch_helpers import HTTPFileServer

pytest.importorskip("pylibCZIrw")

IDENT = "allen-label-free-fibrillarin"
ARCHIVE = (
    "https://downloads.allencell.org/publication-data/label-free-prediction/fibrillarin.tar.gz"
)
TABLE = (
    "https://raw.githubusercontent.com/AllenCellModeling/pytorch_fnet/"
    "0c5a4f3c135c230a1281db5ab3812bc985522054/data/csvs/fibrillarin.csv"
)
REAL_TABLE_SHA = "cb54169affea8d1dc2e782dbf1e1c44b2959631c858a9cfcd6cb48f989b5f00d"


def pull_fake(
    served: dict[str, bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> DatasetStore:
    """Pull the recipe with the card's URLs (and the table's pin) pointed at ``served``."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    server = HTTPFileServer()
    try:
        catalog = tmp_path / "catalog"
        shutil.copytree(REPO / "datasets" / IDENT, catalog / IDENT)
        card_file = catalog / IDENT / "card.yaml"
        text = card_file.read_text()
        assert REAL_TABLE_SHA in text and "size: 7769" in text
        table = served[TABLE]
        text = text.replace(REAL_TABLE_SHA, hashlib.sha256(table).hexdigest())
        text = text.replace("size: 7769", f"size: {len(table)}")
        for url, data in served.items():
            assert url in text, f"{url} is not in the card"
            server.add(urlsplit(url).path, data)
            text = text.replace(url, server.url(urlsplit(url).path))
        card_file.write_text(text)
        monkeypatch.setenv("CELLBENCH_CATALOG", str(catalog))
        monkeypatch.setenv("CELLBENCH_OFFLINE", "0")
        store = pull(IDENT, progress=False)
    finally:
        server.close()
    assert store.verify() == []
    return store


def test_recipe_builds_plate_grouped_pairs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    card = card_of(IDENT)
    assert card["license"] == "LicenseRef-AllenInstitute-Terms-of-Use"
    assert card["annotation"]["provenance"] == "measured"
    archive, table = fake_archive()
    store = pull_fake({ARCHIVE: archive, TABLE: table}, tmp_path, monkeypatch)
    stems = [stem for stem, _ in ROWS]
    assert sorted(store.sample_ids()) == sorted(stems)
    splits = {s: store.sample_ids(s) for s in ("train", "val", "test")}
    assert all(splits.values())  # every split gets a plate
    plate_of = {sid: store.sample(sid).metadata["plate"] for sid in stems}
    for a in ("train", "val", "test"):
        for b in ("train", "val", "test"):
            if a < b:  # no plate in two splits
                assert not {plate_of[i] for i in splits[a]} & {plate_of[i] for i in splits[b]}
    # the two fields of plate 3500001483 stay together
    assert store.sample(stems[0]).split == store.sample(stems[1]).split
    for i, stem in enumerate(stems):
        s = store.sample(stem)
        assert s.axes == "czyx" and s.image.shape == (1, 3, 12, 10)
        assert s.image.dtype == np.uint16 and s.target.dtype == np.uint16
        np.testing.assert_array_equal(s.image[0], volume(i, 6))  # bright field: channel 6
        np.testing.assert_array_equal(s.target[0], volume(i, 3))  # fibrillarin: channel 3
        assert s.channel_names == ["bright field"]
        assert s.target_channel_names == ["fibrillarin"]
        assert s.pixel_size == pytest.approx(dict(zip("xyz", SCALE_UM, strict=True)))
    meta = store.sample(stems[3]).metadata
    assert meta["plate"] == "3500001549" and meta["well"] == "E05"
    assert meta["scene"] == 16 and meta["position"] == 48
    assert meta["colony_position"] == "e" and meta["structure"] == "fibrillarin"


def test_missing_archive_members_are_listed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive, table = fake_archive()
    # the table names two files the archive lacks
    extra = (("3500001432_100X_20171020_4-Scene-11-P46-F06", ""), ("3500001560_100X_x", ""))
    table = csv_text(ROWS + extra).encode()
    with pytest.raises(ValidationError) as err:
        pull_fake({ARCHIVE: archive, TABLE: table}, tmp_path, monkeypatch)
    text = "\n".join(err.value.problems)
    assert (
        "no member 3500001432_100X_20171020_4-Scene-11-P46-F06.czi (listed in the pytorch_fnet "
        "table as data/fibrillarin/3500001432_100X_20171020_4-Scene-11-P46-F06.czi)"
    ) in text
    assert "no member 3500001560_100X_x.czi" in text


def _folder(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    (root / "data" / "fibrillarin").mkdir(parents=True)
    for i, (stem, _) in enumerate(ROWS):
        write_czi(root / "data" / "fibrillarin" / f"{stem}.czi", i)
    (root / "fibrillarin.csv").write_text(csv_text())
    return root


def test_validator_lists_every_problem(tmp_path: Path) -> None:
    root = _folder(tmp_path)
    files = root / "data" / "fibrillarin"
    fmt = get_format("fnet-czi")
    assert fmt.validate(root) == []
    write_czi(files / f"{ROWS[0][0]}.czi", 0, n_channels=4)  # target 3 ok, signal 6 missing
    write_czi(files / f"{ROWS[1][0]}.czi", 1, short_channel=3)  # target one z plane short
    (files / f"{ROWS[2][0]}.czi").write_bytes(b"not a czi")  # unreadable
    (files / f"{ROWS[3][0]}.czi").unlink()  # missing
    write_czi(files / f"{ROWS[4][0]}.czi", 4, empty_channel=3)  # target channel has no pixels
    write_czi(files / f"{ROWS[5][0]}.czi", 5, small_channel=6)  # bright field 2 px narrower
    problems = fmt.validate(root)
    assert len(problems) == 6, problems
    assert problems[0].startswith(f"{ROWS[0][0]}.czi (fibrillarin.csv row 2): channel_signal 6")
    assert "outside the file's 4 channel(s)" in problems[0]
    assert "target channel 3 has 2" in problems[1] and "same z-stack" in problems[1]
    assert "unreadable CZI file" in problems[2] and ROWS[2][0] in problems[2]
    assert "file not found" in problems[3] and ROWS[3][0] in problems[3]
    assert problems[4] == (
        f"{ROWS[4][0]}.czi (fibrillarin.csv row 6): channel_target 3 has no pixels in the "
        "file (missing channel)"
    )
    assert problems[5] == (
        f"{ROWS[5][0]}.czi (fibrillarin.csv row 7): planes of the input and target channels "
        "cover different x/y extents [(12, 8), (12, 10)] (y, x) (expected one extent for every "
        "plane)"
    )
    with pytest.raises(ValidationError) as err:
        next(read_samples("fnet-czi", root))
    assert err.value.problems == problems  # the reader refuses before reading pixels
    # one row at a time (convert --scheduler): the same lines, nothing yielded
    with pytest.raises(ValidationError) as err:
        list(read_by_items(fmt, root))
    assert err.value.problems == problems
    listing = fmt.items(root)
    assert listing.problems == [] and listing.items == [f"fibrillarin.csv:{i}" for i in range(2, 8)]
    assert fmt.read_item(root, listing.items[4]) == (None, [problems[4]])
    from click.testing import CliRunner

    from cellbench.cli import main

    for extra in ([], ["--scheduler", "synchronous"]):
        dest = tmp_path / "out.zarr"
        res = CliRunner().invoke(
            main, ["convert", str(root), "--from", "fnet-czi", "--to", "zarr", str(dest), *extra]
        )
        assert res.exit_code == 1 and "6 problems found" in res.output, res.output
        assert all(line in res.output for line in problems)
        assert sorted(q.name for q in tmp_path.iterdir()) == ["src"]  # no DEST, no scratch


def test_reads_each_channel_over_its_own_extent(tmp_path: Path) -> None:
    root = _folder(tmp_path)
    write_czi(root / "data" / "fibrillarin" / f"{ROWS[0][0]}.czi", 0, wide_channel=0)
    assert get_format("fnet-czi").validate(root) == []  # channel 0 is not read
    sample = next(s for s in read_samples("fnet-czi", root, split="test") if s.id == ROWS[0][0])
    assert sample.split == "test"
    np.testing.assert_array_equal(sample.image[0], volume(0, 6))  # not padded to 14 wide
    np.testing.assert_array_equal(sample.target[0], volume(0, 3))


def test_csv_problems_and_official_split_files(tmp_path: Path) -> None:
    root = _folder(tmp_path)
    table = root / "fibrillarin.csv"
    lines = table.read_text().splitlines()
    lines[1] = lines[1].replace(",6,3", ",six,3")
    lines[4] = lines[4].replace(",6,3", ",6,inf")
    lines[5] = ",".join(["", *lines[5].split(",")[1:]])  # no path
    table.write_text("\n".join([*lines, lines[2]]) + "\n")  # row 3 listed twice
    problems = get_format("fnet-czi").validate(root)
    assert problems == [
        "fibrillarin.csv row 2: channel_signal 'six' is not a channel index "
        "(expected a non-negative integer)",
        "fibrillarin.csv row 5: channel_target 'inf' is not a channel index "
        "(expected a non-negative integer)",
        "fibrillarin.csv row 6: empty path_czi (expected a CZI file path)",
        f"{ROWS[1][0]}.czi (fibrillarin.csv row 8): sample {ROWS[1][0]!r} is listed twice "
        f"(also {ROWS[1][0]}.czi (fibrillarin.csv row 3)); expected one row per CZI file",
    ]
    # pytorch_fnet's split files: the file names fix the split
    table.unlink()
    (root / "train.csv").write_text(csv_text(ROWS[:4]))
    (root / "test.csv").write_text(csv_text(ROWS[4:]))
    got = {s.id: s.split for s in read_samples("fnet-czi", root)}
    assert got == {stem: ("train" if i < 4 else "test") for i, (stem, _) in enumerate(ROWS)}
    fmt = get_format("fnet-czi")
    assert fmt.items(root).items == [f"train.csv:{i}" for i in range(2, 6)] + [
        f"test.csv:{i}" for i in range(2, 4)
    ]
    assert {s.id: s.split for s in read_by_items(fmt, root)} == got


def test_each_row_read_alone_equals_read(tmp_path: Path) -> None:
    """Per-item hooks: the plate split needs only the table's names, so a row reads alone."""
    from tests.factories import assert_samples_equal

    root = _folder(tmp_path)
    fmt = get_format("fnet-czi")
    reference = list(fmt.read(root))
    assert len({s.split for s in reference}) > 1  # split by plate
    alone = [fmt.read_item(root, item) for item in reversed(fmt.items(root).items)]
    assert [more for _, more in alone] == [[]] * len(ROWS)
    for a, (b, _) in zip(reference, reversed(alone), strict=True):
        assert_samples_equal(a, b)
        assert a.metadata == b.metadata


def test_tar_members_found_whatever_the_top_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive, table = fake_archive()
    buf = io.BytesIO()
    with (
        tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as src,
        tarfile.open(fileobj=buf, mode="w:gz") as dst,
    ):
        for m in src.getmembers():
            data = src.extractfile(m).read()  # type: ignore[union-attr]
            m.name = "./label-free/" + m.name
            dst.addfile(m, io.BytesIO(data))
    store = pull_fake({ARCHIVE: buf.getvalue(), TABLE: table}, tmp_path, monkeypatch)
    assert len(store) == len(ROWS)


def test_earlier_allen_file_names_give_plate_and_well(tmp_path: Path) -> None:
    stem = "3500000416_100X_20170117_E07_P10"  # the naming of the earlier batches
    (tmp_path / "data" / "fibrillarin").mkdir(parents=True)
    write_czi(tmp_path / "data" / "fibrillarin" / f"{stem}.czi", 0)
    (tmp_path / "t.csv").write_text(csv_text(((stem, ""),)))
    (sample,) = read_samples("fnet-czi", tmp_path / "t.csv", split="val")
    assert sample.split == "val"
    assert {k: sample.metadata[k] for k in ("plate", "well", "position", "date")} == {
        "plate": "3500000416",
        "well": "E07",
        "position": 10,
        "date": "20170117",
    }
    assert "scene" not in sample.metadata


def test_table_paths_that_leave_the_data_folder_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive, _ = fake_archive()
    table = csv_text().replace(f"data/fibrillarin/{ROWS[2][0]}", f"../../{ROWS[2][0]}")
    with pytest.raises(ValidationError) as err:
        pull_fake({ARCHIVE: archive, TABLE: table.encode()}, tmp_path, monkeypatch)
    assert err.value.problems == [
        f"fibrillarin.csv row 4: path_czi '../../{ROWS[2][0]}.czi' leaves the data folder "
        "(expected a relative path such as data/<structure>/<name>.czi)"
    ]
    assert not list(tmp_path.rglob(f"{ROWS[2][0]}.czi"))


def test_archive_extraction_shows_progress(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cellbench.tasks.augmented_microscopy.fnet_czi import fnet_archive_samples

    archive, table = fake_archive()
    (tmp_path / "fibrillarin.tar.gz").write_bytes(archive)
    (tmp_path / "fibrillarin.csv").write_bytes(table)
    samples = fnet_archive_samples(
        tmp_path / "fibrillarin.csv",
        tmp_path / "fibrillarin.tar.gz",
        tmp_path / "work",
        progress=True,
    )
    assert sorted(s.id for s in samples) == sorted(stem for stem, _ in ROWS)
    err = capsys.readouterr().err
    assert "extract fibrillarin.tar.gz: 100%" in err and f"{len(ROWS)}/{len(ROWS)}" in err


def test_files_with_several_scenes_or_time_points_are_refused(tmp_path: Path) -> None:
    from pylibCZIrw import czi

    root = _folder(tmp_path)
    path = root / "data" / "fibrillarin" / f"{ROWS[0][0]}.czi"
    with czi.create_czi(str(path), exist_ok=True) as writer:
        for scene in range(2):
            for t in range(3):
                for c in range(7):
                    writer.write(
                        data=volume(0, c)[0],
                        plane={"C": c, "Z": 0, "T": t},
                        scene=scene,
                        location=(100 * scene, 0),
                    )
    where = f"{ROWS[0][0]}.czi (fibrillarin.csv row 2)"
    assert get_format("fnet-czi").validate(root) == [
        f"{where}: 3 time points (expected one z-stack)",
        f"{where}: 2 scenes (expected one field of view per file)",
    ]
