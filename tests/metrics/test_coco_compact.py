"""CocoImageStats' packed records give the same pooled AP, to the last bit, as plain arrays."""

from __future__ import annotations

import numpy as np
import pytest

from cellbench.metrics import CocoAP, coco
from cellbench.metrics.coco import (
    COCO_RECALL_THRESHOLDS,
    FALSE_POSITIVE,
    TRUE_POSITIVE,
    CocoImageStats,
    recall_counts,
)


def _plain_accumulate(scores, outcomes, n_gts):
    """The accumulation before packing: (A, T, N) uint8 outcomes pooled in one array."""
    n_a, n_t = outcomes[0].shape[:2]
    n_r = COCO_RECALL_THRESHOLDS.size
    precision = np.full((n_a, n_t, n_r), -1.0)
    recall = np.full((n_a, n_t), -1.0)
    scores = np.concatenate(scores)
    outcome = np.concatenate(outcomes, axis=2)
    npig = np.sum(n_gts, axis=0)
    order = np.argsort(-scores, kind="mergesort")
    nd = scores.size
    for a in range(n_a):
        if npig[a] == 0:
            continue
        if nd == 0:
            precision[a] = 0.0
            recall[a] = 0.0
            continue
        for t in range(n_t):
            row = outcome[a, t, order]
            tp = np.cumsum(row == TRUE_POSITIVE, dtype=np.int64)
            fp = np.cumsum(row == FALSE_POSITIVE, dtype=np.int64)
            rc = tp / npig[a]
            pr = tp / (fp + tp + np.spacing(1))
            pr = np.maximum.accumulate(pr[::-1])[::-1]
            recall[a, t] = rc[-1]
            inds = np.searchsorted(rc, COCO_RECALL_THRESHOLDS, side="left")
            valid = inds < nd
            q = np.zeros(n_r)
            q[valid] = pr[inds[valid]]
            precision[a, t] = q
    return precision, recall


def _random_image(rng, n_a, n_t, ties):
    n = int(rng.integers(0, 40))
    if ties == "none":
        scores = rng.random(n)
    elif ties == "all":
        scores = np.ones(n)  # an image without scores
    else:
        scores = rng.integers(0, 4, n) / 4.0  # many ties, within and across images
    scores = -np.sort(-scores, kind="stable")
    outcome = rng.integers(0, 3, (n_a, n_t, n)).astype(np.uint8)
    n_gt = rng.integers(0, 30, n_a)
    return scores, outcome, n_gt


@pytest.mark.parametrize("seed", range(12))
def test_packed_accumulation_is_bit_identical(seed, monkeypatch):
    rng = np.random.default_rng(seed)
    metric = CocoAP(max_dets=10_000)
    n_a, n_t = len(metric.area_names), len(metric.iou_thresholds)
    ties = ("none", "all", "some")[seed % 3]
    images = [_random_image(rng, n_a, n_t, ties) for _ in range(int(rng.integers(1, 9)))]
    stats = [
        CocoImageStats.from_outcome(s, o, g, int(g[0]), s.size, 10_000, ties != "all", 2)
        for s, o, g in images
    ]
    for st, (s, o, _) in zip(stats, images, strict=True):
        assert st.scores.tobytes() == s.tobytes()
        np.testing.assert_array_equal(st.outcome, o)
    precision, recall = _plain_accumulate(*zip(*images, strict=True))
    n_det = sum(s.size for s, _, _ in images)
    # thresholds unpacked all at once, one at a time, and in blocks of 3, 3, 3 and 1
    for cells in (coco._ACCUMULATE_CELLS, 1, 3 * max(n_det, 1)):
        monkeypatch.setattr(coco, "_ACCUMULATE_CELLS", cells)
        arrays = metric.coco_arrays(stats)
        # the same float64 values, bit for bit
        expected = precision.transpose(1, 2, 0)[:, :, None, :]
        assert arrays["precision"].tobytes() == expected.tobytes()
        assert arrays["recall"].tobytes() == recall.T[:, None, :].tobytes()


def test_packed_record_size_and_tied_scores_stored_once():
    rng = np.random.default_rng(0)
    n = 1000
    outcome = rng.integers(0, 3, (4, 10, n)).astype(np.uint8)
    unscored = CocoImageStats.from_outcome(
        np.ones(n), outcome, np.array([5, 1, 2, 2]), 5, n, None, False, 2
    )
    assert unscored.score_values.tolist() == [1.0] and unscored.score_counts.tolist() == [n]
    assert unscored.nbytes() == 8 + 8 + 2 * 4 * 10 * 125 + 4 * 8  # 10 bytes per detection
    scored = CocoImageStats.from_outcome(
        -np.sort(-rng.random(n)), outcome, np.array([5, 1, 2, 2]), 5, n, None, True, 2
    )
    assert scored.score_counts is None and scored.nbytes() == n * 8 + 2 * 4 * 10 * 125 + 4 * 8
    # -0.0 and 0.0 sort together but are kept apart, so scores come back bit for bit
    signed = CocoImageStats.from_outcome(
        np.array([0.0, -0.0, -0.0, -0.0, 0.0]), outcome[:, :, :5], np.ones(4), 1, 5, None, True, 2
    )
    assert signed.scores.tobytes() == np.array([0.0, -0.0, -0.0, -0.0, 0.0]).tobytes()
    cut = unscored.cut(13)
    assert cut.n_det == 13 and cut.scores.tolist() == [1.0] * 13
    np.testing.assert_array_equal(cut.outcome, outcome[:, :, :13])


def test_recall_counts_equal_searchsorted_on_recalls():
    for n_gt in [*range(1, 1200), 99_991, 1_683_234]:
        recalls = np.arange(n_gt + 1) / n_gt
        expected = np.searchsorted(recalls, COCO_RECALL_THRESHOLDS, side="left")
        np.testing.assert_array_equal(recall_counts(n_gt), expected)
