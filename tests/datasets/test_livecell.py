"""Recipe livecell: fake LIVECell files (real layout) served from 127.0.0.1, pulled through it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from pycocotools import mask as mask_utils

from cellbench.registry import pull
from cellbench.settings import lock_file
from tests.data.livecell_fake import H, W, make_livecell
from tests.store.fetch_helpers import HTTPFileServer, sha

REPO = Path(__file__).resolve().parents[2]
BASE = "http://livecell-dataset.s3.eu-central-1.amazonaws.com/LIVECell_dataset_2021"
PATHS = {
    "images": "/LIVECell_dataset_2021/images.zip",
    "train": "/LIVECell_dataset_2021/annotations/LIVECell/livecell_coco_train.json",
    "val": "/LIVECell_dataset_2021/annotations/LIVECell/livecell_coco_val.json",
    "test": "/LIVECell_dataset_2021/annotations/LIVECell/livecell_coco_test.json",
}


def test_recipe_builds_every_split_with_overlaps_resolved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    archive, jsons, truth = make_livecell()
    server = HTTPFileServer()
    try:
        server.add(PATHS["images"], archive)
        for split in ("train", "val", "test"):
            server.add(PATHS[split], jsons[split])
        catalog = tmp_path / "catalog"
        shutil.copytree(REPO / "datasets" / "livecell", catalog / "livecell")
        card_file = catalog / "livecell" / "card.yaml"
        card = yaml.safe_load(card_file.read_text())
        for name, path in PATHS.items():
            assert card["sources"][name]["url"] == BASE + path.removeprefix(
                "/LIVECell_dataset_2021"
            )
            assert card["sources"][name]["sha256"] == "unpinned"
        text = card_file.read_text().replace(BASE, server.url("/LIVECell_dataset_2021"))
        card_file.write_text(text)
        monkeypatch.setenv("CELLBENCH_CATALOG", str(catalog))
        monkeypatch.setenv("CELLBENCH_OFFLINE", "0")
        store = pull("livecell", progress=False)
    finally:
        server.close()
    assert store.verify() == []
    assert store.tasks == ["instance-segmentation"]
    lock = json.loads(lock_file().read_text())
    assert lock["livecell@1.0"]["images"]["sha256"] == sha(archive)
    assert lock["livecell@1.0"]["test"]["sha256"] == sha(jsons["test"])
    for split, files in truth.items():
        assert store.sample_ids(split) == [name.removesuffix(".tif") for name, _, _ in files]
        for name, arr, polys in files:
            sid = name.removesuffix(".tif")
            s = store.sample(sid)
            assert s.image.shape == (1, H, W) and s.image.dtype == np.uint8
            np.testing.assert_array_equal(s.image[0], arr)
            assert (
                s.metadata["cell_type"]
                == {
                    "A172": "A172",
                    "SHSY5Y": "SH-SY5Y",
                    "BV2": "BV-2",
                    "SKOV3": "SK-OV-3",
                    "MCF7": "MCF7",
                }[sid.split("_")[0]]
            )
            assert s.metadata["overlapping_objects"] == 2
            masks = [
                mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([p], H, W))).astype(bool)
                for p in polys
            ]
            # objects 1..4 in annotation order; the small one (3) lies on top of object 2
            np.testing.assert_array_equal(s.instances == 3, masks[2])
            np.testing.assert_array_equal(s.instances == 2, masks[1] & ~masks[2])
            np.testing.assert_array_equal(s.instances == 1, masks[0])
            np.testing.assert_array_equal(s.instances == 4, masks[3])
