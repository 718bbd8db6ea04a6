"""Sources without an upstream checksum (recorded on first pull, `datasets pin`) and manual ones."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from cellbench.catalog import Catalog
from cellbench.cli import main
from cellbench.errors import ChecksumError, FetchError
from cellbench.registry import pull
from cellbench.settings import lock_file, manual_dir
from tests.store.fetch_helpers import HTTPFileServer, sha

RECIPE = """
import numpy as np
from cellbench.store.sample import Sample


def build(ctx):
    raw = np.frombuffer(ctx.fetch("blob").read_bytes(), dtype=np.uint8)
    image = raw[: 32 * 32].reshape(1, 32, 32)
    inst = (image[0] > 127).astype(np.uint16)
    for i, split in enumerate(("train", "val", "test")):
        yield Sample(id=f"s{i}", image=image + i, split=split, instances=inst)
"""


def _card(url: str, **source: object) -> dict:
    return {
        "id": "toy-unpinned",
        "version": "1.0",
        "title": "Toy",
        "tasks": ["instance-segmentation"],
        "description": "A toy dataset whose source publishes no checksum.",
        "license": "CC0-1.0",
        "citation": "nobody",
        "annotation": {"provenance": "simulated"},
        "splits": {"method": "one sample per split"},
        "sources": {"blob": {"url": url, **source}},
    }


def _catalog(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, card: dict) -> Path:
    folder = tmp_path / "catalog" / card["id"]
    folder.mkdir(parents=True)
    (folder / "card.yaml").write_text(yaml.safe_dump(card, sort_keys=False))
    (folder / "recipe.py").write_text(RECIPE)
    monkeypatch.setenv("CELLBENCH_CATALOG", str(tmp_path / "catalog"))
    monkeypatch.setenv("CELLBENCH_OFFLINE", "0")
    return folder / "card.yaml"


def test_first_pull_records_then_verifies_then_pin_writes_the_card(
    http_server: HTTPFileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = bytes(np.random.default_rng(0).integers(0, 255, 4096, dtype=np.uint8))
    http_server.add("/blob.bin", data)
    card_file = _catalog(
        tmp_path, monkeypatch, _card(http_server.url("/blob.bin"), sha256="unpinned")
    )
    info = CliRunner().invoke(main, ["datasets", "info", "toy-unpinned"])
    assert "sha256 unpinned upstream (the source publishes none)" in info.output
    assert not lock_file().exists()
    store = pull("toy-unpinned", progress=False)
    lock = json.loads(lock_file().read_text())
    assert lock["toy-unpinned@1.0"]["blob"]["sha256"] == sha(data)
    assert lock["toy-unpinned@1.0"]["blob"]["size"] == len(data)
    info = CliRunner().invoke(main, ["datasets", "info", "toy-unpinned"])
    assert f"your first pull recorded {sha(data)}" in info.output
    # a rebuild from the cache needs no download
    n = len(http_server.seen("/blob.bin"))
    again = pull("toy-unpinned", progress=False, force=True)
    assert again.checksum == store.checksum and len(http_server.seen("/blob.bin")) == n
    # the file changes upstream: the download is checked against the record and refused
    http_server.add("/blob.bin", data[::-1])
    from cellbench.store.fetch.core import cache_file

    cache_file(sha(data), "blob.bin").unlink()
    with pytest.raises(ChecksumError, match="no longer matches: the file changed upstream"):
        pull("toy-unpinned", progress=False, force=True)
    assert pull("toy-unpinned", progress=False).checksum == store.checksum  # old store kept
    # maintainers pin: sha256 into the card, store rebuilt offline from the cache, digest in
    http_server.add("/blob.bin", data)
    pull("toy-unpinned", progress=False, force=True)
    before = card_file.read_text()
    res = CliRunner().invoke(main, ["datasets", "pin", "toy-unpinned", "-q"])
    assert res.exit_code == 0, res.output
    card = yaml.safe_load(card_file.read_text())
    assert card["sources"]["blob"]["sha256"] == sha(data)
    pinned = Catalog().card("toy-unpinned")
    assert pinned.checksums["store"] == pull("toy-unpinned", progress=False).checksum
    assert card["title"] == "Toy" and card_file.read_text().count("\n") == before.count("\n") + 2


def test_pin_refuses_sources_never_pulled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _catalog(tmp_path, monkeypatch, _card("http://127.0.0.1:9/blob.bin", sha256="unpinned"))
    res = CliRunner().invoke(main, ["datasets", "pin", "toy-unpinned"])
    assert res.exit_code != 0
    assert "no sha256 recorded for unpinned source(s) blob" in res.output


def test_manual_source_says_what_to_download_and_where_then_verifies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = bytes(range(256)) * 8
    _catalog(
        tmp_path,
        monkeypatch,
        {
            **_card("unused"),
            "sources": {
                "blob": {
                    "manual": "https://example.org/login",
                    "filename": "toy-images.bin",
                    "instructions": "log in, accept the terms, choose 'Images (bin)'.",
                    "sha256": sha(data),
                }
            },
        },
    )
    dest = manual_dir("toy-unpinned") / "toy-images.bin"
    with pytest.raises(FetchError) as err:
        pull("toy-unpinned", progress=False)
    text = str(err.value)
    assert "must be downloaded by hand" in text and "https://example.org/login" in text
    assert f"put it at {dest}" in text and f"sha256 {sha(data)}" in text
    assert "choose 'Images (bin)'" in text
    dest.parent.mkdir(parents=True)
    dest.write_bytes(data[:-1] + b"x")
    with pytest.raises(ChecksumError, match="replace the file by the right one"):
        pull("toy-unpinned", progress=False)
    dest.write_bytes(data)
    store = pull("toy-unpinned", progress=False)
    assert len(store) == 3 and store.verify() == []


def test_unpinned_manual_file_is_recorded_and_used_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = bytes(range(256)) * 8
    source = {"manual": "https://example.org/login", "filename": "t.bin", "sha256": "unpinned"}
    _catalog(tmp_path, monkeypatch, {**_card("unused"), "sources": {"blob": source}})
    dest = manual_dir("toy-unpinned") / "t.bin"
    dest.parent.mkdir(parents=True)
    dest.write_bytes(data)
    pull("toy-unpinned", progress=False)
    assert json.loads(lock_file().read_text())["toy-unpinned@1.0"]["blob"]["sha256"] == sha(data)
    from cellbench.store.fetch.core import cache_file

    assert not cache_file(sha(data), "t.bin").exists()  # not copied into the cache
    dest.write_bytes(data[::-1])  # replaced by another file: refused against the record
    with pytest.raises(ChecksumError, match="changed upstream"):
        pull("toy-unpinned", progress=False, force=True)
