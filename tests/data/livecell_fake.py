"""Fake LIVECell files in the exact real layout: ``images.zip`` + three COCO JSON files.

``images.zip`` holds ``images/livecell_train_val_images/<cell type>/<name>.tif`` and
``images/livecell_test_images/<cell type>/<name>.tif`` (8-bit grayscale TIFF, real names
``<cell type>_Phase_<well>_<location>_<time stamp>_<crop>.tif``; one test image sits in the
flat folder, the older layout); ``livecell_coco_{split}.json`` are COCO instance files with
polygon outlines, ``bbox`` from the polygon's extent, ``area`` its shoelace area, ``iscrowd``
0 and one category ``cell``, like LIVECell's. Images are 52 x 70 instead of 520 x 704, and two
outlines overlap in one image (as LIVECell's do).
"""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import tifffile

H, W = 52, 70
IMAGES = {
    "train": [
        ("A172", "A172_Phase_A7_1_00d00h00m_1.tif"),
        ("SHSY5Y", "SHSY5Y_Phase_B10_2_01d04h00m_3.tif"),
    ],
    "val": [("BV2", "BV2_Phase_D4_1_02d08h00m_2.tif")],
    "test": [
        ("SKOV3", "SKOV3_Phase_E4_1_03d00h00m_4.tif"),
        ("MCF7", "MCF7_Phase_C3_2_00d12h00m_1.tif"),
    ],
}
FLAT = "MCF7_Phase_C3_2_00d12h00m_1.tif"  # stored without the cell-type folder


def _box(x0: float, y0: float, x1: float, y1: float) -> list[float]:
    return [x0, y0, x1, y0, x1, y1, x0, y1]


def _shoelace(p: list[float]) -> float:
    x, y = np.asarray(p[0::2]), np.asarray(p[1::2])
    return float(0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


def make_livecell(seed: int = 0) -> tuple[bytes, dict[str, bytes], dict[str, list]]:
    """``(images.zip, {split: json bytes}, {split: [(file_name, polygons)]})``."""
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    jsons: dict[str, bytes] = {}
    truth: dict[str, list] = {}
    image_id = 100
    with zipfile.ZipFile(buf, "w") as zf:
        for split, files in IMAGES.items():
            folder = "livecell_test_images" if split == "test" else "livecell_train_val_images"
            images, anns = [], []
            truth[split] = []
            for cell_type, name in files:
                image_id += 1
                arr = rng.integers(60, 200, (H, W)).astype(np.uint8)
                tif = io.BytesIO()
                tifffile.imwrite(tif, arr)
                member = (
                    f"images/{folder}/{name}"
                    if name == FLAT
                    else f"images/{folder}/{cell_type}/{name}"
                )
                zf.writestr(member, tif.getvalue())
                images.append(
                    {
                        "id": image_id,
                        "width": W,
                        "height": H,
                        "file_name": name,
                        "original_filename": name.replace("_1.tif", ".tif"),
                        "url": "",
                    }
                )
                polys = [
                    _box(2.0, 3.0, 14.0, 12.0),
                    _box(20.0, 20.0, 40.0, 44.0),
                    _box(30.0, 28.0, 36.0, 34.0),  # lies on the previous one
                    [50.0, 5.0, 66.0, 8.0, 60.0, 18.0],
                ]
                for poly in polys:
                    xs, ys = poly[0::2], poly[1::2]
                    anns.append(
                        {
                            "id": len(anns) + 1000 * image_id,
                            "image_id": image_id,
                            "category_id": 1,
                            "segmentation": [poly],
                            "area": _shoelace(poly),
                            "bbox": [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)],
                            "iscrowd": 0,
                        }
                    )
                truth[split].append((name, arr, polys))
            doc = {
                "info": {"description": "fake LIVECell", "version": "1.0", "year": 2021},
                "licenses": [{"id": 1, "name": "CC BY-NC 4.0", "url": ""}],
                "images": images,
                "annotations": anns,
                "categories": [{"supercategory": "cell", "id": 1, "name": "cell"}],
            }
            jsons[split] = json.dumps(doc).encode()
    return buf.getvalue(), jsons, truth
