"""Hugging Face conventions: Hub split names, a viewable preview, typed class names, SPDX licenses,
and the README's export -> import round trip, bit-exact."""

from __future__ import annotations

import io
import json

import datasets
import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from datasets import ClassLabel, Image, List
from PIL import Image as PILImage

from cellbench.catalog import Catalog
from cellbench.cli import main
from cellbench.licenses import spdx_problems
from cellbench.registry import pull
from cellbench.store import hf
from cellbench.store.hf.preview import preview_png

NUCLEI = {"n_images": 8}


@pytest.fixture
def nuclei():
    return pull("synthetic-nuclei", options=NUCLEI, progress=False)


def test_validation_split_however_the_export_is_loaded(nuclei, tmp_path):
    out = hf.write_parquet(nuclei, tmp_path / "hf")
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["test", "train", "validation"]
    from_parquet = datasets.load_dataset(str(out), cache_dir=str(tmp_path / "c"))
    in_memory = hf.to_hf(nuclei, cache_dir=tmp_path / "c2")
    in_memory.save_to_disk(str(tmp_path / "disk"))
    from_disk = datasets.load_from_disk(str(tmp_path / "disk"))
    for loaded in (from_parquet, in_memory, from_disk):
        assert set(loaded) == {"train", "validation", "test"}
        assert set(loaded["validation"]["split"]) == {"validation"}
        assert loaded["validation"].num_rows == nuclei.splits["val"]
    # both come back as the canonical store, bit-exact, with the canonical split names
    for source in (out, tmp_path / "disk"):
        back = hf.plan_import(source).build(tmp_path / f"{source.name}.zarr")
        assert back.checksum == nuclei.checksum and back.splits == nuclei.splits


def test_preview_column_is_an_8_bit_png_thumbnail(nuclei, tmp_path):
    plan = hf.ExportPlan.from_store(nuclei)
    assert plan.features["preview"] == Image()
    assert "preview" in plan.metadata["derived_columns"]
    out = hf.write_parquet(nuclei, tmp_path / "hf")
    ds = datasets.load_dataset(str(out), cache_dir=str(tmp_path / "c"))["train"]
    picture = ds[0]["preview"]
    assert picture.format == "PNG" and picture.mode == "L" and picture.size == (128, 128)
    image = np.asarray(nuclei.image(ds[0]["id"])[...])[0]
    pixels = np.asarray(picture)
    assert pixels.dtype == np.uint8 and pixels.min() == 0 and pixels.max() == 255
    # brighter pixels stay brighter (a monotone stretch of the 16-bit image)
    assert np.corrcoef(pixels.ravel(), image.ravel())[0, 1] > 0.95


def test_preview_of_volumes_movies_and_channels():
    rng = np.random.default_rng(0)
    volume = rng.integers(0, 4000, (2, 5, 600, 300), dtype=np.uint16)  # czyx, two channels
    rgb = PILImage.open(io.BytesIO(preview_png(volume, "czyx")))
    assert rgb.mode == "RGB" and rgb.size == (128, 256)  # longest side 256, aspect kept
    assert np.asarray(rgb)[..., 2].max() == 0  # no third channel: blue stays dark
    movie = rng.random((3, 1, 20, 30)).astype(np.float32)
    small = PILImage.open(io.BytesIO(preview_png(movie, "tcyx")))
    assert small.mode == "L" and small.size == (30, 20)  # never enlarged
    assert preview_png(movie, "tcyx") == preview_png(movie.copy(), "tcyx")  # deterministic


def test_semantic_class_names_are_typed_in_the_features(nuclei, tmp_path):
    out = hf.write_parquet(nuclei, tmp_path / "hf")
    ds = datasets.load_dataset(str(out), cache_dir=str(tmp_path / "c"))["train"]
    names = ["background", "interphase", "mitotic"]
    assert ds.features["semantic_classes"] == List(ClassLabel(names=names))
    for row in ds.with_format("numpy", dtype=None):
        present = sorted(np.unique(row["semantic"]).tolist())
        assert list(row["semantic_classes"]) == present
    card = (out / "README.md").read_text()
    assert "`semantic_classes`" in card and "0: background, 1: interphase, 2: mitotic" in card


def test_every_card_has_an_spdx_license_the_hub_tags_as_such():
    for card in Catalog().cards():
        assert spdx_problems(card.license) == [], card.id
    dsb = Catalog().card("dsb2018-stardist")
    assert dsb.license == "CC0-1.0" and "stardist" in dsb.extra["license_notes"]
    meta = {"dataset": Catalog().card("dsb2018-stardist").snapshot(), "store": {"n_samples": 16}}
    text = hf.dataset_card(meta)
    header = yaml.safe_load(text.split("---")[1])
    assert header["license"] == "cc0-1.0" and "license_name" not in header
    assert "| license | CC0-1.0 (BBBC038v1 image and annotation are public domain" in text
    ndev = yaml.safe_load(
        hf.dataset_card({"dataset": Catalog().card("ndev-scratch-assay").snapshot()}).split("---")[
            1
        ]
    )
    assert ndev["license"] == "bsd-3-clause"
    assert spdx_problems("CC0-1.0 (public domain)") and spdx_problems("cc0-1.0") == [
        "license 'cc0-1.0' is not an SPDX identifier (did you mean CC0-1.0?); "
        "put free text in license_notes"
    ]
    assert spdx_problems("CC-BY-4.0 AND (MIT OR LicenseRef-lab-terms)") == []


def test_readme_export_import_round_trip_as_written(nuclei, tmp_path, monkeypatch):
    """The README's two commands, on a pulled catalog dataset: the import checks bit-exactness."""
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    res = runner.invoke(
        main, ["datasets", "export", "synthetic-nuclei", "--to", "hf", "out/nuclei-hf"]
    )
    assert res.exit_code == 0, res.output
    assert (tmp_path / "out" / "nuclei-hf" / "croissant.json").is_file()
    res = runner.invoke(main, ["datasets", "import", "out/nuclei-hf"])
    assert res.exit_code == 0, res.output
    assert res.stdout.splitlines()[-1] == (
        f"bit-exact: rebuilt digest {nuclei.checksum} = the exported store's"
    )
    # an export whose data differ from the catalog's store is refused under the catalog id
    meta = json.loads((tmp_path / "out" / "nuclei-hf" / "cellbench.json").read_text())
    meta["source_digest"] = "0" * 64
    (tmp_path / "out" / "nuclei-hf" / "cellbench.json").write_text(json.dumps(meta))
    res = runner.invoke(main, ["datasets", "import", "out/nuclei-hf"])
    assert res.exit_code == 1
    assert "differs from the catalog store's" in res.stderr and "--id" in res.stderr
