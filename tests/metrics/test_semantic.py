from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score, jaccard_score

from cellbench.errors import ValidationError
from cellbench.metrics import SemanticSegmentationMetrics

NAMES = ["background", "nucleus", "cytoplasm", "membrane"]


def _images(seed: int, shape: tuple[int, ...], n: int = 4):
    rng = np.random.default_rng(seed)
    gts, preds = [], []
    for _ in range(n):
        gt = rng.integers(0, 4, shape)
        noise = rng.random(shape) < 0.3
        pred = np.where(noise, rng.integers(0, 4, shape), gt)
        gts.append(gt.astype(np.uint8))
        preds.append(pred.astype(np.int32))
    return gts, preds


@pytest.mark.parametrize("shape", [(24, 30), (5, 12, 14)])
def test_pooled_matches_scikit_learn_on_concatenated_pixels(shape):
    gts, preds = _images(0, shape)
    gts[1][gts[1] == 3] = 2  # membrane absent from one image's ground truth
    m = SemanticSegmentationMetrics(NAMES)
    v = m.compute(gts, preds).values
    t = np.concatenate([g.ravel() for g in gts])
    p = np.concatenate([q.ravel() for q in preds])
    jac = jaccard_score(t, p, average=None, labels=range(4))
    dice = f1_score(t, p, average=None, labels=range(4))
    for i, c in enumerate(NAMES):
        assert v[f"jaccard_pooled/{c}"] == pytest.approx(jac[i])
        assert v[f"dice_pooled/{c}"] == pytest.approx(dice[i])
    assert v["mean_jaccard_pooled"] == pytest.approx(jac.mean())
    assert v["pixel_accuracy_pooled"] == pytest.approx((t == p).mean())
    # per image: each image's scikit-learn scores, averaged
    per = np.array(
        [
            jaccard_score(g.ravel(), q.ravel(), average=None, labels=range(4))
            for g, q in zip(gts, preds, strict=True)
        ]
    )
    for i, c in enumerate(NAMES):
        assert v[f"jaccard_per_image/{c}"] == pytest.approx(per[:, i].mean())
    assert v["mean_jaccard_per_image"] == pytest.approx(per.mean(axis=1).mean())


def test_hand_cases_empty_gt_empty_prediction_absent_class():
    gt1 = np.zeros((4, 4), np.uint8)
    gt1[:2] = 1  # 8 px of class 1
    pred1 = np.zeros_like(gt1)
    pred1[:1] = 1  # 4 px predicted, all correct
    gt2 = np.zeros((4, 4), np.uint8)  # class 1 absent from GT ...
    pred2 = np.zeros_like(gt2)
    pred2[0, 0] = 1  # ... but predicted once: Jaccard 0 for class 1 in image 2
    gt3 = np.zeros((4, 4), np.uint8)
    pred3 = np.zeros((4, 4), np.uint8)  # class 1 absent from both: skipped in image 3
    m = SemanticSegmentationMetrics(["bg", "fg", "unused"])
    res = m.compute([gt1, gt2, gt3], [pred1, pred2, pred3])
    v = res.values
    assert v["jaccard_pooled/fg"] == pytest.approx(4 / 9)
    assert v["dice_pooled/fg"] == pytest.approx(8 / 13)
    assert v["jaccard_per_image/fg"] == pytest.approx((0.5 + 0.0) / 2)
    assert v["dice_per_image/fg"] == pytest.approx((2 * 4 / 12 + 0) / 2)
    assert v["jaccard_pooled/bg"] == pytest.approx(39 / 44)
    assert np.isnan(v["jaccard_pooled/unused"]) and np.isnan(v["jaccard_per_image/unused"])
    assert v["mean_jaccard_pooled"] == pytest.approx((4 / 9 + 39 / 44) / 2)
    img_means = [(0.5 + 8 / 12) / 2, (0 + 15 / 16) / 2, 1.0]
    assert v["mean_jaccard_per_image"] == pytest.approx(np.mean(img_means))
    assert res.per_sample["2"]["mean_jaccard_per_image"] == 1.0
    assert any("absent from all" in n and "unused" in n for n in res.notes)
    assert v["pixel_accuracy_pooled"] == pytest.approx((12 + 15 + 16) / 48)


def test_ignore_index_and_mean_exclude():
    gt = np.array([[0, 1, 255], [1, 1, 255]], np.uint8)
    pred = np.array([[0, 1, 0], [0, 1, 1]], np.uint8)
    m = SemanticSegmentationMetrics(["bg", "fg"], ignore_index=255, mean_exclude=["bg"])
    res = m.compute([gt], [pred])
    v = res.values
    assert v["jaccard_pooled/fg"] == pytest.approx(2 / 3)
    assert v["jaccard_pooled/bg"] == pytest.approx(1 / 2)
    assert v["mean_jaccard_pooled"] == pytest.approx(2 / 3)
    assert v["pixel_accuracy_pooled"] == pytest.approx(3 / 4)
    assert res.details["n_ignored_pixels"] == 2
    assert res.params == {"class_names": ["bg", "fg"], "ignore_index": 255, "mean_exclude": ["bg"]}


def test_subsets_and_validation():
    gts, preds = _images(3, (10, 10), n=5)
    m = SemanticSegmentationMetrics(NAMES)
    stats = m.sample_stats(gts, preds)
    assert m.aggregate(stats[1:4]) == pytest.approx(
        m.aggregate(m.sample_stats(gts[1:4], preds[1:4]))
    )
    bad_pred = preds[0].copy()
    bad_pred[0, 0] = 9
    with pytest.raises(ValidationError) as err:
        m.sample_stats(
            [gts[0], gts[1], gts[2]],
            [bad_pred, preds[1][:3], preds[2].astype(float)],
            sample_ids=["a", "b", "c"],
        )
    msg = str(err.value)
    assert "sample 'a': prediction has values outside [0, 4)" in msg
    assert "sample 'b': prediction shape (3, 10) differs" in msg
    assert "sample 'c': prediction must be an integer numpy array" in msg
