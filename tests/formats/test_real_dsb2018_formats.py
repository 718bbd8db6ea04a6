"""Real data: the DSB2018 nuclei of stardist 0.9.2 through COCO, CTC and TIFF and back.

Also scores a COCO results file with overlapping detections on the real tiles and checks the
AP against pycocotools' COCOeval on the same files. Fetches the wheel from PyPI (the one
network the tests use), like ``tests/test_catalog_entries.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from cellbench.formats.convert import convert, export_dataset
from cellbench.formats.registry import get_format
from cellbench.registry import pull
from cellbench.store.zarr_store import DatasetStore
from tests.formats.test_coco_results import _check_equal, _rle


@pytest.mark.slow  # about 12 s, most of it the wheel download
def test_dsb2018_round_trips_and_coco_results_equal_cocoeval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CELLBENCH_OFFLINE", "0")
    store = pull("dsb2018-stardist", progress=False)
    ids = store.sample_ids()
    assert len(ids) == 16
    # store -> COCO / CTC / TIFF -> store: identical labels. COCO numbers objects 1..n in
    # annotation order (ascending label), CTC and TIFF keep the ids; the recipe's labels are
    # already 1..n, so all three give the very same arrays.
    for fmt in ("coco", "ctc", "tiff"):
        out = export_dataset("", fmt, tmp_path / fmt, store=store)
        assert get_format(fmt).validate(out) == []
        back = DatasetStore.open(convert(out, fmt, "zarr", tmp_path / f"{fmt}.zarr"))
        assert back.sample_ids() == ids
        for sid in ids:
            want = np.asarray(store.labels(sid)[...])
            got = np.asarray(back.labels(sid)[...])
            if fmt == "ctc":  # a still image travels as a one-frame sequence
                assert back.axes(sid) == "tcyx" and got.shape[0] == 1
                got = got[0]
            np.testing.assert_array_equal(got, want)
            np.testing.assert_array_equal(
                np.asarray(back.image(sid)[...]).reshape(-1),
                np.asarray(store.image(sid)[...]).ravel(),
            )
            if fmt != "ctc":
                assert (
                    back.table["split"][back.sample_ids().index(sid)]
                    == store.table["split"][ids.index(sid)]
                )
    # COCO results on the real test tiles: every nucleus detected as a shifted / dilated copy,
    # with eroded duplicates lying on some (overlapping masks), and random tied scores.
    folder = tmp_path / "results"
    export_dataset("", "coco", folder, split="test", store=store)
    rng = np.random.default_rng(11)
    dets = []
    for img in json.loads((folder / "annotations.json").read_text())["images"]:
        lab = np.asarray(store.labels(Path(img["file_name"]).stem)[...])
        for k in np.unique(lab)[1:]:
            m = np.roll(lab == k, tuple(rng.integers(-1, 2, 2)), axis=(0, 1))
            if rng.random() < 0.3:
                m = ndimage.binary_dilation(m)
            dets.append(
                {
                    "image_id": img["id"],
                    "category_id": 1,
                    "segmentation": _rle(m),
                    "score": float(np.round(rng.random(), 1)),
                }
            )
            if rng.random() < 0.3:
                d = ndimage.binary_erosion(m, iterations=2)
                if d.any():
                    dets.append(
                        {
                            "image_id": img["id"],
                            "category_id": 1,
                            "segmentation": _rle(d),
                            "score": float(rng.random()),
                        }
                    )
    (folder / "results.json").write_text(json.dumps(dets))
    _check_equal(store, "test", folder)
