"""Tracking metrics on hand-built sequences with exact, hand-computed error counts."""

from __future__ import annotations

import math

import numpy as np
import pytest
from tracking_cases import (
    BASE_TABLE,
    base_gt,
    base_objects,
    div_gt,
    drop,
    early_division,
    late_division,
    paint,
    replace,
    result,
)

from cellbench.errors import ValidationError
from cellbench.metrics.tracking import (
    AOGMWeights,
    BranchingCorrectness,
    CompleteTracks,
    CTCMeasures,
    DivisionMetrics,
    MOTMetrics,
    aogm_counts,
    branching_counts,
    division_counts,
    match_tracking,
)
from cellbench.tracks import SegAnnotation, TrackedSequence

ZERO = {"ns": 0, "fn": 0, "fp": 0, "ed": 0, "ea": 0, "ec": 0}


def counts(res: TrackedSequence, gt: TrackedSequence | None = None) -> dict[str, int]:
    c = aogm_counts(match_tracking(gt or base_gt(), res))
    return {k: c[k] for k in ZERO}


def tra(res: TrackedSequence) -> float:
    return CTCMeasures().compute([base_gt()], [res]).values["tra"]


# --------------------------------------------------------------------------- AOGM, one error each
def test_perfect_result_scores_one() -> None:
    res = result(base_objects(), BASE_TABLE)
    m = match_tracking(base_gt(), res)
    c = aogm_counts(m)
    assert (c["n_nodes"], c["n_edges"]) == (14, 10)
    assert {k: c[k] for k in ZERO} == ZERO
    v = CTCMeasures().compute([m]).values
    assert (v["tra"], v["det"], v["lnk"], v["aogm"], v["aogm_0"]) == (1.0, 1.0, 1.0, 0.0, 155.0)


def test_false_negative_node() -> None:
    # E is missed in its last frame: 1 FN node and its incoming track link is missing.
    table = [r if r[0] != 5 else [5, 1, 2, 0] for r in BASE_TABLE]
    res = result(drop(base_objects(), 3, "E"), table)
    assert counts(res) == {**ZERO, "fn": 1, "ea": 1}
    v = CTCMeasures().compute([base_gt()], [res]).values
    assert v["aogm"] == 11.5
    assert v["tra"] == pytest.approx(1 - 11.5 / 155)
    assert v["det"] == pytest.approx(1 - 10 / 140)
    assert v["lnk"] == pytest.approx(1 - 1.5 / 15)


def test_false_positive_node() -> None:
    res = result([*base_objects(), (0, 9, "X")], [*BASE_TABLE, [9, 0, 0, 0]])
    assert counts(res) == {**ZERO, "fp": 1}
    v = CTCMeasures().compute([base_gt()], [res]).values
    assert v["aogm"] == 1.0
    assert v["det"] == pytest.approx(1 - 1 / 140)
    assert v["lnk"] == 1.0


def test_merge_of_two_is_one_split_operation() -> None:
    # Frame 0: label 1 covers A and B. B's track now starts at frame 1.
    objs = replace(base_objects(), 0, "B", 1)
    table = [r if r[0] != 2 else [2, 1, 1, 0] for r in BASE_TABLE]
    res = result(objs, table)
    # The merged node's edges vanish with it: A0->A1 and B0->B1 are missing.
    assert counts(res) == {**ZERO, "ns": 1, "ea": 2}
    assert CTCMeasures().compute([base_gt()], [res]).values["aogm"] == 5 + 2 * 1.5


def test_merge_of_three_is_two_split_operations() -> None:
    # Frame 1: label 1 covers A, B and E. B keeps frame 0 only; its daughters keep parent 2
    # (a gap link 2@0 -> 3@2, 4@2 that the reference does not have); E restarts at frame 2.
    objs = [o for o in base_objects() if not (o[0] == 1 and o[2] in "BE")]
    objs += [(1, 1, "B"), (1, 1, "E")]
    table = [[1, 0, 3, 0], [2, 0, 0, 0], [3, 2, 3, 2], [4, 2, 3, 2], [5, 2, 3, 0], [6, 0, 0, 0]]
    res = result(objs, table)
    assert res.problems() == []
    # NS = 3 - 1; ED: 2@0->3@2, 2@0->4@2; EA: A0->A1, A1->A2, B0->B1, B1->C2, B1->D2, E1->E2.
    assert counts(res) == {**ZERO, "ns": 2, "ed": 2, "ea": 6}
    assert CTCMeasures().compute([base_gt()], [res]).values["aogm"] == 5 * 2 + 2 + 6 * 1.5


def test_redundant_edge() -> None:
    # E gets F as parent (F ends at 0, E begins at 1): a parent link the reference lacks.
    table = [r if r[0] != 5 else [5, 1, 3, 6] for r in BASE_TABLE]
    res = result(base_objects(), table)
    assert counts(res) == {**ZERO, "ed": 1}


def test_identity_swap_is_two_redundant_and_two_missing_edges() -> None:
    objs = base_objects()
    for t in (2, 3):
        objs = replace(replace(objs, t, "A", 50), t, "E", 1)
        objs = replace(objs, t, "A", 5)
    res = result(objs, BASE_TABLE)
    assert res.problems() == []
    assert counts(res) == {**ZERO, "ed": 2, "ea": 2}
    assert CTCMeasures().compute([base_gt()], [res]).values["aogm"] == 2 + 3


def test_missing_edge() -> None:
    # C loses its parent link.
    table = [r if r[0] != 3 else [3, 2, 3, 0] for r in BASE_TABLE]
    res = result(base_objects(), table)
    assert counts(res) == {**ZERO, "ea": 1}
    assert tra(res) == pytest.approx(1 - 1.5 / 155)


def test_changed_edge_semantics_single_daughter_parent_link() -> None:
    # A is cut into track 1 (frames 0-1) and track 7 (frames 2-3, parent 1): the edge A1->A2
    # becomes a parent link, a track link in the reference.
    objs = replace(replace(base_objects(), 2, "A", 7), 3, "A", 7)
    table = [[1, 0, 1, 0], *BASE_TABLE[1:], [7, 2, 3, 1]]
    res = result(objs, table)
    assert counts(res) == {**ZERO, "ec": 1}
    assert CTCMeasures().compute([base_gt()], [res]).values["lnk"] == pytest.approx(1 - 1 / 15)


def test_missed_division_continuing_parent() -> None:
    # B continues as C (track link where the reference has a parent link), D has no parent.
    objs = replace(replace(base_objects(), 2, "C", 2), 3, "C", 2)
    table = [[1, 0, 3, 0], [2, 0, 3, 0], [4, 2, 3, 0], [5, 1, 3, 0], [6, 0, 0, 0]]
    res = result(objs, table)
    assert counts(res) == {**ZERO, "ec": 1, "ea": 1}
    d = division_counts(match_tracking(base_gt(), res))
    assert d == {"tp": 0, "fp": 0, "fn": 1, "wc": 0, "n_gt": 1, "n_pred": 0}


def _lift_3d(seq: TrackedSequence) -> TrackedSequence:
    """The same sequence as 3 z slices per frame (objects in slices 0-1, slice 2 empty)."""
    lab = np.zeros((seq.n_frames, 3, *seq.spatial_shape), dtype=seq.labels.dtype)
    lab[:, 0] = lab[:, 1] = seq.labels
    return TrackedSequence(lab, seq.tracks)


def test_3d_sequences_give_the_same_exact_counts() -> None:
    fn_table = [r if r[0] != 5 else [5, 1, 2, 0] for r in BASE_TABLE]
    cases = [
        (result(drop(base_objects(), 3, "E"), fn_table), {"fn": 1, "ea": 1}),
        (
            result(
                replace(base_objects(), 0, "B", 1),
                [r if r[0] != 2 else [2, 1, 1, 0] for r in BASE_TABLE],
            ),
            {"ns": 1, "ea": 2},
        ),
        (
            result(
                replace(replace(base_objects(), 2, "A", 7), 3, "A", 7),
                [[1, 0, 1, 0], *BASE_TABLE[1:], [7, 2, 3, 1]],
            ),
            {"ec": 1},
        ),
        (result([*base_objects(), (0, 9, "X")], [*BASE_TABLE, [9, 0, 0, 0]]), {"fp": 1}),
    ]
    gt3 = _lift_3d(base_gt())
    assert gt3.is_3d and gt3.problems() == []
    for res, expected in cases:
        res3 = _lift_3d(res)
        assert counts(res3, gt3) == {**ZERO, **expected}
        assert counts(res3, gt3) == counts(res)


def test_custom_weights() -> None:
    table = [r if r[0] != 5 else [5, 1, 2, 0] for r in BASE_TABLE]
    res = result(drop(base_objects(), 3, "E"), table)
    w = AOGMWeights(ns=1, fn=2, fp=3, ed=4, ea=5, ec=6)
    v = CTCMeasures(w).compute([base_gt()], [res]).values
    assert v["aogm"] == 2 * 1 + 5 * 1
    assert v["aogm_0"] == 2 * 14 + 5 * 10
    assert v["tra"] == pytest.approx(1 - 7 / 78)
    assert CTCMeasures(w).params["weights"]["ea"] == 5
    with pytest.raises(ValidationError, match="weight fn"):
        CTCMeasures(AOGMWeights(fn=-1))


# --------------------------------------------------------------------------- SEG
def test_seg_sparse_and_strict_half_coverage() -> None:
    gt = base_gt(seg=True)  # frame 1, objects A and B annotated, E not
    lab = paint(base_objects())
    lab[1, 1:5, 4] = 0  # A keeps 12 of 16 pixels: IoU 0.75
    res = TrackedSequence(lab, np.asarray(BASE_TABLE))
    v = CTCMeasures().compute([gt], [res]).values
    assert v["n_seg_objects"] == 2
    assert v["seg"] == pytest.approx((0.75 + 1.0) / 2)
    lab[1, 1:5, 12:14] = 0  # B keeps exactly half: not matched (needs more than half)
    res = TrackedSequence(lab, np.asarray(BASE_TABLE))
    v = CTCMeasures().compute([gt], [res]).values
    assert v["seg"] == pytest.approx(0.75 / 2)
    assert v["op_ctb"] == pytest.approx((v["seg"] + v["tra"]) / 2)
    assert v["op_csb"] == pytest.approx((v["seg"] + v["det"]) / 2)


def test_seg_missing_is_nan_with_note() -> None:
    res = result(base_objects(), BASE_TABLE)
    r = CTCMeasures().compute([base_gt()], [res])
    assert math.isnan(r.values["seg"]) and math.isnan(r.values["op_ctb"])
    assert any("no SEG ground truth" in n for n in r.notes)


def test_seg_3d_slices_scored_per_slice() -> None:
    lab = np.zeros((1, 4, 10, 10), dtype=np.uint16)
    lab[0, 1:3, 2:6, 2:6] = 1
    gt_slices = (
        SegAnnotation(0, lab[0, 1].copy(), z=1),
        SegAnnotation(0, lab[0, 2].copy(), z=2),
    )
    gt = TrackedSequence(lab, [[1, 0, 0, 0]], seg=gt_slices)
    pred = lab.copy()
    pred[0, 2, 2:6, 2:4] = 0  # slice 2 keeps half the object: unmatched there
    res = TrackedSequence(pred, [[1, 0, 0, 0]])
    v = CTCMeasures().compute([gt], [res]).values
    assert v["n_seg_objects"] == 2
    assert v["seg"] == pytest.approx(0.5)


# --------------------------------------------------------------------------- ids, empty input
def test_large_uint16_ids_give_same_counts() -> None:
    objs = replace(drop(base_objects(), 3, "E"), 0, "F", 6)
    table = [r if r[0] != 5 else [5, 1, 2, 0] for r in BASE_TABLE]
    res = result(objs, table)
    big = res.relabel({1: 65535, 2: 65000, 3: 65534, 4: 1, 5: 64999, 6: 65533})
    assert big.labels.dtype == np.uint16 and int(big.labels.max()) == 65535
    assert counts(big) == counts(res) == {**ZERO, "fn": 1, "ea": 1}
    # Large ids on the ground-truth side too.
    gt_big = base_gt().relabel({1: 65535, 2: 65001, 6: 60000})
    assert counts(big, gt_big) == counts(res)


def test_int64_ids_beyond_uint16() -> None:
    gt = base_gt()
    res = result(base_objects(), BASE_TABLE).relabel({1: 2**40, 3: 70000})
    assert res.labels.dtype.itemsize >= 4
    assert counts(res, gt) == ZERO


def test_empty_frames_and_empty_result() -> None:
    gt = base_gt()
    empty = TrackedSequence(np.zeros_like(gt.labels), np.zeros((0, 4), dtype=np.int64))
    v = CTCMeasures().compute([gt], [empty]).values
    assert (v["fn"], v["ea"], v["fp"], v["tra"], v["det"], v["lnk"]) == (14, 10, 0, 0, 0, 0)
    # An empty reference: scores are undefined (NaN), counts are FP.
    w = CTCMeasures().compute([empty], [result(base_objects(), BASE_TABLE)]).values
    assert w["fp"] == 14 and math.isnan(w["tra"]) and math.isnan(w["det"])
    # Empty frames inside a sequence.
    lab = np.zeros((5, 8, 8), dtype=np.uint16)
    lab[1, 1:4, 1:4] = 1
    lab[3, 1:4, 1:4] = 2
    seq = TrackedSequence(lab, [[1, 1, 1, 0], [2, 3, 3, 1]])
    c = aogm_counts(match_tracking(seq, seq))
    assert c["n_nodes"] == 2 and c["n_edges"] == 1 and c["fn"] == c["ea"] == 0


def test_mismatched_inputs_list_all_problems() -> None:
    gt = base_gt()
    bad = TrackedSequence(np.zeros((3, 20, 21), dtype=np.uint16), [[1, 0, 5, 0]])
    with pytest.raises(ValidationError) as err:
        match_tracking(gt, bad)
    text = str(err.value)
    assert "prediction labels have shape (3, 20, 21)" in text
    assert "beyond the last frame" in text
    assert "absent from frames 0-2" in text


# --------------------------------------------------------------------------- pooling
def test_pooled_versus_per_sequence_mean() -> None:
    table = [r if r[0] != 5 else [5, 1, 2, 0] for r in BASE_TABLE]
    fn_case = result(drop(base_objects(), 3, "E"), table)
    perfect = result(base_objects(), BASE_TABLE)
    metric = CTCMeasures()
    r = metric.compute([base_gt(), base_gt()], [fn_case, perfect], sample_ids=["a", "b"])
    assert r.values["tra"] == pytest.approx(1 - 11.5 / 310)
    assert r.values["tra_mean"] == pytest.approx((1 - 11.5 / 155 + 1) / 2)
    assert r.per_sample["a"]["tra"] == pytest.approx(1 - 11.5 / 155)
    assert r.per_sample["b"]["tra"] == 1.0
    stats = metric.sample_stats([base_gt()], [fn_case])
    assert metric.aggregate(stats + stats)["tra"] == pytest.approx(1 - 23 / 310)
    assert metric.direction("aogm") == "lower" and metric.direction("tra") == "higher"
    assert r.to_dict()["values"]["seg"] is None


# --------------------------------------------------------------------------- divisions
def _div_values(res: TrackedSequence, tol: int) -> dict[str, int]:
    return division_counts(match_tracking(div_gt(), res), tol)


def test_division_found() -> None:
    d = _div_values(div_gt(), 0)
    assert d == {"tp": 1, "fp": 0, "fn": 0, "wc": 0, "n_gt": 1, "n_pred": 1}
    v = DivisionMetrics().compute([div_gt()], [div_gt()]).values
    assert (v["precision"], v["recall"], v["f1"], v["mbc"]) == (1.0, 1.0, 1.0, 1.0)


@pytest.mark.parametrize(
    ("shift", "tol", "tp"), [(1, 0, 0), (1, 1, 1), (1, 2, 1), (2, 1, 0), (2, 2, 1)]
)
def test_late_division_within_and_outside_tolerance(shift: int, tol: int, tp: int) -> None:
    d = _div_values(late_division(shift), tol)
    assert d["tp"] == tp and d["fp"] == 1 - tp and d["fn"] == 1 - tp
    assert (d["n_gt"], d["n_pred"]) == (1, 1)


def test_early_division_within_tolerance() -> None:
    res = early_division()
    assert res.problems() == []
    assert _div_values(res, 0) == {"tp": 0, "fp": 1, "fn": 1, "wc": 0, "n_gt": 1, "n_pred": 1}
    assert _div_values(res, 1)["tp"] == 1


def test_wrong_children_division() -> None:
    # B divides into C and an extra object; D is an orphan.
    objs = [*base_objects(), (2, 8, "X"), (3, 8, "X")]
    table = [[1, 0, 3, 0], [2, 0, 1, 0], [3, 2, 3, 2], [4, 2, 3, 0], [5, 1, 3, 0], [6, 0, 0, 0]]
    res = result(objs, [*table, [8, 2, 3, 2]])
    m = match_tracking(base_gt(), res)
    assert division_counts(m) == {"tp": 0, "fp": 0, "fn": 0, "wc": 1, "n_gt": 1, "n_pred": 1}
    v = DivisionMetrics().compute([m]).values
    assert (v["precision"], v["recall"], v["f1"], v["mbc"]) == (0.0, 0.0, 0.0, 0.0)
    c = aogm_counts(m)
    assert {k: c[k] for k in ZERO} == {**ZERO, "fp": 2, "ea": 1}


def test_merged_daughters_do_not_raise() -> None:
    # The daughters' first frame is one merged object (the parent's box), which then divides:
    # a late division at tolerance 1; also one NS for the merge.
    lab = div_gt().labels.copy()
    lab[3][np.isin(lab[3], [2, 3])] = 5
    res = TrackedSequence(
        lab, [[1, 0, 2, 0], [5, 3, 3, 1], [2, 4, 5, 5], [3, 4, 5, 5], [4, 0, 5, 0]]
    )
    m = match_tracking(div_gt(), res)
    assert aogm_counts(m)["ns"] == 1
    assert division_counts(m, 0) == {"tp": 0, "fp": 1, "fn": 1, "wc": 0, "n_gt": 1, "n_pred": 1}
    assert division_counts(m, 1)["tp"] == 1


def test_merged_parent_is_not_a_division_match() -> None:
    lab = div_gt().labels.copy()
    lab[2][lab[2] == 4] = 1  # parent merged with the bystander in its last frame
    res = TrackedSequence(
        lab, [[1, 0, 2, 0], [2, 3, 5, 1], [3, 3, 5, 1], [4, 0, 1, 0], [9, 3, 5, 4]]
    )
    lab[3:][lab[3:] == 4] = 9
    res = TrackedSequence(lab, res.tracks)
    assert res.problems() == []
    m = match_tracking(div_gt(), res)
    for tol in (0, 1, 2):
        assert division_counts(m, tol) == {
            "tp": 0,
            "fp": 1,
            "fn": 1,
            "wc": 0,
            "n_gt": 1,
            "n_pred": 1,
        }


def test_division_pooling_and_params() -> None:
    metric = DivisionMetrics(frame_tolerance=1)
    r = metric.compute([div_gt(), div_gt()], [late_division(1), late_division(2)])
    assert r.values["tp"] == 1 and r.values["n_gt"] == 2
    assert r.values["recall"] == 0.5 and r.values["recall_mean"] == 0.5
    assert r.params == {"frame_tolerance": 1}
    with pytest.raises(ValidationError):
        DivisionMetrics(frame_tolerance=-1)
    same = DivisionMetrics().compute([base_gt()], [base_gt().relabel({})]).values
    assert (same["n_gt"], same["tp"]) == (1, 1)
    no_div = TrackedSequence(np.zeros((2, 4, 4), np.uint16), np.zeros((0, 4)))
    v = DivisionMetrics().compute([no_div], [no_div]).values
    assert math.isnan(v["precision"]) and math.isnan(v["f1"])


def test_branching_correctness_tolerance() -> None:
    # BC(i) compares parent end frames and daughter start frames within i.
    for shift in (1, 2):
        m = match_tracking(div_gt(), late_division(shift))
        got = [branching_counts(m, i)["tp"] for i in range(4)]
        # The late parent is matched to the reference parent at the earlier end frame, and the
        # daughters at the later start frame.
        assert got == [0] * shift + [1] * (4 - shift), shift
    v = BranchingCorrectness(2).compute([div_gt()], [late_division(1)]).values
    assert (v["bc@0"], v["bc@1"], v["bc@2"]) == (0.0, 1.0, 1.0)
    assert (v["bc_fp@0"], v["bc_fn@0"]) == (1, 1)
    no_div = TrackedSequence(np.zeros((2, 4, 4), np.uint16), np.zeros((0, 4)))
    assert math.isnan(BranchingCorrectness(0).compute([no_div], [no_div]).values["bc@0"])
    with pytest.raises(ValidationError):
        BranchingCorrectness(-1)


# --------------------------------------------------------------------------- CT / TF / MOT
def _swap_result() -> TrackedSequence:
    objs = base_objects()
    for t in (2, 3):
        objs = replace(replace(objs, t, "A", 50), t, "E", 1)
        objs = replace(objs, t, "A", 5)
    return result(objs, BASE_TABLE)


def test_complete_tracks_and_track_fractions() -> None:
    v = CompleteTracks().compute([base_gt()], [_swap_result()]).values
    # B, C, D, F are complete; A (1,1,5,5) and E (5,1,1) are not.
    assert v["complete_tracks"] == 4 and v["n_gt_tracks"] == 6 and v["n_pred_tracks"] == 6
    assert v["ct"] == pytest.approx(2 * 4 / 12)
    assert v["tf"] == pytest.approx((0.5 + 1 + 1 + 1 + 2 / 3 + 1) / 6)
    # A track is complete only if the result track spans exactly the same frames.
    longer = result([*base_objects(), (1, 6, "F")], [*BASE_TABLE[:5], [6, 0, 1, 0]])
    assert CompleteTracks().compute([base_gt()], [longer]).values["complete_tracks"] == 5


def test_mot_identity_swap() -> None:
    v = MOTMetrics().compute([base_gt()], [_swap_result()]).values
    assert (v["idsw"], v["fn"], v["fp"], v["matches"]) == (2, 0, 0, 14)
    assert v["mota"] == pytest.approx(1 - 2 / 14)
    assert v["motp"] == 1.0
    # IDTP: A<->5 (2 frames) + E<->1 (2) + B, C, D (2 each) + F (1) = 11.
    assert v["idtp"] == 11 and v["idf1"] == pytest.approx(22 / 28)
    with pytest.raises(ValidationError):
        MOTMetrics(iou_threshold=0)


def test_mot_iou_threshold() -> None:
    lab = paint(base_objects())
    lab[0, 1:5, 3:5] = 0  # A at frame 0 keeps half its pixels: IoU 0.5
    res = TrackedSequence(lab, np.asarray(BASE_TABLE))
    at_half = MOTMetrics(0.5).compute([base_gt()], [res]).values
    above = MOTMetrics(0.51).compute([base_gt()], [res]).values
    assert (at_half["matches"], above["matches"]) == (14, 13)
    assert above["fn"] == 1 and above["fp"] == 1
    assert at_half["motp"] == pytest.approx((13 + 0.5) / 14)
