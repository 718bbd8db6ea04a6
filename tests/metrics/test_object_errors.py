from __future__ import annotations

import numpy as np
import pytest

from cellbench.metrics import ObjectErrors

from ._synth import perturb, random_labels


def _box(lab, sl, v):
    lab[sl] = v


def _scene(ndim: int) -> tuple[np.ndarray, np.ndarray]:
    """One of each error class, with known ids, in 2D or 3D (a thick slab)."""
    shape = (40, 60) if ndim == 2 else (3, 40, 60)
    gt = np.zeros(shape, np.int32)
    pred = np.zeros(shape, np.int32)
    s = (slice(None),) if ndim == 3 else ()
    # correct: gt 1 ~ pred 11
    gt[(*s, slice(0, 6), slice(0, 6))] = 1
    pred[(*s, slice(0, 6), slice(0, 5))] = 11
    # missed: gt 2
    gt[(*s, slice(0, 6), slice(10, 16))] = 2
    # false positive: pred 12
    pred[(*s, slice(10, 16), slice(0, 6))] = 12
    # split: gt 3 -> preds 13, 14
    gt[(*s, slice(10, 16), slice(10, 20))] = 3
    pred[(*s, slice(10, 16), slice(10, 15))] = 13
    pred[(*s, slice(10, 16), slice(15, 20))] = 14
    # merge: gts 4, 5 -> pred 15
    gt[(*s, slice(20, 26), slice(0, 5))] = 4
    gt[(*s, slice(20, 26), slice(5, 10))] = 5
    pred[(*s, slice(20, 26), slice(0, 10))] = 15
    # 2x2 catastrophe: gts 6, 7 split vertically, preds 16, 17 split horizontally
    gt[(*s, slice(30, 40), slice(30, 35))] = 6
    gt[(*s, slice(30, 40), slice(35, 40))] = 7
    pred[(*s, slice(30, 35), slice(30, 40))] = 16
    pred[(*s, slice(35, 40), slice(30, 40))] = 17
    return gt, pred


@pytest.mark.parametrize("ndim", [2, 3])
def test_hand_built_scene_has_exact_counts_and_ids(ndim):
    gt, pred = _scene(ndim)
    res = ObjectErrors().compute([gt], [pred], sample_ids=["scene"])
    v = res.values
    expected = {
        "n_true": 7,
        "n_pred": 7,
        "correct": 1,
        "missed": 1,
        "false_positive": 1,
        "split": 1,
        "merge": 1,
        "catastrophe": 1,
        "pred_in_split": 2,
        "gt_in_merge": 2,
        "gt_in_catastrophe": 2,
        "pred_in_catastrophe": 2,
    }
    for k, n in expected.items():
        assert v[k] == n, k
    assert v["recall"] == pytest.approx(1 / 7)
    ids = res.details["per_image"]["scene"]
    assert ids["correct"] == [[1, 11]]
    assert ids["missed"] == [2]
    assert ids["false_positive"] == [12]
    assert ids["split"] == [{"gt": [3], "pred": [13, 14]}]
    assert ids["merge"] == [{"gt": [4, 5], "pred": [15]}]
    assert ids["catastrophe"] == [{"gt": [6, 7], "pred": [16, 17]}]


def test_overlapping_but_unmatched_pair_is_missed_and_false_positive():
    gt = np.zeros((10, 10), np.int32)
    gt[0:4, 0:4] = 1
    pred = np.zeros_like(gt)
    pred[2:6, 0:4] = 1  # IoU 8/24 = 1/3: below 1 - cutoff1 = 0.6, above cutoff2
    v = ObjectErrors().compute([gt], [pred]).values
    assert (v["correct"], v["missed"], v["false_positive"]) == (0, 1, 1)
    # the same pair is correct with a looser cutoff1 (IoU 1/3 > 1 - 0.7)
    assert ObjectErrors(cutoff1=0.7).compute([gt], [pred]).values["correct"] == 1


def test_small_object_inside_large_one_links_as_merge():
    # DeepCell's boost: a tiny gt object fully inside the prediction (IoU < 0.1) still links.
    # gt 1: IoU 100/180 with the prediction (not a match, >= cutoff2); gt 2: 4 px, IoU 4/180
    # but fully inside the prediction. DeepCell-toolbox 0.8.6 gives merge=1 here (checked).
    gt = np.zeros((20, 20), np.int32)
    gt[0:10, 0:10] = 1
    gt[0:2, 14:16] = 2
    pred = np.zeros_like(gt)
    pred[0:10, 0:18] = 1
    v = ObjectErrors().compute([gt], [pred]).values
    assert (v["merge"], v["gt_in_merge"], v["correct"], v["missed"]) == (1, 2, 0, 0)
    # without gt 2 the same prediction is one missed object and one false positive
    gt[gt == 2] = 0
    v = ObjectErrors().compute([gt], [pred]).values
    assert (v["merge"], v["missed"], v["false_positive"]) == (0, 1, 1)


def test_empty_images():
    z = np.zeros((8, 8), np.int32)
    one = z.copy()
    one[1:4, 1:4] = 1
    m = ObjectErrors()
    v = m.compute([one, z, z], [z, one, z]).values
    assert (v["missed"], v["false_positive"], v["correct"]) == (1, 1, 0)
    assert np.isnan(m.compute([z], [z]).values["recall"])


def test_every_object_lands_in_exactly_one_class():
    rng = np.random.default_rng(3)
    m = ObjectErrors()
    for shape in ((48, 48), (8, 24, 24)):
        for _ in range(6):
            gt = random_labels(shape, int(rng.integers(0, 25)), rng)
            pred = perturb(gt, rng, p_split=0.25, p_merge=0.25, n_false=3, sparse_ids=True)
            st = m.sample_stats([gt], [pred])[0]
            ids = st.ids
            g_all = [p[0] for p in ids["correct"]] + ids["missed"]
            p_all = [p[1] for p in ids["correct"]] + ids["false_positive"]
            for k in ("split", "merge", "catastrophe"):
                g_all += [i for e in ids[k] for i in e["gt"]]
                p_all += [i for e in ids[k] for i in e["pred"]]
            g_true = np.unique(gt)[1:].tolist()
            p_true = np.unique(pred)[1:].tolist()
            assert sorted(g_all) == g_true
            assert sorted(p_all) == p_true
            c = st.counts
            assert (
                c["n_true"]
                == c["correct"]
                + c["missed"]
                + c["split"]
                + c["gt_in_merge"]
                + c["gt_in_catastrophe"]
            )


def test_pooled_is_sum_and_params():
    gt, pred = _scene(2)
    m = ObjectErrors(cutoff1=0.4, cutoff2=0.1)
    stats = m.sample_stats([gt, gt], [pred, pred])
    assert m.aggregate(stats)["split"] == 2
    assert m.params == {"cutoff1": 0.4, "cutoff2": 0.1}
    assert m.direction("missed") == "lower" and m.direction("recall") == "higher"


def _literal_deepcell_costs(iou: np.ndarray, cutoff1: float) -> np.ndarray:
    """DeepCell's cost matrix exactly as ``ObjectAccuracy`` builds it (identity matrices)."""
    n_t, n_p = iou.shape
    n = n_t + n_p
    cm = np.ones((n, n))
    cm[:n_t, :n_p] = 1 - iou
    cm[-n_p:, -n_t:] = 1 - iou.T
    cm[-n_p:, :n_p] = cutoff1 * np.eye(n_p) + np.ones((n_p, n_p)) - np.eye(n_p)
    cm[:n_t, -n_t:] = cutoff1 * np.eye(n_t) + np.ones((n_t, n_t)) - np.eye(n_t)
    return cm


@pytest.mark.parametrize("cutoff1", [0.4, 0.3, 0.1, 0.7])
def test_cost_matrix_equals_deepcells_expression(cutoff1):
    """The assignment's costs equal DeepCell's identity-matrix expression, bit for bit."""
    from cellbench.metrics.object_errors import _deepcell_costs

    rng = np.random.default_rng(2)
    for n_t, n_p in ((1, 1), (1, 3), (4, 2), (5, 5)):
        iou = rng.random((n_t, n_p)) * (rng.random((n_t, n_p)) < 0.6)
        got = _deepcell_costs(iou, cutoff1)
        assert got.tobytes() == _literal_deepcell_costs(iou, cutoff1).tobytes()


def test_per_component_assignment_equals_one_whole_image_assignment():
    """DeepCell solves one assignment over every object; cellbench one per component: same pairs.

    The reference is DeepCell's construction literally (its small-object IoU boost, its cost
    matrix built from identities, one ``linear_sum_assignment`` over the whole image).
    """
    from scipy.optimize import linear_sum_assignment

    from cellbench.metrics.matching import label_overlap_pairs

    rng = np.random.default_rng(12)
    m = ObjectErrors()
    c1, c2 = m.cutoff1, m.cutoff2
    n_hard = 0
    for shape in ((64, 64), (6, 32, 32)):
        for _ in range(8):
            gt = random_labels(shape, int(rng.integers(5, 40)), rng)
            pred = perturb(gt, rng, p_split=0.3, p_merge=0.3, n_false=4, sparse_ids=True)
            ov = label_overlap_pairs(gt, pred)
            n_t, n_p = ov.gt_ids.size, ov.pred_ids.size
            iou = np.zeros((n_t, n_p))
            inter = np.zeros((n_t, n_p))
            iou[ov.gt_index, ov.pred_index] = ov.iou()
            inter[ov.gt_index, ov.pred_index] = ov.intersection
            frac = np.maximum(inter / ov.gt_area[:, None], inter / ov.pred_area[None, :])
            iou = np.where((iou < 1 - c1) & (iou <= c1) & (frac > 0.5), c2, iou)
            r, c = linear_sum_assignment(_literal_deepcell_costs(iou, c1))
            keep = (r < n_t) & (c < n_p)
            expected = sorted(
                [int(ov.gt_ids[a]), int(ov.pred_ids[b])]
                for a, b in zip(r[keep], c[keep], strict=True)
            )
            st = m.sample_stats([gt], [pred])[0]
            assert sorted(st.ids["correct"]) == expected
            n_hard += sum(
                len(e["gt"]) + len(e["pred"]) > 2
                for k in ("split", "merge", "catastrophe")
                for e in st.ids[k]
            )
    assert n_hard > 10  # the images hold many multi-object components
