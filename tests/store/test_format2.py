"""Store format 2: OME-Zarr 0.5 validity, unknown units, a manifest over metadata, upgrades."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from cellbench.catalog import Catalog
from cellbench.cli import main
from cellbench.errors import ChecksumError, CorruptStoreError, StoreError
from cellbench.registry import import_store, load, upgrade
from cellbench.store import hf
from cellbench.store.format import FormatV1, FormatV2, detect_format
from cellbench.store.integrity import forget_verdicts, verify_store
from cellbench.store.zarr_store import DatasetStore, build_store
from tests.factories import TASK_FIXTURES, assert_samples_equal, toy_samples
from tests.ome_validation import ome_groups, validate_store_ome

CARD = {"id": "toy", "version": "1.0", "tasks": ["instance-segmentation"]}


def _classes(task):
    return {"label": ["a", "b", "c"]} if task == "classification" else {}


def _tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in path.rglob("*") if p.is_file()}


@pytest.mark.parametrize("task", TASK_FIXTURES)
def test_every_group_of_every_task_is_valid_ome_zarr_05(tmp_path, task):
    store = build_store(toy_samples(task), tmp_path / "s.zarr", CARD, _classes(task))
    images, labels = ome_groups(store.path)
    assert len(images) >= 4 and validate_store_ome(store.path) == len(images) + len(labels)
    for group in images:
        level = json.loads((group / "0" / "zarr.json").read_text())
        axes = json.loads((group / "zarr.json").read_text())["attributes"]["ome"]["multiscales"]
        assert level["dimension_names"] == [a["name"] for a in axes[0]["axes"]]


def test_the_validators_reject_format_1_stores(tmp_path):
    """The shared fixture's check has teeth: format 1 (no dimension_names) is refused."""
    store = build_store(
        toy_samples("classification"),
        tmp_path / "v1.zarr",
        CARD,
        _classes("classification"),
        fmt=FormatV1(),
    )
    with pytest.raises(AssertionError, match="no dimension_names"):
        validate_store_ome(store.path)


def test_unknown_pixel_size_is_written_as_unknown(tmp_path):
    samples = toy_samples("instance-segmentation")
    samples[0].pixel_size = {}
    samples[1].pixel_size = {"x": 0.5, "y": 0.5}
    store = build_store(samples, tmp_path / "s.zarr", CARD)
    attrs = json.loads((store.path / "images" / samples[0].id / "zarr.json").read_text())
    ms = attrs["attributes"]["ome"]["multiscales"][0]
    assert [a.get("unit") for a in ms["axes"]] == [None, None, None]
    assert ms["datasets"][0]["coordinateTransformations"][0]["scale"] == [1.0, 1.0, 1.0]
    label = json.loads(
        (store.path / "images" / samples[0].id / "labels" / "instances" / "zarr.json").read_text()
    )["attributes"]["ome"]["multiscales"][0]
    assert all("unit" not in a for a in label["axes"])
    assert store.pixel_size(samples[0].id) == {}
    assert store.pixel_size(samples[1].id) == {"y": 0.5, "x": 0.5}
    assert_samples_equal(samples[0], store.sample(samples[0].id))
    # the Hugging Face export carries the unknown size as null, not 1.0 micrometre
    dd = hf.to_hf(store, cache_dir=tmp_path / "cache")
    rows = {r["id"]: r for split in dd.values() for r in split}
    assert rows[samples[0].id]["pixel_size"] == {"t": None, "z": None, "y": None, "x": None}
    assert rows[samples[1].id]["pixel_size"]["x"] == 0.5


def test_dsb2018_card_notes_its_unknown_pixel_size():
    card = Catalog().card("dsb2018-stardist")
    note = card.extra["pixel_size"]
    assert note["known"] is False and "no unit" in note["note"]
    res = CliRunner().invoke(main, ["datasets", "info", "dsb2018-stardist"])
    assert res.exit_code == 0 and "pixel size:  unknown" in res.output


def test_manifest_covers_nodes_chunks_and_itself(tmp_path):
    store = build_store(toy_samples("tracking"), tmp_path / "t.zarr", CARD)
    man = store.manifest
    assert man["format_version"] == "2"
    sid = store.sample_ids()[0]
    for node in (
        f"images/{sid}",
        f"images/{sid}/0",
        f"images/{sid}/labels/instances",
        f"tracks/{sid}",
    ):
        assert node in man["nodes"], node
    arr = man["arrays"][f"images/{sid}/0"]
    assert arr["sparse"] is False and len(arr["chunk_sha256"]) == arr["nchunks"] == 5
    assert len(man["manifest_sha256"]) == 64


@pytest.mark.parametrize(
    ("what", "edit"),
    [
        (
            "pixel size",
            lambda ms, om: ms["datasets"][0]["coordinateTransformations"][0]["scale"].__setitem__(
                1, 9.0
            ),
        ),
        ("axes", lambda ms, om: ms["axes"][1].__setitem__("name", "z")),
        ("channel names", lambda ms, om: om["channels"][0].__setitem__("label", "dapi")),
    ],
)
def test_metadata_edits_are_caught_by_verify_and_by_reads(tmp_path, what, edit):
    store = build_store(toy_samples("instance-segmentation"), tmp_path / "s.zarr", CARD)
    sid = store.sample_ids()[1]
    meta_file = store.path / "images" / sid / "zarr.json"
    meta = json.loads(meta_file.read_text())
    ome = meta["attributes"]["ome"]
    edit(ome["multiscales"][0], ome["omero"])
    meta_file.write_text(json.dumps(meta))
    problems = verify_store(store.path)
    assert len(problems) == 1 and f"node 'images/{sid}' metadata" in problems[0], what
    reopened = DatasetStore.open(store.path)
    with pytest.raises(CorruptStoreError) as err:
        reopened.pixel_size(sid)
    line = str(err.value)
    assert "\n" not in line and f"sample {sid!r}" in line and "toy@1.0" in line


def test_verify_lists_every_corruption_at_once_without_crashing(tmp_path):
    store = build_store(toy_samples("instance-segmentation", n=8), tmp_path / "s.zarr", CARD)
    ids = store.sample_ids()
    root = store.path
    chunk = root / "images" / ids[0] / "0" / "c" / "0" / "0" / "0"
    raw = bytearray(chunk.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    chunk.write_bytes(bytes(raw))  # 1: flipped byte
    os.remove(root / "images" / ids[1] / "labels" / "semantic" / "0" / "c" / "0" / "0")  # 2
    (root / "images" / ids[2] / "labels" / "instances" / "0" / "zarr.json").write_text('{"zarr_f')
    pix = root / "images" / ids[3] / "zarr.json"  # 4: pixel size
    meta = json.loads(pix.read_text())
    meta["attributes"]["ome"]["multiscales"][0]["datasets"][0]["coordinateTransformations"][0][
        "scale"
    ][2] = 0.1
    pix.write_text(json.dumps(meta))
    cell = json.loads((root / "zarr.json").read_text())  # 5: the class table of the root
    cell["attributes"]["cellbench"]["classes"] = {"semantic": ["x", "y", "z"]}
    (root / "zarr.json").write_text(json.dumps(cell))
    (root / "images" / ids[4] / "notes.txt").write_text("left here")  # 6: unknown file
    problems = verify_store(root)
    text = "\n".join(problems)
    assert len(problems) == 6, text
    assert f"images/{ids[0]}/0' has 1 corrupt chunk file(s)" in text
    assert f"images/{ids[1]}/labels/semantic/0' is missing 1 chunk file(s): c/0/0" in text
    assert f"images/{ids[2]}/labels/instances/0' has an unreadable zarr.json" in text
    assert f"node 'images/{ids[3]}' metadata does not match the manifest" in text
    assert "store digest" in text and f"unknown file 'images/{ids[4]}/notes.txt'" in text
    # a truncated manifest: one line, no traceback, here and in the CLI
    (root / "manifest.json").write_text((root / "manifest.json").read_text()[:300])
    problems = verify_store(root)
    assert any("manifest is unreadable" in p for p in problems)
    import_dir = tmp_path / "registered.zarr"
    build_store(toy_samples("instance-segmentation"), import_dir, CARD)
    import_store(import_dir)
    (import_dir / "manifest.json").write_text("{")
    res = CliRunner().invoke(main, ["datasets", "verify", "toy@1.0", "-q"])
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert "manifest is unreadable" in res.output
    with pytest.raises(StoreError, match="manifest is unreadable"):
        load("toy@1.0")


def test_missing_or_half_built_store_is_one_line(tmp_path, cli_cmd, cli_env):
    import subprocess

    good = build_store(toy_samples("instance-segmentation"), tmp_path / "g.zarr", CARD)
    cases = {}
    cases["no zarr.json"] = tmp_path / "empty.zarr"
    cases["no zarr.json"].mkdir()
    half = tmp_path / "half.zarr"
    shutil.copytree(good.path, half)
    meta = json.loads((half / "zarr.json").read_text())
    del meta["attributes"]["cellbench"]["complete"]
    (half / "zarr.json").write_text(json.dumps(meta))
    cases["incomplete"] = half
    trunc = tmp_path / "trunc.zarr"
    shutil.copytree(good.path, trunc)
    (trunc / "zarr.json").write_text('{"zarr_format": 3, "node')
    cases["truncated root"] = trunc
    nomani = tmp_path / "nomanifest.zarr"
    shutil.copytree(good.path, nomani)
    (nomani / "manifest.json").unlink()
    cases["no manifest"] = nomani
    for why, path in cases.items():
        with pytest.raises(StoreError) as err:
            DatasetStore.open(path)
        assert "\n" not in str(err.value), why
    preds = tmp_path / "p.zarr"
    preds.mkdir()
    res = subprocess.run(
        [*cli_cmd, "score", "--task", "instance-segmentation", "--dataset", str(half), str(preds)],
        capture_output=True,
        text=True,
        env=cli_env,
        timeout=120,
    )
    assert res.returncode == 1, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "incomplete" in lines[0]


def test_sparse_arrays_may_miss_empty_chunks_others_may_not(tmp_path):
    samples = toy_samples("instance-segmentation")
    big = np.zeros((600, 300), np.uint16)
    big[10:20, 10:20] = 1  # only chunk c/0/0 holds objects
    samples[0].instances = big
    samples[0].semantic = None
    samples[0].image = np.zeros((1, 600, 300), np.uint16)
    store = build_store(samples, tmp_path / "s.zarr", CARD, sparse=("instances",))
    entry = store.manifest["arrays"][f"images/{samples[0].id}/labels/instances/0"]
    assert (
        entry["sparse"] is True
        and entry["nchunks"] == 6
        and list(entry["chunk_sha256"]) == ["c/0/0"]
    )
    assert verify_store(store.path) == []
    assert np.array_equal(np.asarray(store.labels(samples[0].id)[...]), big)
    os.remove(
        store.path / "images" / samples[0].id / "labels" / "instances" / "0" / "c" / "0" / "0"
    )
    assert "is missing 1 chunk file(s): c/0/0" in verify_store(store.path)[0]
    with pytest.raises(CorruptStoreError, match="is missing chunk file c/0/0"):
        np.asarray(DatasetStore.open(store.path).labels(samples[0].id)[...])
    os.remove(store.path / "images" / samples[0].id / "0" / "c" / "0" / "1" / "1")  # image: dense
    with pytest.raises(CorruptStoreError, match=r"images/.*/0' \(sample .*\) is missing chunk"):
        np.asarray(DatasetStore.open(store.path).image(samples[0].id)[...])


def test_format_1_stores_are_read_unchanged_verified_and_upgraded_on_request(tmp_path):
    samples = toy_samples("instance-segmentation")
    v1 = build_store(samples, tmp_path / "v1.zarr", CARD, fmt=FormatV1())
    assert detect_format(v1.path).version == "1" and "nodes" not in v1.manifest
    before = _tree(v1.path)
    store = import_store(v1.path)
    for s in samples:
        assert_samples_equal(s, store.sample(s.id))
    assert store.verify() == []
    assert _tree(v1.path) == before  # reading never rewrites a format 1 store
    # verified reads of format 1: a flipped byte is caught on the array's first read
    chunk = v1.path / "images" / samples[2].id / "labels" / "instances" / "0" / "c" / "0" / "0"
    good = chunk.read_bytes()
    chunk.write_bytes(good[:-1] + bytes([good[-1] ^ 0xFF]))
    forget_verdicts()
    with pytest.raises(CorruptStoreError, match=r"content does not match|cannot be read"):
        load("toy@1.0").labels(samples[2].id)
    with pytest.raises(StoreError, match="does not verify"):
        upgrade("toy@1.0")
    chunk.write_bytes(good)
    forget_verdicts()
    res = CliRunner().invoke(main, ["datasets", "verify", "toy@1.0", "-q"])
    assert res.exit_code == 0 and "store format 1" in res.output and "upgrade" in res.output
    res = CliRunner().invoke(main, ["datasets", "upgrade", "toy@1.0", "-q"])
    assert res.exit_code == 0, res.output
    assert "upgraded from store format 1 to 2" in res.output
    up = load("toy@1.0")
    assert up.format.version == "2" and up.verify() == []
    assert validate_store_ome(up.path) == 12
    for s in samples:
        assert_samples_equal(s, up.sample(s.id))
    res = CliRunner().invoke(main, ["datasets", "upgrade", "toy@1.0", "-q"])
    assert "already store format 2" in res.output
    assert [p.name for p in up.path.parent.iterdir()] == [up.path.name]  # no scratch left


def test_upgrade_of_a_catalog_store_must_match_the_pinned_digest(tmp_path, monkeypatch):
    root = tmp_path / "catalog"
    (root / "toy").mkdir(parents=True)
    card = {
        **CARD,
        "title": "t",
        "description": "d",
        "license": "CC0-1.0",
        "citation": "c",
        "annotation": {"provenance": "simulated"},
        "splits": {"method": "fixed"},
        "sources": {},
        "checksums": {"store": "0" * 64},
    }
    (root / "toy" / "card.yaml").write_text(yaml.safe_dump(card))
    (root / "toy" / "recipe.py").write_text("def build(ctx):\n    return []\n")
    monkeypatch.setenv("CELLBENCH_CATALOG", str(root))
    from cellbench.registry import store_path

    dest = store_path("toy", "1.0")
    snapshot = Catalog().card("toy").snapshot()
    build_store(toy_samples("instance-segmentation"), dest, snapshot, fmt=FormatV1())
    with pytest.raises(ChecksumError, match=r"pull toy@1\.0 --force"):
        upgrade("toy")
    assert detect_format(dest).version == "1"  # kept as it was
    assert [p.name for p in dest.parent.iterdir()] == ["1.0.zarr"]


def test_format_classes():
    assert FormatV2().version == "2" and FormatV2().ome_dimension_names
    assert FormatV2().sample_of("images/s1/labels/instances/0") == "s1"
    assert FormatV2().sample_of("samples/id") is None
