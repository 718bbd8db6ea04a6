"""Recipe dsb2018-stage1: a fake stage1_train.zip (real layout: RGBA PNGs, hashed mask names)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from tests.datasets.recipe_check import pull_served, zip_bytes

URL = "https://data.broadinstitute.org/bbbc/BBBC038/stage1_train.zip"


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def fake_stage1_train() -> tuple[bytes, dict[str, tuple[str, int]]]:
    """12 images in 3 acquisition groups; ``{id: (group, n nuclei)}``."""
    rng = np.random.default_rng(0)
    files: dict[str, bytes] = {}
    truth: dict[str, tuple[str, int]] = {}
    kinds = [((32, 40), True)] * 8 + [((24, 24), True)] * 2 + [((24, 32), False)] * 2
    for i, (shape, grey) in enumerate(kinds):
        sid = _hash(f"image-{i}")
        rgba = np.full((*shape, 4), 255, np.uint8)
        if grey:
            rgba[..., :3] = rng.integers(0, 60, shape, dtype=np.uint8)[..., None]
        else:
            rgba[..., :3] = rng.integers(100, 255, (*shape, 3), dtype=np.uint8)
        files[f"{sid}/images/{sid}.png"] = iio.imwrite("<bytes>", rgba, extension=".png")
        n = 2 + i % 3
        for k in range(n):
            mask = np.zeros(shape, np.uint8)
            mask[2 + 6 * k : 6 + 6 * k, 3:9] = 255
            if k == 1 and i == 0:
                mask[4:9, 3:9] = 255  # overlaps nucleus 0 on rows 4-5 (real masks do this)
            files[f"{sid}/masks/{_hash(f'{i}-{k}')}.png"] = iio.imwrite(
                "<bytes>", mask, extension=".png"
            )
        group = f"{shape[0]}x{shape[1]}-{'grey' if grey else 'colour'}"
        truth[sid] = (group, n)
    return zip_bytes(files), truth


def test_recipe_groups_split_and_masks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data, truth = fake_stage1_train()
    store = pull_served("dsb2018-stage1", {URL: data}, tmp_path, monkeypatch)
    assert len(store) == 12
    # whole groups per split (cellbench.splits.split_ids): the 8-image group is train
    by_group = {}
    for sid, (group, n) in truth.items():
        s = store.sample(sid)
        assert s.metadata["acquisition"] == group
        assert s.image.shape[0] == 3 and s.channel_names == ["red", "green", "blue"]
        assert int(s.instances.max()) == n
        by_group.setdefault(group, set()).add(s.split)
    assert all(len(v) == 1 for v in by_group.values()) and by_group["32x40-grey"] == {"train"}
    assert {next(iter(v)) for v in by_group.values()} == {"train", "val", "test"}
    first = store.sample(_hash("image-0")).instances
    # overlap=first: the overlap (rows 4-5) goes to whichever mask file sorts first
    order = sorted(_hash(f"0-{k}") for k in range(2))
    winner = 0 if order[0] == _hash("0-0") else 1  # which nucleus owns the overlap
    ids = sorted(_hash(f"0-{k}") for k in range(truth[_hash("image-0")][1]))
    id_of = {k: ids.index(_hash(f"0-{k}")) + 1 for k in range(2)}
    assert (first[4:6, 3:9] == id_of[winner]).all()
    assert (first[2:4, 3:9] == id_of[0]).all() and (first[6:12, 3:9] == id_of[1]).all()
    assert (first == id_of[1]).sum() == 8 * 6 - (12 if winner == 0 else 0)
