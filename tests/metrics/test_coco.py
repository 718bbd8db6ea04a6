from __future__ import annotations

import json

import numpy as np
import pytest

from cellbench import __version__
from cellbench.errors import ValidationError
from cellbench.metrics import COCO_AREA_RANGES, LIVECELL_AREA_RANGES, CocoAP, InstanceMasks

from ._coco_ref import coco_reference
from ._synth import perturb, random_labels, random_scores

# Small-image area bins so every range gets objects.
RANGES = {"all": (0, 1e10), "small": (0, 30), "medium": (30, 80), "large": (80, 1e10)}


def _assert_same(metric, stats, ref_precision, ref_recall):
    mine = metric.coco_arrays(stats)
    np.testing.assert_allclose(mine["precision"], ref_precision, rtol=0, atol=1e-9)
    np.testing.assert_allclose(mine["recall"], ref_recall, rtol=0, atol=1e-9)
    # The scalar values are means of those arrays, as pycocotools' summarize computes them.
    values = metric.aggregate(stats)
    p_all = ref_precision[:, :, 0, 0]
    if (p_all > -1).any():
        assert values["ap"] == pytest.approx(p_all[p_all > -1].mean(), abs=1e-9)
        first = f"ap@{metric.iou_thresholds[0]:.2f}"
        assert values[first] == pytest.approx(p_all[0][p_all[0] > -1].mean(), abs=1e-9)
    else:
        assert np.isnan(values["ap"])


@pytest.mark.parametrize("seed", range(16))
def test_fast_path_equals_cocoeval(seed):
    rng = np.random.default_rng(seed)
    n_img = 4
    gts = [random_labels((36, 40), int(rng.integers(3, 30)), rng) for _ in range(n_img)]
    gts[0][:] = 0  # an image without ground truth
    preds = [perturb(g, rng, sparse_ids=seed % 2 == 1) for g in gts]
    preds[1][:] = 0  # an image without predictions
    scores = [random_scores(p, rng, ties=seed % 3 == 0) for p in preds]
    max_dets = 7 if seed % 5 == 4 else 100  # truncation on purpose in one case
    metric = CocoAP(max_dets=max_dets, area_ranges=RANGES)
    stats = metric.sample_stats(gts, preds, scores)
    _assert_same(metric, stats, *coco_reference(gts, preds, scores, max_dets, RANGES))


def test_fast_path_low_thresholds_need_sequential_greedy():
    rng = np.random.default_rng(10)
    thr = (0.1, 0.2, 0.35, 0.5)
    for _ in range(3):
        gts = [random_labels((36, 40), 20, rng) for _ in range(3)]
        preds = [perturb(g, rng, p_split=0.3, p_merge=0.3) for g in gts]
        scores = [random_scores(p, rng, ties=True) for p in preds]
        metric = CocoAP(max_dets=100, iou_thresholds=thr, area_ranges=RANGES)
        stats = metric.sample_stats(gts, preds, scores)
        _assert_same(metric, stats, *coco_reference(gts, preds, scores, 100, RANGES, thr))


def test_unscored_predictions_use_stable_order_and_note():
    rng = np.random.default_rng(11)
    gts = [random_labels((30, 30), 12, rng) for _ in range(3)]
    preds = [perturb(g, rng) for g in gts]
    metric = CocoAP(area_ranges=RANGES)
    stats = metric.sample_stats(gts, preds)
    _assert_same(metric, stats, *coco_reference(gts, preds, [None] * 3, 100, RANGES))
    assert any("without prediction scores" in n for n in metric.notes(stats))


def test_area_range_boundaries_are_inclusive_like_pycocotools():
    # Objects of exactly 30 and 80 pixels sit on range borders (pycocotools: lo <= a <= hi).
    gt = np.zeros((40, 40), np.int32)
    gt[0:5, 0:6] = 1  # 30 px
    gt[10:18, 0:10] = 2  # 80 px
    gt[20:29, 20:29] = 3  # 81 px
    gt[30:35, 30:35] = 4  # 25 px
    pred = np.zeros_like(gt)
    pred[0:5, 0:6] = 5  # exact
    pred[10:18, 1:10] = 6  # 72 px, IoU 0.9
    pred[20:30, 20:28] = 7  # 80 px, IoU 0.64
    pred[36:40, 0:8] = 8  # false positive, 32 px
    scores = [{5: 0.9, 6: 0.8, 7: 0.95, 8: 0.99}]
    metric = CocoAP(area_ranges=RANGES)
    stats = metric.sample_stats([gt], [pred], scores)
    _assert_same(metric, stats, *coco_reference([gt], [pred], scores, 100, RANGES))


def test_more_than_100_objects_default_max_dets_and_note():
    rng = np.random.default_rng(12)
    gts = []
    for _ in range(2):
        gt = np.zeros((64, 80), np.int32)
        ids = rng.permutation(np.arange(1, 161))
        gt[: 4 * 16, :] = np.kron(ids.reshape(8, 20), np.ones((8, 4), np.int32))
        gts.append(gt)
    preds = [perturb(g, rng, p_split=0.05, p_merge=0.05) for g in gts]
    scores = [random_scores(p, rng) for p in preds]
    metric = CocoAP(area_ranges=RANGES)
    stats = metric.sample_stats(gts, preds, scores)
    assert {s.max_dets for s in stats} == {None}  # not cut until every image is matched
    assert {s.max_dets for s in metric.finalize(stats)} == {160}
    notes = metric.notes(stats)
    assert "maxDets = 160" in notes[0] and "max(100" in notes[0]
    _assert_same(metric, stats, *coco_reference(gts, preds, scores, 160, RANGES))
    # The trap: pycocotools' default maxDets of 100 silently truncates and lowers recall.
    _, r100 = coco_reference(gts, preds, scores, 100, RANGES)
    assert metric.aggregate(stats)["ar"] > r100[:, 0, 0].mean() + 0.1
    explicit = CocoAP(max_dets=2000, area_ranges=RANGES)
    assert "maxDets = 2000 (set explicitly)" in explicit.notes(explicit.sample_stats(gts, preds))[0]


@pytest.mark.parametrize("seed", range(6))
def test_max_dets_resolved_after_matching_equals_cutting_first(seed):
    """Streaming images one by one (as scoring does) and cutting at finalize is exact."""
    rng = np.random.default_rng(100 + seed)
    # image 0: 120 ground-truth objects (sets maxDets); image 1: few objects but 150
    # predictions, so the split-level cut (120) drops detections there but a per-image
    # resolution (100) would drop more.
    dense = np.kron(rng.permutation(np.arange(1, 121)).reshape(8, 15), np.ones((6, 5)))
    dense = np.pad(dense.astype(np.int32), ((0, 8), (0, 0)))  # 56 x 75
    sparse = np.zeros((56, 75), np.int32)
    sparse[16:] = random_labels((40, 75), 8, rng)
    clutter = sparse + np.where(sparse > 0, 200, 0)  # the true objects, found (ids + 200)
    clutter.reshape(-1)[: 150 * 4] = np.repeat(np.arange(1, 151), 4)  # rows 0-7: clutter
    gts = [dense, sparse, random_labels((56, 75), 5, rng)]
    preds = [perturb(dense, rng, p_split=0.1, p_merge=0.1), clutter, perturb(gts[2], rng)]
    scores = [random_scores(p, rng, ties=seed % 2 == 0) for p in preds]
    # 105 clutter objects rank first, then the true ones: kept at maxDets 120, lost at 100
    ids = np.unique(clutter[clutter > 0])
    scores[1] = {int(i): 1.0 - int(i) / 1000 if i < 200 else 0.8945 for i in ids}
    metric = CocoAP(area_ranges=RANGES)
    streamed = metric.finalize(
        [
            metric.sample_stats([g], [p], [sc])[0]
            for g, p, sc in zip(gts, preds, scores, strict=True)
        ]
    )
    assert [s.max_dets for s in streamed] == [120, 120, 120]
    assert streamed[1].n_pred_total > 120 and streamed[1].scores.size == 120
    cut_first = CocoAP(max_dets=120, area_ranges=RANGES).sample_stats(gts, preds, scores)
    for a, b in zip(streamed, cut_first, strict=True):
        np.testing.assert_array_equal(a.scores, b.scores)
        np.testing.assert_array_equal(a.outcome, b.outcome)
    _assert_same(metric, streamed, *coco_reference(gts, preds, scores, 120, RANGES))
    assert all(a is b for a, b in zip(metric.finalize(streamed), streamed, strict=True))
    # subsets (bootstrap, groups) keep the split-level cut instead of re-resolving to 100
    alone = metric.aggregate(streamed[1:2])
    ref = coco_reference(gts[1:2], preds[1:2], scores[1:2], 120, RANGES)
    assert alone["ap"] == pytest.approx(ref[0][:, :, 0, 0][ref[0][:, :, 0, 0] > -1].mean())
    assert alone["ap"] > 0.05  # the true objects count (after 100+ false positives)
    own = metric.aggregate(metric.sample_stats(gts[1:2], preds[1:2], scores[1:2]))
    assert own["ap"] == 0.0  # resolved on that image alone: maxDets 100 drops every true object


def test_overlapping_masks_path_equals_cocoeval():
    rng = np.random.default_rng(13)
    gm, pm, ps = [], [], []
    for k in range(4):
        g = [random_labels((30, 32), 1, rng, 2, 8) > 0 for _ in range(int(rng.integers(0, 10)))]
        p = [np.roll(m, int(rng.integers(-2, 3)), axis=int(rng.integers(2))) for m in g]
        p = [m for m in p if rng.random() < 0.8 and m.any()]
        p += [random_labels((30, 32), 1, rng, 2, 8) > 0 for _ in range(k)]
        gm.append(g)
        pm.append(p)
        ps.append(list(rng.choice([0.3, 0.6, 0.9], len(p))))

    def as_masks(ms, sc=None):
        return InstanceMasks.from_masks(np.array(ms, dtype=bool).reshape(-1, 30, 32), sc)

    gts = [as_masks(g) for g in gm]
    preds = [as_masks(p, s) for p, s in zip(pm, ps, strict=True)]
    metric = CocoAP(max_dets=5, area_ranges=RANGES)
    stats = metric.sample_stats(gts, preds)
    ref_g = [g if g else np.zeros((30, 32), np.int32) for g in gm]
    ref_p = [p if p else np.zeros((30, 32), np.int32) for p in pm]
    _assert_same(metric, stats, *coco_reference(ref_g, ref_p, ps, 5, RANGES))


def test_mask_ground_truth_with_and_without_overlaps_equals_cocoeval():
    # Ground-truth masks that tile (from a label image) or overlap each other, empty masks,
    # tied scores and a maxDets cut: the InstanceMasks path must equal COCOeval.
    rng = np.random.default_rng(21)
    for overlapping in (False, True):
        gm, pm, ps = [], [], []
        for _ in range(3):
            lab = random_labels((30, 32), 9, rng)
            g = [lab == i for i in np.unique(lab)[1:]] + [np.zeros((30, 32), bool)]
            if overlapping:
                g.append(np.roll(g[0], 2, axis=1) | g[0])
            p = [np.roll(m, int(rng.integers(-2, 3)), axis=1) for m in g if rng.random() < 0.8]
            p += [random_labels((30, 32), 1, rng, 2, 8) > 0, np.zeros((30, 32), bool)]
            gm.append(g)
            pm.append(p)
            ps.append(list(rng.choice([0.3, 0.6, 0.9], len(p))))
        gts = [InstanceMasks.from_masks(np.array(g)) for g in gm]
        preds = [InstanceMasks.from_masks(np.array(p), s) for p, s in zip(pm, ps, strict=True)]
        metric = CocoAP(max_dets=6, area_ranges=RANGES)
        stats = metric.sample_stats(gts, preds)
        _assert_same(metric, stats, *coco_reference(gm, pm, ps, 6, RANGES))


def test_label_gt_with_mask_predictions_and_label_predictions_agree():
    rng = np.random.default_rng(14)
    gts = [random_labels((30, 30), 10, rng) for _ in range(2)]
    preds = [perturb(g, rng) for g in gts]
    scores = [random_scores(p, rng) for p in preds]
    metric = CocoAP(area_ranges=RANGES)
    fast = metric.aggregate(metric.sample_stats(gts, preds, scores))
    masks = [InstanceMasks.from_labels(p, s) for p, s in zip(preds, scores, strict=True)]
    rle = metric.aggregate(metric.sample_stats(gts, masks))
    assert fast == pytest.approx(rle, abs=1e-12, nan_ok=True)


def test_3d_equals_cocoeval_on_the_flattened_volume():
    # IoU and areas depend only on voxel sets, so a (z, y, x) volume scores like the 2D image
    # (z*y, x): pycocotools on that view is an exact reference for the 3D path.
    rng = np.random.default_rng(15)
    gts = [random_labels((6, 14, 16), 10, rng) for _ in range(3)]
    preds = [perturb(g, rng) for g in gts]
    scores = [random_scores(p, rng) for p in preds]
    metric = CocoAP(area_ranges=RANGES)
    stats = metric.sample_stats(gts, preds, scores)
    flat_g = [g.reshape(-1, 16) for g in gts]
    flat_p = [p.reshape(-1, 16) for p in preds]
    _assert_same(metric, stats, *coco_reference(flat_g, flat_p, scores, 100, RANGES))
    assert any("3D volumes" in n for n in metric.notes(stats))
    masks = [InstanceMasks.from_labels(p, s) for p, s in zip(preds, scores, strict=True)]
    assert masks[0].to_masks().shape[1:] == (6, 14, 16)
    assert metric.aggregate(metric.sample_stats(gts, masks)) == pytest.approx(
        metric.aggregate(stats), nan_ok=True
    )


def test_hand_computed_ap():
    # Two objects, found with scores 0.9 (IoU 1) and 0.8 (IoU 0.6) plus a 0.95 false positive.
    gt = np.zeros((20, 20), np.int32)
    gt[0:5, 0:5] = 1
    gt[10:15, 10:15] = 2
    pred = np.zeros_like(gt)
    pred[0:5, 0:5] = 1
    pred[10:15, 10:13] = 2  # 15 px inside a 25 px object: IoU 0.6
    pred[17:20, 17:20] = 3
    metric = CocoAP()
    values = metric.compute([gt], [pred], [{1: 0.9, 2: 0.8, 3: 0.95}]).values
    # At t <= 0.6: ranking FP, TP, TP -> precision 0, 1/2, 2/3 at recall 0, .5, 1; interpolated
    # precision is 2/3 for every recall point. At t > 0.6: only the first TP -> 1/2 up to
    # recall 0.5, then 0.
    p_low = 2 / 3
    p_high = 0.5 * 51 / 101
    assert values["ap@0.50"] == pytest.approx(p_low)
    assert values["ap@0.60"] == pytest.approx(p_low)
    assert values["ap@0.65"] == pytest.approx(p_high)
    assert values["ap"] == pytest.approx((3 * p_low + 7 * p_high) / 10)
    assert values["recall@0.50"] == 1.0 and values["recall@0.75"] == 0.5


def test_empty_everything_gives_nan_and_notes():
    z = np.zeros((10, 10), np.int32)
    metric = CocoAP()
    res = metric.compute([z, z], [z, z])
    assert np.isnan(res.values["ap"])
    assert any("No ground-truth object in area range 'all'" in n for n in res.notes)
    one = z.copy()
    one[2:5, 2:5] = 1
    res = metric.compute([one], [z])
    assert res.values["ap"] == 0.0 and res.values["ar"] == 0.0


def test_aggregate_on_subsets_matches_direct_computation():
    rng = np.random.default_rng(16)
    gts = [random_labels((30, 30), 12, rng) for _ in range(5)]
    preds = [perturb(g, rng) for g in gts]
    scores = [random_scores(p, rng) for p in preds]
    metric = CocoAP(max_dets=100, area_ranges=RANGES)
    stats = metric.sample_stats(gts, preds, scores)
    sub = [0, 2, 3]
    direct = metric.sample_stats(
        [gts[i] for i in sub], [preds[i] for i in sub], [scores[i] for i in sub]
    )
    assert metric.aggregate([stats[i] for i in sub]) == pytest.approx(
        metric.aggregate(direct), nan_ok=True
    )
    # A bootstrap multiset equals the reference on duplicated images.
    boot = [1, 1, 4, 0, 4]
    ref = coco_reference(
        [gts[i] for i in boot], [preds[i] for i in boot], [scores[i] for i in boot], 100, RANGES
    )
    _assert_same(metric, [stats[i] for i in boot], *ref)


def test_result_records_params_version_details():
    rng = np.random.default_rng(17)
    gts = [random_labels((30, 30), 8, rng)]
    preds = [perturb(gts[0], rng)]
    metric = CocoAP(max_dets=500, area_ranges=LIVECELL_AREA_RANGES)
    res = metric.compute(gts, preds, [random_scores(preds[0], rng)], sample_ids=["img-a"])
    assert res.metric == "coco_ap"
    assert res.cellbench_version == __version__
    assert res.params["max_dets"] == 500
    assert res.params["area_ranges"]["small"] == [0.0, 324.0]
    assert {"ap", "ar", "ap@0.50", "ap@0.75", "recall@0.95", "ap_small", "ar_large"} <= set(
        res.values
    )
    assert set(res.per_sample) == {"img-a"}
    d = res.details
    assert len(d["precision_recall"]) == 10 and len(d["precision_recall"][0]) == 101
    assert len(d["recall_at_iou"]) == len(d["precision_at_iou"]) == 10
    json.dumps(res.to_dict())
    assert CocoAP().params["area_ranges"] == {k: list(v) for k, v in COCO_AREA_RANGES.items()}


def test_validation_lists_every_problem():
    good = np.zeros((10, 10), np.int32)
    good[1:4, 1:4] = 1
    with pytest.raises(ValidationError) as err:
        CocoAP().sample_stats(
            [good, good.astype(float), good],
            [good, good, np.zeros((9, 10), np.int32)],
            [{2: 0.5}, None, None],
            sample_ids=["a", "b", "c"],
        )
    msg = str(err.value)
    assert "3 problems" in msg
    assert "sample 'a': no score for predicted ids [1]" in msg
    assert "sample 'b': ground truth label image must have an integer dtype" in msg
    assert "sample 'c': prediction shape (9, 10) differs" in msg
    with pytest.raises(ValidationError, match="contain 'all'"):
        CocoAP(area_ranges={"small": (0, 10)})
    with pytest.raises(ValidationError, match="not in"):
        CocoAP(iou_thresholds=(0.0, 0.5))
    with pytest.raises(ValidationError, match="1 scores for 2 masks"):
        InstanceMasks.from_masks(np.zeros((2, 4, 4), bool), scores=[1.0])


@pytest.mark.parametrize("side", [10, 1030])  # pixel path; run path (over 2**20 pixels)
def test_negative_ids_are_reported_for_each_image_and_role(side):
    # Two label images are checked for negative ids on the overlap's runs, not in a pass of
    # their own; the report must still name each image and role, with the other problems.
    good = np.zeros((side, side), np.int32)
    good[1:4, 1:4] = 1
    bad = good.copy()
    bad[-1, -1] = -3
    with pytest.raises(ValidationError) as err:
        CocoAP().sample_stats(
            [bad, good, bad, bad],
            [good, bad, bad, good.astype(float)],
            sample_ids=["g", "p", "both", "dtype"],
        )
    lines = str(err.value).splitlines()
    assert "6 problems" in lines[0]
    for sid, role in (("g", "ground truth"), ("p", "prediction"), ("both", "ground truth")):
        assert any(f"sample {sid!r}: {role} label image has negative ids" in x for x in lines)
    assert any("sample 'both': prediction label image has negative ids" in x for x in lines)
    assert any("sample 'dtype': ground truth label image has negative ids" in x for x in lines)
    assert any("sample 'dtype': prediction label image must have an integer" in x for x in lines)


def test_non_numeric_scores_are_reported_not_raised():
    good = np.zeros((10, 10), np.int32)
    good[1:4, 1:4] = 1
    good[6:9, 6:9] = 2
    with pytest.raises(ValidationError, match=r"scores must be numbers \(predicted id 2: 'x'\)"):
        CocoAP().sample_stats([good], [good], [{1: 0.5, 2: "x"}])
    stats = CocoAP().sample_stats([good], [good], [{1: "0.5", 2: 0.25}])  # float() accepts it
    assert stats[0].scores.tolist() == [0.5, 0.25]


def test_score_arrays_and_uncompressed_rles():
    rng = np.random.default_rng(18)
    gt = random_labels((24, 24), 8, rng)
    pred = perturb(gt, rng)
    mapping = random_scores(pred, rng)
    array = np.zeros(pred.max() + 1)
    for k, s in mapping.items():
        array[k] = s
    metric = CocoAP(area_ranges=RANGES)
    a = metric.aggregate(metric.sample_stats([gt], [pred], [mapping]))
    b = metric.aggregate(metric.sample_stats([gt], [pred], [array]))
    assert a == pytest.approx(b, nan_ok=True)
    # an uncompressed (list) RLE, column-major: 2 background, 3 foreground, 11 background
    m = InstanceMasks.from_rles([{"size": [4, 4], "counts": [2, 3, 11]}], (4, 4), [0.5])
    expected = np.zeros(16, bool)
    expected[2:5] = True
    expected = expected.reshape(4, 4, order="F")
    np.testing.assert_array_equal(m.to_masks()[0], expected)
    assert m.areas().tolist() == [3]


def test_from_labels_rles_equal_pycocotools_encode_per_object():
    # The run-based encoder gives, for every object, the RLE pycocotools encodes from that
    # object's own binary mask (2D, 3D as its (z*y, x) view, touching the last pixel, ids 2^40).
    from pycocotools import mask as mask_utils

    from cellbench.metrics.coco import InstanceMasks

    rng = np.random.default_rng(5)
    cases = [
        np.repeat(rng.integers(0, 6, (9, 7)), 2, axis=1).astype(np.uint16),
        rng.integers(0, 40, (3, 8, 6)).astype(np.int32),
        np.array([[0, 1], [1, 1]], dtype=np.uint8),
        np.array([[2**40, 0, 5], [2**40, 2**40, 5]], dtype=np.int64),
        np.zeros((4, 4), dtype=np.uint8),
    ]
    for lab in cases:
        m = InstanceMasks.from_labels(lab)
        flat = lab.reshape(-1, lab.shape[-1])
        expected_ids = [int(i) for i in np.unique(flat) if i != 0]
        assert m.ids.tolist() == expected_ids
        for rle, obj in zip(m.rles, expected_ids, strict=True):
            ref = mask_utils.encode(np.asfortranarray((flat == obj).astype(np.uint8)))
            assert rle["counts"] == ref["counts"] and list(rle["size"]) == list(ref["size"])
