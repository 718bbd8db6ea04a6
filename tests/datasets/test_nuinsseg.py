"""Recipe nuinsseg: a manual (Kaggle) source; a fake archive in the real folder layout."""

from __future__ import annotations

import io
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from cellbench.errors import FetchError
from cellbench.registry import pull
from tests.datasets.recipe_check import REPO, pull_manual, zip_bytes

ORGANS = ["human bladder", "human kidney", "mouse liver", "mouse muscle"]


def fake_nuinsseg() -> tuple[bytes, dict[str, np.ndarray]]:
    """2 patches per organ: RGB PNG, uint16 label TIFF, and an unused derived mask folder."""
    rng = np.random.default_rng(0)
    files: dict[str, bytes] = {}
    truth: dict[str, np.ndarray] = {}
    for organ in ORGANS:
        for i in (1, 2):
            stem = f"{organ.replace(' ', '_')}_{i:02d}"
            rgb = rng.integers(120, 255, (32, 32, 3), dtype=np.uint8)
            lab = np.zeros((32, 32), np.uint16)
            for k in range(1, 2 + i):
                lab[3 * k : 3 * k + 3, 4 * k : 4 * k + 3] = k
            files[f"{organ}/tissue images/{stem}.png"] = iio.imwrite(
                "<bytes>", rgb, extension=".png"
            )
            buf = io.BytesIO()
            tifffile.imwrite(buf, lab)
            files[f"{organ}/label masks modify/{stem}.tif"] = buf.getvalue()
            files[f"{organ}/mask binary/{stem}.png"] = iio.imwrite(
                "<bytes>", (lab > 0).astype(np.uint8) * 255, extension=".png"
            )
            truth[f"{organ.replace(' ', '-')}-{stem}"] = lab
    return zip_bytes(files), truth


def test_manual_recipe_builds_organ_grouped_splits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CELLBENCH_CATALOG", str(REPO / "datasets"))
    with pytest.raises(FetchError) as err:
        pull("nuinsseg", progress=False)
    assert "kaggle.com/datasets/ipateam/nuinsseg" in str(err.value)
    assert "nuinsseg.zip" in str(err.value)
    data, truth = fake_nuinsseg()
    store = pull_manual("nuinsseg", {"nuinsseg.zip": data}, tmp_path, monkeypatch)
    assert sorted(store.sample_ids()) == sorted(truth)
    splits: dict[str, set[str]] = {}
    for sid, lab in truth.items():
        s = store.sample(sid)
        assert s.image.shape == (3, 32, 32) and s.channel_names == ["red", "green", "blue"]
        assert np.array_equal(s.instances, lab)
        splits.setdefault(s.metadata["organ"], set()).add(s.split)
    assert sorted(splits) == ORGANS
    assert all(len(v) == 1 for v in splits.values())  # an organ never straddles splits
    assert {next(iter(v)) for v in splits.values()} == {"train", "val", "test"}
