"""A recipe's several sources downloaded side by side (``RecipeContext.fetch_many``)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from cellbench.errors import ChecksumError, FetchError
from cellbench.registry import pull, store_path
from tests.store.fetch_helpers import HTTPFileServer, sha

RECIPE = """
import numpy as np
from cellbench.store.sample import Sample


def build(ctx):
    files = ctx.fetch_many(["a", "b", "c"])
    for i, name in enumerate(("a", "b", "c")):
        raw = np.frombuffer(files[name].read_bytes(), dtype=np.uint8)
        image = raw[: 32 * 32].reshape(1, 32, 32)
        inst = (image[0] > 127).astype(np.uint16)
        yield Sample(id=f"s{i}", image=image, split=("train", "val", "test")[i], instances=inst)
"""


def _blobs() -> dict[str, bytes]:
    rng = np.random.default_rng(5)
    return {n: bytes(rng.integers(0, 255, 4096, dtype=np.uint8)) for n in "abc"}


def _catalog(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sources: dict) -> None:
    card = {
        "id": "toy-many",
        "version": "1.0",
        "title": "Toy",
        "tasks": ["instance-segmentation"],
        "description": "A toy dataset with three sources.",
        "license": "CC0-1.0",
        "citation": "nobody",
        "annotation": {"provenance": "simulated"},
        "splits": {"method": "one sample per split"},
        "sources": sources,
    }
    folder = tmp_path / "catalog" / card["id"]
    folder.mkdir(parents=True)
    (folder / "card.yaml").write_text(yaml.safe_dump(card, sort_keys=False))
    (folder / "recipe.py").write_text(RECIPE)
    monkeypatch.setenv("CELLBENCH_CATALOG", str(tmp_path / "catalog"))
    monkeypatch.setenv("CELLBENCH_OFFLINE", "0")


def test_sources_download_side_by_side(
    http_server: HTTPFileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blobs = _blobs()
    for n, data in blobs.items():  # each answer waits 3 s: one at a time would take 9 s
        http_server.add(f"/{n}.bin", data, stall_first=1, stall=3.0)
    _catalog(
        tmp_path,
        monkeypatch,
        {n: {"url": http_server.url(f"/{n}.bin"), "sha256": sha(d)} for n, d in blobs.items()},
    )
    done: list[object] = []
    worker = threading.Thread(target=lambda: done.append(pull("toy-many", progress=False)))
    worker.start()
    deadline = time.monotonic() + 2.5  # before the first answer: all three already asked
    while len(http_server.seen()) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sorted(s.path for s in http_server.seen()) == ["/a.bin", "/b.bin", "/c.bin"]
    worker.join(60)
    (store,) = done
    assert store.sample_ids() == ["s0", "s1", "s2"]  # type: ignore[attr-defined]


def test_every_failed_source_is_named_and_the_good_ones_stay_cached(
    http_server: HTTPFileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blobs = _blobs()
    for n, data in blobs.items():
        http_server.add(f"/{n}.bin", data)
    wrong = "0" * 64
    sources = {
        "a": {"url": http_server.url("/a.bin"), "sha256": sha(blobs["a"])},
        "b": {"url": http_server.url("/b.bin"), "sha256": wrong},
        "c": {"url": http_server.url("/missing.bin"), "sha256": sha(blobs["c"])},
    }
    _catalog(tmp_path, monkeypatch, sources)
    with pytest.raises(FetchError) as err:
        pull("toy-many", progress=False)
    text = str(err.value)
    assert "toy-many@1.0: 2 sources could not be fetched:" in text
    assert "  - b: " in text and "  - c: " in text and "  - a: " not in text
    assert not store_path("toy-many", "1.0").exists()
    # one failure alone is raised as it is (here the checksum mismatch)
    sources["c"]["url"] = http_server.url("/c.bin")
    (tmp_path / "catalog").rename(tmp_path / "old")
    _catalog(tmp_path, monkeypatch, sources)
    before = len(http_server.seen("/a.bin"))
    with pytest.raises(ChecksumError):
        pull("toy-many", progress=False)
    assert len(http_server.seen("/a.bin")) == before  # a was verified and kept in the cache
