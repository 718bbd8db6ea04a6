"""Croissant 1.1 descriptions validated by mlcroissant, BibTeX citations, CITATION.cff."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from cellbench.catalog import Catalog
from cellbench.cli import main
from cellbench.croissant import CROISSANT_VERSION, croissant
from cellbench.registry import export_hf, pull

REPO = Path(__file__).resolve().parents[1]
SMALL = {
    "synthetic-nuclei": {"n_images": 8},
    "synthetic-protein-localisation": {"n_images": 24},
    "synthetic-timelapse": {"n_sequences": 4, "n_frames": 6},
    "synthetic-label-free": {"n_images": 8},
    "synthetic-nuclei-3d": {"n_images": 8},
}


READ_RECORDS = """
import json, sys
import mlcroissant as mlc
dataset = mlc.Dataset(jsonld=sys.argv[1])
records = list(dataset.records("samples"))
names = {rs.name for rs in dataset.metadata.record_sets}
print(json.dumps({
    "errors": sorted(str(e) for e in dataset.metadata.ctx.issues.errors),
    "ids": [r["samples/id"].decode() for r in records],
    "splits": sorted({r["samples/split"].decode() for r in records}),
    "previews": sorted({r["samples/preview"].format for r in records}),
    "classes": {
        t: [r[f"{t}_classes/name"] for r in dataset.records(f"{t}_classes")]
        for t in ("label", "semantic") if f"{t}_classes" in names
    },
}, default=str))
"""


@pytest.mark.parametrize("ident", sorted(SMALL))
def test_export_carries_croissant_that_mlcroissant_validates_and_reads(ident, tmp_path):
    store = pull(ident, options=SMALL[ident], progress=False)
    out = export_hf(ident, tmp_path / "hf")
    doc = json.loads((out / "croissant.json").read_text())
    assert doc["conformsTo"] == CROISSANT_VERSION and doc["license"].startswith("https://spdx.org")
    assert doc["name"] == ident and doc["citeAs"].startswith("@misc{" + ident)
    # mlcroissant in a process of its own: once `datasets` is imported (the export did), pandas
    # meets its Arrow extension types while reading the shards and fails
    done = subprocess.run(
        [sys.executable, "-c", READ_RECORDS, str(out / "croissant.json")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.splitlines()[-1])
    assert got["errors"] == []
    assert sorted(got["ids"]) == store.sample_ids()
    assert set(got["splits"]) == {"train", "validation", "test"}
    assert got["previews"] == ["PNG"]
    for table in ("label", "semantic"):
        assert got["classes"].get(table, []) == store.class_names(table)


def test_croissant_command_prints_the_description(tmp_path):
    pull("synthetic-nuclei", options=SMALL["synthetic-nuclei"], progress=False)
    runner = CliRunner()
    res = runner.invoke(main, ["datasets", "croissant", "synthetic-nuclei"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    store = pull("synthetic-nuclei", options=SMALL["synthetic-nuclei"], progress=False)
    assert doc == croissant(Catalog().card("synthetic-nuclei"), store)
    res = runner.invoke(
        main, ["datasets", "croissant", "synthetic-nuclei", "--out", str(tmp_path / "c.json")]
    )
    assert res.exit_code == 0 and json.loads((tmp_path / "c.json").read_text()) == doc


def test_cite_prints_bibtex_from_structured_fields():
    res = CliRunner().invoke(main, ["datasets", "cite", "dsb2018-stardist"])
    assert res.exit_code == 0, res.output
    assert res.stdout.splitlines()[:3] == [
        "@article{caicedo2019nucleus,",
        "  author = {Caicedo, Juan C. and Goodman, Allen and Karhohs, Kyle W. and Cimini, Beth A. "
        "and Ackerman, Jeanelle and Haghighi, Marzieh and Heng, CherKeng and Becker, Tim and "
        "Doan, Minh and McQuin, Claire and Rohban, Mohammad and Singh, Shantanu and "
        "Carpenter, Anne E.},",
        "  title = {Nucleus segmentation across imaging experiments: the 2018 Data Science Bowl},",
    ]
    assert "  doi = {10.1038/s41592-019-0612-7}" in res.stdout.splitlines()
    misc = CliRunner().invoke(main, ["datasets", "cite", "synthetic-nuclei"]).stdout
    assert misc.startswith("@misc{synthetic-nuclei-1.0,\n  author = {cellbench developers},")
    for card in Catalog().cards():  # every card gives an entry with balanced braces
        text = CliRunner().invoke(main, ["datasets", "cite", card.id]).stdout
        assert text.count("{") == text.count("}") and text.startswith("@")


def test_citation_cff_describes_this_version():
    cff = yaml.safe_load((REPO / "CITATION.cff").read_text())
    from cellbench import __version__

    assert cff["cff-version"] == "1.2.0" and cff["version"] == __version__
    assert cff["license"] == "BSD-3-Clause" and cff["title"].startswith("cellbench")
    assert cff["authors"] and cff["message"]
