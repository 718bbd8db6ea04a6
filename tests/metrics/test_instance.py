from __future__ import annotations

import numpy as np
import pytest
from stardist.matching import matching, matching_dataset

from cellbench import __version__
from cellbench.errors import ValidationError
from cellbench.metrics import MatchingScores

from ._synth import perturb, random_labels

THRESHOLDS = (0.1, 0.3, 0.5, 0.55, 0.65, 0.75, 0.8, 0.9)
# cellbench name -> StarDist field
FIELDS = {
    "precision": "precision",
    "recall": "recall",
    "f1": "f1",
    "dsb_score": "accuracy",
    "mean_matched_iou": "mean_matched_score",
    "panoptic_quality": "panoptic_quality",
}


def _check_against_stardist(gts, preds, values):
    for by_image, suffix in ((False, "pooled"), (True, "per_image")):
        ref = matching_dataset(
            [g.astype(np.int64) for g in gts],
            [p.astype(np.int64) for p in preds],
            thresh=THRESHOLDS,
            by_image=by_image,
            show_progress=False,
        )
        for t, r in zip(THRESHOLDS, ref, strict=True):
            for mine, theirs in FIELDS.items():
                # StarDist rounds IoU to float32.
                assert values[f"{mine}_{suffix}@{t:.2f}"] == pytest.approx(
                    float(getattr(r, theirs)), abs=1e-6
                ), (mine, suffix, t)
            if not by_image:
                for k in ("tp", "fp", "fn"):
                    assert values[f"{k}@{t:.2f}"] == getattr(r, k)


@pytest.mark.parametrize("shape", [(40, 44), (8, 18, 20)])
def test_matches_stardist_pooled_and_per_image(shape):
    rng = np.random.default_rng(len(shape))
    for trial in range(4):
        gts = [random_labels(shape, int(rng.integers(0, 20)), rng) for _ in range(3)]
        preds = [perturb(g, rng, sparse_ids=trial % 2 == 1) for g in gts]
        values = MatchingScores(THRESHOLDS).compute(gts, preds).values
        _check_against_stardist(gts, preds, values)


def test_per_image_values_equal_stardist_single_image():
    rng = np.random.default_rng(7)
    gt = random_labels((40, 40), 15, rng)
    pred = perturb(gt, rng)
    res = MatchingScores(THRESHOLDS).compute([gt], [pred], sample_ids=["x"])
    for t, r in zip(THRESHOLDS, matching(gt, pred, thresh=THRESHOLDS), strict=True):
        assert res.per_sample["x"][f"f1_pooled@{t:.2f}"] == pytest.approx(r.f1, abs=1e-6)
        assert res.per_sample["x"][f"tp@{t:.2f}"] == r.tp


def _square(lab, y, x, s, v):
    lab[y : y + s, x : x + s] = v


def test_hand_computed_cases():
    gt = np.zeros((20, 20), np.int32)
    _square(gt, 0, 0, 4, 1)
    _square(gt, 10, 10, 4, 2)
    pred = np.zeros_like(gt)
    _square(pred, 0, 0, 4, 7)  # exact
    pred[10:14, 10:12] = 8  # split of gt 2: two halves, IoU 0.5 each
    pred[10:14, 12:14] = 9
    _square(pred, 16, 0, 3, 5)  # false positive
    m = MatchingScores((0.5, 0.75))
    v = m.compute([gt], [pred]).values
    # t = 0.5: gt 1 exact, gt 2 matched to one half (IoU 0.5 >= 0.5): TP 2, FP 2, FN 0
    assert (v["tp@0.50"], v["fp@0.50"], v["fn@0.50"]) == (2, 2, 0)
    assert v["dsb_score_pooled@0.50"] == pytest.approx(2 / 4)
    assert v["f1_pooled@0.50"] == pytest.approx(4 / 6)
    assert v["mean_matched_iou_pooled@0.50"] == pytest.approx(0.75)
    assert v["panoptic_quality_pooled@0.50"] == pytest.approx(1.5 / 3)
    assert (v["tp@0.75"], v["fp@0.75"], v["fn@0.75"]) == (1, 3, 1)

    # merge: one prediction covering both objects
    gt2 = np.zeros((10, 10), np.int32)
    gt2[:, :5], gt2[:, 5:] = 1, 2
    merged = (gt2 > 0).astype(np.int32)
    v = m.compute([gt2], [merged]).values
    assert (v["tp@0.50"], v["fp@0.50"], v["fn@0.50"]) == (1, 0, 1)


def test_empty_cases_follow_stardist_convention():
    z = np.zeros((10, 10), np.int32)
    one = z.copy()
    _square(one, 2, 2, 3, 1)
    m = MatchingScores((0.5,))
    res = m.compute([one, z, z], [z, one, z], sample_ids=["no_pred", "no_gt", "empty"])
    v = res.values
    assert (v["tp@0.50"], v["fp@0.50"], v["fn@0.50"]) == (0, 1, 1)
    assert v["f1_pooled@0.50"] == 0.0 and v["f1_per_image@0.50"] == 0.0
    assert res.per_sample["empty"]["precision_pooled@0.50"] == 0.0
    assert any("neither ground-truth nor predicted" in n for n in res.notes)
    ref = matching_dataset([one, z, z], [z, one, z], thresh=0.5, by_image=True, show_progress=False)
    assert v["recall_per_image@0.50"] == ref.recall
    assert np.isnan(m.aggregate([])["f1_pooled@0.50"])


def test_aggregate_subsets_params_and_errors():
    rng = np.random.default_rng(9)
    gts = [random_labels((30, 30), 10, rng) for _ in range(4)]
    preds = [perturb(g, rng) for g in gts]
    m = MatchingScores()
    stats = m.sample_stats(gts, preds)
    direct = m.aggregate(m.sample_stats(gts[1:3], preds[1:3]))
    assert m.aggregate(stats[1:3]) == pytest.approx(direct)
    res = m.compute(gts, preds)
    assert res.params == {"iou_thresholds": [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95]}
    assert res.cellbench_version == __version__
    assert m.direction("fp@0.50") == "lower" and m.direction("f1_pooled@0.50") == "higher"
    with pytest.raises(ValidationError) as err:
        m.compute(
            [gts[0], gts[1]], [preds[0][:5], preds[1].astype(np.float32)], sample_ids=["a", "b"]
        )
    assert "sample 'a': prediction shape" in str(err.value)
    assert "sample 'b': prediction label image must have an integer dtype" in str(err.value)
    with pytest.raises(ValidationError, match="two decimals"):
        MatchingScores((0.5, 0.501))


def test_one_overlap_per_pair_shared_read_only_by_the_label_metrics(monkeypatch):
    """Matching scores and object errors of one pair share one overlap; nobody can change it."""
    from cellbench.metrics import instance
    from cellbench.metrics.instance import LabelPair, checked_overlap
    from cellbench.metrics.object_errors import ObjectErrors

    rng = np.random.default_rng(3)
    gt = random_labels((64, 64), 12, rng)
    pred = perturb(gt, rng)
    alone = [
        MatchingScores().measure(LabelPair(gt, pred), "a"),
        ObjectErrors().measure(LabelPair(gt, pred), "a"),
    ]
    calls = []
    real = instance.label_overlap_pairs
    monkeypatch.setattr(instance, "label_overlap_pairs", lambda g, p: calls.append(1) or real(g, p))
    pair = LabelPair(gt, pred)
    shared = [MatchingScores().measure(pair, "a"), ObjectErrors().measure(pair, "a")]
    assert len(calls) == 1
    np.testing.assert_array_equal(shared[0].tp, alone[0].tp)
    np.testing.assert_array_equal(shared[0].sum_iou, alone[0].sum_iou)
    assert shared[1].counts == alone[1].counts
    ov = checked_overlap(pair, "a", "test")
    with pytest.raises(ValueError, match="read-only"):
        ov.intersection[0] = 0
    # a malformed pair is refused every time, never cached
    bad = LabelPair(gt.astype(np.float32), pred)
    for _ in range(2):
        with pytest.raises(ValidationError, match="integer dtype"):
            checked_overlap(bad, "b", "test")
