"""COCO instance JSON: read (polygons, RLE, compressed RLE), overlaps, write, validate."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from pycocotools import mask as mask_utils

from cellbench.errors import ValidationError
from cellbench.formats.registry import get_format, read_samples, write_samples
from cellbench.store.sample import Sample


def _rle(mask: np.ndarray, compressed: bool = True) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    if compressed:
        return {"size": rle["size"], "counts": rle["counts"].decode()}
    flat = mask.astype(np.uint8).ravel(order="F")
    counts, value, run = [], 0, 0
    for v in flat:
        if v == value:
            run += 1
        else:
            counts.append(run)
            value, run = v, 1
    counts.append(run)
    return {"size": list(mask.shape), "counts": counts}


def _coco_folder(tmp_path: Path, anns: list[dict], h: int = 30, w: int = 40) -> Path:
    root = tmp_path / "coco"
    (root / "images").mkdir(parents=True)
    tifffile.imwrite(root / "images" / "img-1.tif", np.arange(h * w, dtype=np.uint16).reshape(h, w))
    doc = {
        "images": [{"id": 7, "file_name": "img-1.tif", "width": w, "height": h}],
        "annotations": [
            {"id": k + 1, "image_id": 7, "category_id": 1, **a} for k, a in enumerate(anns)
        ],
        "categories": [{"id": 1, "name": "cell"}],
    }
    (root / "annotations.json").write_text(json.dumps(doc))
    return root


def test_polygon_rle_and_compressed_rle_read_as_pycocotools_rasterises(tmp_path: Path) -> None:
    a = np.zeros((30, 40), bool)
    a[2:8, 3:9] = True
    b = np.zeros((30, 40), bool)
    b[15:25, 20:30] = True
    poly = [10.0, 10.0, 18.0, 10.0, 18.0, 14.0, 10.0, 14.0]
    root = _coco_folder(
        tmp_path,
        [
            {"segmentation": _rle(a, compressed=False), "iscrowd": 0},
            {"segmentation": _rle(b), "iscrowd": 0},
            {"segmentation": [poly], "iscrowd": 0},
        ],
    )
    (sample,) = read_samples("coco", root)
    assert sample.id == "img-1" and sample.image.shape == (1, 30, 40)
    assert sample.metadata == {"coco_image_id": 7, "overlapping_objects": 0}
    expect_poly = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([poly], 30, 40)))
    np.testing.assert_array_equal(sample.instances == 1, a)
    np.testing.assert_array_equal(sample.instances == 2, b)
    np.testing.assert_array_equal(sample.instances == 3, expect_poly.astype(bool))
    assert get_format("coco").validate(root) == []


def test_overlaps_are_refused_by_keep_and_resolved_smaller_on_top(tmp_path: Path) -> None:
    big = np.zeros((30, 40), bool)
    big[5:25, 5:25] = True
    small = np.zeros((30, 40), bool)
    small[10:15, 10:15] = True
    other = np.zeros((30, 40), bool)
    other[2:4, 30:38] = True
    anns = [{"segmentation": _rle(m), "iscrowd": 0} for m in (small, big, other)]
    root = _coco_folder(tmp_path, anns)
    with pytest.raises(ValidationError) as err:
        list(read_samples("coco", root))
    (line,) = err.value.problems
    assert "image id 7" in line and "2 objects overlap" in line and "25 pixels" in line
    (sample,) = read_samples("coco", root, overlaps="resolve")
    assert sample.metadata["overlapping_objects"] == 2
    np.testing.assert_array_equal(sample.instances == 1, small)  # smaller on top, whole
    np.testing.assert_array_equal(sample.instances == 2, big & ~small)
    problems = get_format("coco").validate(root)
    assert len(problems) == 1 and "overlap" in problems[0]
    assert get_format("coco").validate(root, overlaps="resolve") == []


def test_validate_lists_every_problem_with_file_image_and_expectation(tmp_path: Path) -> None:
    root = tmp_path / "bad"
    (root / "images").mkdir(parents=True)
    tifffile.imwrite(root / "images" / "a.tif", np.zeros((20, 20), np.uint8))
    tifffile.imwrite(root / "images" / "b.tif", np.zeros((20, 20), np.uint8))
    tifffile.imwrite(root / "images" / "c.tif", np.zeros((10, 20), np.uint8))
    box = [2.0, 2.0, 6.0, 2.0, 6.0, 6.0, 2.0, 6.0]
    doc = {
        "images": [
            {"id": 1, "file_name": "a.tif", "width": 20, "height": 20},
            {"id": 1, "file_name": "b.tif", "width": 20, "height": 20},
            {"id": 2, "file_name": "b.tif", "width": 20, "height": 20},
            {"id": 3, "file_name": "c.tif", "width": 20, "height": 20},
        ],
        "annotations": [
            {"id": 1, "image_id": 1, "segmentation": [[-3.0, 2.0, 6.0, 2.0, 6.0, 6.0]]},
            {"id": 2, "image_id": 9, "segmentation": [box]},
            {"id": 3, "image_id": 1, "segmentation": [box], "bbox": [0, 0, 19, 19], "area": 3},
            {"id": 4, "image_id": 1, "segmentation": [[1.0, 2.0, 3.0]]},
            {"id": 5, "image_id": 1, "segmentation": {"size": [5, 5], "counts": [25]}},
            {"id": 6, "image_id": 3, "segmentation": [box]},
        ],
    }
    (root / "annotations.json").write_text(json.dumps(doc))
    problems = get_format("coco").validate(root)
    text = "\n".join(problems)
    assert all(p.startswith("annotations.json: ") for p in problems), text
    assert "image id 1: duplicate image id" in text
    assert "annotation id 2 names image id 9, which is not in 'images'" in text
    assert "annotation id 1: polygon 0 reaches outside the image" in text
    assert "expected 0 <= x <= 20" in text
    assert "annotation id 3: bbox [0, 0, 19, 19] inconsistent" in text
    assert "annotation id 3: area 3 inconsistent" in text
    assert "annotation id 4: polygon 0 has 3 coordinates" in text
    assert "annotation id 5: RLE size [5, 5], expected [20, 20]" in text
    assert "image id 2 (b.tif): no annotations" in text
    assert "image id 3 (c.tif): c.tif is 20x10 (w x h), the JSON says 20x20" in text
    assert len(problems) == 9, text
    with pytest.raises(ValidationError) as err:
        list(read_samples("coco", root))
    assert len(err.value.problems) == 6  # all but the checks only validate makes


def test_not_coco_json_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text("[{}]")
    (tmp_path / "b.json").write_text("{nope")
    (a,) = get_format("coco").validate(tmp_path / "a.json")
    assert a.startswith("a.json: a list") and "expected a COCO object" in a
    (b,) = get_format("coco").validate(tmp_path / "b.json")
    assert b.startswith("b.json: not JSON")
    # nested past any parser's depth: one line, not a RecursionError
    (tmp_path / "c.json").write_text("[" * 200_000 + "]" * 200_000)
    assert get_format("coco").validate(tmp_path / "c.json") == [
        "c.json: not JSON (nested too deeply); expected a COCO JSON object"
    ]
    # NaN is JSON to the json module (not to orjson): read, then refused as not COCO
    (tmp_path / "d.json").write_text('{"images": NaN}')
    (d,) = get_format("coco").validate(tmp_path / "d.json")
    assert d.startswith("d.json: dict") and "expected a COCO object" in d


@pytest.mark.parametrize(
    "text",
    [
        '{"annotations": [{"id": 1, "segmentation": {"counts": "0"}}], "images": [{"id": 7, '
        '"file_name": "a.tif", "width": 4, "height": 3, "id": 8}], "categories": []}',
        '{"images": [{"id": 1, "file_name": "a.tif"}], "images": [{"id": 2}]}',  # last wins
        '\ufeff{"images": [{"id": 1, "file_name": "\\u00e9\\ud83d\\ude00.tif"}]}',
        '{"images": [{"id": NaN}]}',
        '{"images": [{"id": 123456789012345678901234567890}]}',
        '{"images": [{"id": 1e400}]}',
        '{"images": [{"file_name": "\\ud800.tif"}]}',
        '{"images": [{"id": 1}]} trailing',
        '{"images": {"id": 1}}',
        '[{"image_id": 1}]',
        '{"images": [' + "[" * 2000 + "]" * 2000 + "]}",
        '{"images": [-0, 1.5e-320, 0.1, true, null, {"a": {"b": [1]}}]}',
    ],
)
def test_images_table_reads_what_the_full_parse_reads(tmp_path: Path, text: str) -> None:
    """The images-only reader (simdjson) gives the full parse's table and messages, always."""
    from cellbench.tasks.instance_segmentation.coco import (
        coco_images,
        load_images_table,
        load_json,
    )

    path = tmp_path / "annotations.json"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    full, full_problems = load_json(path)
    table, problems = load_images_table(path)
    assert problems == full_problems
    if full_problems:
        return
    assert coco_images(table, path.name) == coco_images(full, path.name)
    if not isinstance(full, dict):
        assert table == full
        return
    assert table["images"] == full["images"]
    if text.startswith('{"annotations"'):
        # the usual file is read by simdjson alone: the tables beside images are never built
        assert list(table) == ["images"] and len(full) == 3


@pytest.mark.parametrize("segmentation", ["rle", "polygon"])
def test_write_then_read_gives_the_same_samples(tmp_path: Path, segmentation: str) -> None:
    rng = np.random.default_rng(1)
    lab = np.zeros((48, 64), np.uint16)
    lab[2:10, 3:12] = 1
    lab[20:30, 20:35] = 2
    lab[31:40, 40:50] = 3
    lab[33:36, 50:52] = 3  # touching piece, same object
    samples = [
        Sample(
            id=f"s{i}",
            image=rng.integers(0, 4000, (1, 48, 64)).astype(np.uint16),
            instances=lab,
            split=("train", "test")[i],
            channel_names=["dna"],
            pixel_size={"x": 0.5, "y": 0.5},
            metadata={"plate": f"p{i}"},
        )
        for i in range(2)
    ]
    write_samples("coco", samples, tmp_path / "out", segmentation=segmentation)
    doc = json.loads((tmp_path / "out" / "annotations.json").read_text())
    assert [a["iscrowd"] for a in doc["annotations"]] == [0] * 6
    assert doc["annotations"][0]["bbox"] == [3.0, 2.0, 9.0, 8.0]
    assert doc["annotations"][0]["area"] == 72.0
    assert get_format("coco").validate(tmp_path / "out") == []
    back = list(read_samples("coco", tmp_path / "out"))
    for s, b in zip(samples, back, strict=True):
        assert (b.id, b.split, b.channel_names, b.pixel_size) == (
            s.id,
            s.split,
            s.channel_names,
            s.pixel_size,
        )
        assert b.metadata["plate"] == s.metadata["plate"]
        np.testing.assert_array_equal(b.image, s.image)
        np.testing.assert_array_equal(b.instances, s.instances)


def test_file_names_leaving_the_image_folder_are_refused_and_channels_kept(
    tmp_path: Path,
) -> None:
    doc = {
        "images": [{"id": 1, "file_name": "../secret.tif", "width": 4, "height": 4}],
        "annotations": [],
    }
    (tmp_path / "annotations.json").write_text(json.dumps(doc))
    problems = get_format("coco").validate(tmp_path)
    assert problems[0] == (
        "annotations.json: image id 1: file_name '../secret.tif' leaves the image folder "
        "(expected a relative path)"
    )
    lab = np.zeros((12, 10), np.uint16)
    lab[2:5, 2:6] = 1
    s = Sample(id="five", image=np.arange(600, dtype=np.uint16).reshape(5, 12, 10), instances=lab)
    write_samples("coco", [s], tmp_path / "multi")
    (back,) = read_samples("coco", tmp_path / "multi")
    np.testing.assert_array_equal(back.image, s.image)


def test_crops_from_runs_equal_pycocotools_decode_and_box() -> None:
    """Each mask's box and pixels from the RLE runs equal pycocotools' decode and toBbox."""
    from cellbench.tasks.instance_segmentation.coco import _crops

    rng = np.random.default_rng(7)
    h, w = 23, 17
    masks = [np.zeros((h, w), bool), np.ones((h, w), bool)]  # empty, full (one wrapping run)
    edge = np.zeros((h, w), bool)
    edge[:, 5:9] = True  # top to bottom: runs go on into the next column
    edge[3:7, 9] = True
    masks.append(edge)
    wrap = np.zeros((h, w), bool)
    wrap[10:, 2] = True  # one run from row 10 of column 2 on to row 3 of column 3
    wrap[:4, 3] = True
    masks.append(wrap)
    corner = np.zeros((h, w), bool)
    corner[h - 1, w - 1] = True  # one pixel in the last corner
    masks.append(corner)
    for _ in range(40):  # boxes with holes, anywhere
        m = np.zeros((h, w), bool)
        y, x = rng.integers(0, h), rng.integers(0, w)
        m[y : y + rng.integers(1, h), x : x + rng.integers(1, w)] = True
        masks.append(m & (rng.random((h, w)) < 0.8))
    rles = [mask_utils.encode(np.asfortranarray(m.astype(np.uint8))) for m in masks]
    crops, areas = _crops(rles, h, w)
    for m, rle, (box, crop), area in zip(masks, rles, crops, areas, strict=True):
        assert area == m.sum() == mask_utils.area(rle)
        if not m.any():
            assert crop.size == 0
            continue
        x, y, bw, bh = (int(v) for v in mask_utils.toBbox(rle))
        assert box == (slice(y, y + bh), slice(x, x + bw))
        np.testing.assert_array_equal(crop, mask_utils.decode(rle)[box].astype(bool))
        np.testing.assert_array_equal(crop, m[box])


@pytest.mark.parametrize(
    "counts", ["0n`h7", "3", "\u00e9\u00e9", "2L0" + "0" * 13 + "1"]
)  # total too large, too small, not ASCII, a number too long
def test_malformed_compressed_rle_is_one_line(tmp_path: Path, counts: str) -> None:
    root = _coco_folder(tmp_path, [{"segmentation": {"size": [30, 40], "counts": counts}}])
    with pytest.raises(ValidationError) as err:
        list(read_samples("coco", root))
    assert err.value.problems == [
        "annotations.json: image id 7 annotation id 1: compressed RLE counts do not decode to "
        "30x40 pixels (malformed string or wrong total)"
    ]


@pytest.mark.parametrize("bands", [3, 4])
def test_colour_png_images_read_as_contiguous_planes_alpha_kept(tmp_path: Path, bands: int) -> None:
    """A COCO dataset's RGB(A) PNGs become (c, y, x) planes (an opaque alpha kept, as always)."""
    import imageio.v3 as iio

    mask = np.zeros((30, 40), bool)
    mask[3:7, 5:11] = True
    root = _coco_folder(tmp_path, [{"segmentation": _rle(mask)}])
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (30, 40, bands), dtype=np.uint8)
    if bands == 4:
        pixels[..., 3] = 255
    iio.imwrite(root / "images" / "img-1.png", pixels)
    doc = json.loads((root / "annotations.json").read_text())
    doc["images"][0]["file_name"] = "img-1.png"
    (root / "annotations.json").write_text(json.dumps(doc))
    (sample,) = read_samples("coco", root)
    assert sample.image.shape == (bands, 30, 40) and sample.image.flags.c_contiguous
    np.testing.assert_array_equal(sample.image, np.moveaxis(pixels, -1, 0))
