from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from cellbench.metrics.matching import (
    NegativeIdsError,
    bipartite_components,
    coco_greedy_match,
    label_overlap,
    label_overlap_pairs,
    match_hungarian,
    present_ids,
)

from ._synth import perturb, random_labels


def _brute_table(gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    table = np.zeros((gt.max() + 1, pred.max() + 1), dtype=np.int64)
    np.add.at(table, (gt.ravel(), pred.ravel()), 1)
    return table


@pytest.mark.parametrize("shape", [(37, 41), (6, 15, 17)])
def test_label_overlap_matches_brute_force(shape):
    rng = np.random.default_rng(0)
    for _ in range(5):
        gt = random_labels(shape, 12, rng)
        pred = perturb(gt, rng)
        ov = label_overlap(gt, pred)
        table = _brute_table(gt, pred)
        assert ov.gt_ids.tolist() == [i for i in range(1, table.shape[0]) if table[i].sum()]
        assert ov.pred_ids.tolist() == [j for j in range(1, table.shape[1]) if table[:, j].sum()]
        np.testing.assert_array_equal(ov.intersection, table[np.ix_(ov.gt_ids, ov.pred_ids)])
        np.testing.assert_array_equal(ov.gt_area, table.sum(1)[ov.gt_ids])
        np.testing.assert_array_equal(ov.pred_area, table.sum(0)[ov.pred_ids])
        inter = table[np.ix_(ov.gt_ids, ov.pred_ids)]
        union = table.sum(1)[ov.gt_ids][:, None] + table.sum(0)[ov.pred_ids][None] - inter
        np.testing.assert_array_equal(ov.iou(), inter / union)
        sp = label_overlap_pairs(gt, pred)
        np.testing.assert_array_equal(sp.intersection, inter[sp.gt_index, sp.pred_index])
        assert sp.intersection.size == np.count_nonzero(inter)


def test_label_overlap_sparse_huge_ids_and_dtypes():
    gt = np.zeros((8, 8), dtype=np.uint32)
    gt[:4, :4] = 4_000_000_000
    gt[4:, 4:] = 7
    pred = np.zeros((8, 8), dtype=np.int64)
    pred[:4, :2] = 2**40
    pred[4:, 4:] = 3
    ov = label_overlap(gt, pred)
    assert ov.gt_ids.tolist() == [7, 4_000_000_000]
    assert ov.pred_ids.tolist() == [3, 2**40]
    np.testing.assert_array_equal(ov.intersection, [[16, 0], [0, 8]])
    np.testing.assert_allclose(ov.iou(), [[1.0, 0.0], [0.0, 0.5]])


@pytest.mark.parametrize(
    ("gt_dtype", "pred_dtype"),
    [(np.uint16, np.uint64), (np.uint8, np.int16), (np.int64, np.uint32), (bool, np.uint8)],
)
def test_label_overlap_mixed_dtypes(gt_dtype, pred_dtype):
    rng = np.random.default_rng(4)
    gt = random_labels((20, 24), 1 if gt_dtype is bool else 9, rng)
    pred = perturb(gt, rng)
    ref = label_overlap(gt.astype(np.int64), pred.astype(np.int64))
    ov = label_overlap(gt.astype(gt_dtype), pred.astype(pred_dtype))
    np.testing.assert_array_equal(ov.intersection, ref.intersection)
    np.testing.assert_array_equal(ov.gt_ids, ref.gt_ids)
    np.testing.assert_array_equal(ov.pred_area, ref.pred_area)


def test_label_overlap_empty_and_errors():
    z = np.zeros((5, 5), np.uint8)
    ov = label_overlap(z, z)
    assert ov.intersection.shape == (0, 0)
    with pytest.raises(ValueError, match="differ in shape"):
        label_overlap(z, np.zeros((5, 6), np.uint8))
    with pytest.raises(TypeError, match="integer dtype"):
        label_overlap(z.astype(float), z)
    with pytest.raises(ValueError, match="negative"):
        label_overlap(z.astype(np.int8) - 1, z)


def _stardist_assignment(iou: np.ndarray, thr: float) -> int:
    """StarDist's cost on the full matrix (reference for the number of matches)."""
    n = min(iou.shape)
    if n == 0:
        return 0
    costs = -(iou >= thr).astype(float) - iou / (2 * n)
    r, c = linear_sum_assignment(costs)
    return int((iou[r, c] >= thr).sum())


def test_match_hungarian_counts_equal_full_assignment():
    rng = np.random.default_rng(1)
    for _ in range(200):
        iou = rng.random((rng.integers(0, 7), rng.integers(0, 7))) * rng.random()
        iou[iou < 0.2] = 0
        for thr in (0.1, 0.3, 0.5):
            r, c = match_hungarian(iou, thr)
            assert len(set(r.tolist())) == r.size and len(set(c.tolist())) == c.size
            assert (iou[r, c] >= thr).all()
            assert r.size == _stardist_assignment(iou, thr)


def test_match_hungarian_prefers_count_then_iou():
    # Greedy would take the 0.9 pair and leave one match; the optimum has two matches.
    iou = np.array([[0.9, 0.6], [0.6, 0.0]])
    r, c = match_hungarian(iou, 0.5)
    assert sorted(zip(r.tolist(), c.tolist(), strict=True)) == [(0, 1), (1, 0)]


def _coco_loop(iou: np.ndarray, thr: float, ignore: np.ndarray) -> np.ndarray:
    """A literal transcription of pycocotools' evaluateImg inner loops (dets in score order)."""
    gtind = np.argsort(ignore, kind="mergesort")
    ious = iou[:, gtind]
    gt_ig = ignore[gtind]
    gtm = np.zeros(len(gtind))
    out = np.full(iou.shape[0], -1)
    for d in range(iou.shape[0]):
        best = min([thr, 1 - 1e-10])
        m = -1
        for g in range(len(gtind)):
            if gtm[g] > 0:
                continue
            if m > -1 and gt_ig[m] == 0 and gt_ig[g] == 1:
                break
            if ious[d, g] < best:
                continue
            best = ious[d, g]
            m = g
        if m == -1:
            continue
        gtm[m] = 1
        out[d] = gtind[m]
    return out


def test_coco_greedy_match_equals_literal_loop():
    rng = np.random.default_rng(2)
    thresholds = [0.1, 0.3, 0.5, 0.75, 1.0]
    for _ in range(150):
        n_d, n_g = int(rng.integers(0, 8)), int(rng.integers(0, 8))
        # quantised IoUs create exact ties, which decide the tie rule
        iou = np.round(rng.random((n_d, n_g)) * 4) / 4 * (rng.random((n_d, n_g)) < 0.6)
        ignore = rng.random((3, n_g)) < 0.3
        d, g = np.nonzero(iou > 0)
        got = coco_greedy_match(d, g, iou[d, g], n_d, n_g, thresholds, ignore)
        for a in range(3):
            for t, thr in enumerate(thresholds):
                np.testing.assert_array_equal(got[a, t], _coco_loop(iou, thr, ignore[a]))


def test_coco_greedy_match_many_objects_few_shared_equals_literal_loop():
    # Label images at LIVECell density: nearly every candidate pair is one-to-one (matched
    # without the loop), a few share a detection or a ground truth (IoU exactly 0.5 twice,
    # or low thresholds), with ignore flags: the mix must equal pycocotools' loop.
    rng = np.random.default_rng(5)
    thresholds = np.linspace(0.5, 0.95, 10)
    for _ in range(20):
        n = 90
        iou = np.zeros((n, n))
        iou[np.arange(n), rng.permutation(n)] = np.round(rng.uniform(0.5, 1.0, n) * 20) / 20
        for _ in range(int(rng.integers(1, 10))):  # shared candidates, often tied at 0.5
            iou[rng.integers(n), rng.integers(n)] = rng.choice([0.5, 0.55, 0.75])
        ignore = rng.random((4, n)) < 0.2
        d, g = np.nonzero(iou > 0)
        got = coco_greedy_match(d, g, iou[d, g], n, n, thresholds, ignore)
        for a in range(4):
            for t, thr in enumerate(thresholds):
                np.testing.assert_array_equal(got[a, t], _coco_loop(iou, thr, ignore[a]))


def test_label_overlap_negative_ids_on_the_run_path_name_each_image():
    big = np.zeros((1030, 1030), np.int32)  # over 2**20 pixels: checked on the runs
    big[10:20, 10:20] = 3
    neg = big.copy()
    neg[-1, -1] = -1  # one pixel, in the last run
    for gt, pred, roles in (
        (neg, big, ("ground truth",)),
        (big, neg, ("prediction",)),
        (neg, neg, ("ground truth", "prediction")),
    ):
        with pytest.raises(NegativeIdsError, match="negative ids") as err:
            label_overlap_pairs(gt, pred)
        assert err.value.roles == roles
    assert label_overlap_pairs(big, big).intersection.tolist() == [100]


def test_bipartite_components():
    la, lb = bipartite_components(3, 3, np.array([0, 0, 2]), np.array([0, 1, 2]))
    assert la[0] == lb[0] == lb[1]
    assert la[2] == lb[2]
    assert len({la[0], la[1], la[2]}) == 3


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.int64, np.uint32])
def test_present_ids_equals_unique_nonzero(dtype):
    rng = np.random.default_rng(5)
    lab = random_labels((20, 24), 9, rng).astype(dtype)
    ref = np.unique(lab)
    np.testing.assert_array_equal(present_ids(lab), ref[ref > 0].astype(np.int64))
    assert present_ids(lab).dtype == np.int64
    sparse = lab.astype(np.int64) * 10**9
    ref = np.unique(sparse)
    np.testing.assert_array_equal(present_ids(sparse), ref[ref > 0])
    assert present_ids(np.zeros((3, 4), dtype)).tolist() == []


def test_bipartite_components_equal_scipy_connected_components():
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    from cellbench.metrics.matching import bipartite_components

    rng = np.random.default_rng(0)
    for _ in range(200):
        na, nb = (int(x) for x in rng.integers(1, 40, 2))
        ne = int(rng.integers(0, 60))
        a, b = rng.integers(0, na, ne), rng.integers(0, nb, ne)
        la, lb = bipartite_components(na, nb, a, b)
        graph = coo_matrix((np.ones(ne, np.int8), (a, b + na)), shape=(na + nb, na + nb))
        _, expected = connected_components(graph, directed=False)
        assert np.array_equal(np.concatenate([la, lb]), expected)


def test_small_hungarian_equals_linear_sum_assignment():
    from scipy.optimize import linear_sum_assignment

    from cellbench.metrics.tracking.mot import _hungarian_max, _max_weight_matching

    rng = np.random.default_rng(1)
    for _ in range(300):
        n, m = (int(x) for x in rng.integers(1, 12, 2))
        w = rng.integers(0, 6, (n, m)) * (rng.random((n, m)) < 0.5)
        r, c = linear_sum_assignment(w, maximize=True)
        assert _hungarian_max(w.astype(float)) == w[r, c].sum()
    # A component larger than the numpy solver's limit goes to scipy: same optimum.
    w = rng.integers(1, 9, (150, 140))
    r, c = linear_sum_assignment(w, maximize=True)
    rows, cols = np.nonzero(w)
    assert _max_weight_matching(rows, cols, w[rows, cols]) == w[r, c].sum()


@pytest.mark.parametrize(
    "kind", ["pixel_table", "dense_table", "slot_table", "sorted_runs", "large_ids", "noise"]
)
def test_label_overlap_pairs_every_path_equals_brute_force(kind):
    from collections import Counter

    from cellbench.metrics import matching
    from cellbench.metrics.matching import label_overlap_pairs

    rng = np.random.default_rng(3)
    if kind == "noise":  # no runs to merge: every pixel its own run
        g = rng.integers(0, 40, (30, 30))
        p = rng.integers(0, 40, (30, 30))
    else:  # blocky label images (piecewise constant, like cells)
        # ids below n: pair tables of n x n cells (slot table up to 2**24 cells, sort beyond)
        n = {
            "pixel_table": 20,
            "dense_table": 100,
            "slot_table": 600,
            "sorted_runs": 5000,
            "large_ids": 600,
        }[kind]
        g = np.repeat(np.repeat(rng.integers(0, n, (24, 24)), 3, 0), 3, 1)
        p = np.roll(np.repeat(np.repeat(rng.integers(0, n, (24, 24)), 3, 0), 3, 1), 1, 0)
        if kind == "large_ids":
            g = g.astype(np.int64) * (2**40 + 7)
    if kind == "sorted_runs":
        assert (int(g.max()) + 1) * (int(p.max()) + 1) > matching._SLOT_TABLE_MAX
    ov = label_overlap_pairs(g, p)
    # pairs in (gt, pred) order on every path: MatchingScores sums IoUs in np.nonzero's order
    code = ov.gt_index * (ov.pred_ids.size + 1) + ov.pred_index
    assert np.all(np.diff(code) > 0)
    pairs = Counter((int(a), int(b)) for a, b in zip(g.ravel(), p.ravel(), strict=True) if a and b)
    got = {
        (int(ov.gt_ids[i]), int(ov.pred_ids[j])): int(c)
        for i, j, c in zip(ov.gt_index, ov.pred_index, ov.intersection, strict=True)
    }
    assert got == dict(pairs)
    assert dict(zip(ov.gt_ids.tolist(), ov.gt_area.tolist(), strict=True)) == {
        int(k): int(v) for k, v in Counter(g[g > 0].tolist()).items()
    }
    assert dict(zip(ov.pred_ids.tolist(), ov.pred_area.tolist(), strict=True)) == {
        int(k): int(v) for k, v in Counter(p[p > 0].tolist()).items()
    }


def test_sum_by_code_equals_unique_sums():
    """The slot-table sum: distinct codes ascending, weights summed, duplicates anywhere."""
    from cellbench.metrics.matching import _sum_by_code

    rng = np.random.default_rng(8)
    for n_cells, n in ((1, 5), (10, 1), (1000, 5000), (1 << 20, 3000)):
        codes = rng.integers(0, n_cells, n)
        weights = rng.integers(1, 1 << 20, n)
        distinct, sums = _sum_by_code(codes, weights, n_cells)
        expected, inverse = np.unique(codes, return_inverse=True)
        assert np.array_equal(distinct, expected)
        assert sums.dtype == np.int64
        assert np.array_equal(sums, np.bincount(inverse, weights=weights).astype(np.int64))
