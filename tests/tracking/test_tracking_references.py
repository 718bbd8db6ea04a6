"""Cross-checks against py-ctcmetrics 1.3.3, traccuracy 0.3.0 and 0.4.1, and py-motmetrics 1.4.0.

Sequences are generated (moving cells with divisions, appearances and disappearances), perturbed
into results (missed, extra, merged and split objects, identity swaps, broken and re-linked
tracks, missed divisions), written as CTC folders and scored by each tool. Where a reference
tool deviates from the CTC definition or has a bug, a dedicated test shows the difference.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from tracking_cases import (
    BASE_TABLE,
    base_gt,
    base_objects,
    div_gt,
    early_division,
    late_division,
    paint,
    replace,
    result,
)
from tracking_synth import drop_mother_last_detection, perturb, simulate

from cellbench.metrics.tracking import (
    BranchingCorrectness,
    CellCycleAccuracy,
    CompleteTracks,
    CTCMeasures,
    CTCMOTMetrics,
    DivisionMetrics,
    HOTAMetrics,
    MOTMetrics,
    TrackingMatch,
    match_tracking,
)
from cellbench.tasks.tracking.ctc import (
    read_ctc_ground_truth,
    read_ctc_result,
    write_ctc_ground_truth,
    write_ctc_result,
)
from cellbench.tracks import SegAnnotation, TrackedSequence

os.environ.setdefault("NO_JIT_WARNING", "1")
pytestmark = pytest.mark.filterwarnings("ignore")

ctc_eval = pytest.importorskip("ctc_metrics.scripts.evaluate")
tr = pytest.importorskip("traccuracy")
from traccuracy.loaders import load_ctc_data  # noqa: E402
from traccuracy.matchers import CTCMatcher  # noqa: E402
from traccuracy.metrics import CTCMetrics  # noqa: E402
from traccuracy.metrics import DivisionMetrics as TDivisionMetrics  # noqa: E402

# (seed, spatial shape, merges allowed)
CASES = [
    (0, (48, 48), True),
    (1, (48, 48), False),
    (2, (48, 48), True),
    (3, (48, 48), False),
    (4, (8, 24, 24), True),
    (5, (8, 24, 24), False),
]


def _write_case(root: Path, seed: int, shape: tuple[int, ...], merges: bool) -> Path:
    radius = 4.0 if len(shape) == 2 else 3.0
    gt = simulate(n_frames=10, shape=shape, n_cells=8, n_divisions=3, radius=radius, seed=seed)
    res, _ = perturb(
        gt,
        seed=seed + 100,
        merges=merges,
        p_fn=0.06,
        p_fp=0.05,
        p_merge=0.04,
        p_swap=0.1,
        p_drop_link=0.05,
        p_parent_link=0.05,
    )
    write_ctc_ground_truth(gt, root / "01_GT")
    write_ctc_result(res, root / "01_RES")
    return root


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    base = tmp_path_factory.mktemp("ctc_cases")
    return {s: _write_case(base / f"case{s}", s, shape, m) for s, shape, m in CASES}


def _ours(root: Path) -> TrackingMatch:
    gt = read_ctc_ground_truth(root / "01_GT")
    res = read_ctc_result(root / "01_RES", n_frames=gt.n_frames, shape=gt.spatial_shape)
    return match_tracking(gt, res)


def _py_ctc(root: Path, metrics: list[str]) -> dict:
    with contextlib.redirect_stdout(io.StringIO()):
        return ctc_eval.evaluate_sequence(
            str(root / "01_RES"), str(root / "01_GT"), metrics, threads=1
        )


def _traccuracy(root: Path, metrics: list) -> list[dict]:
    logging.getLogger("traccuracy").setLevel(logging.ERROR)
    with contextlib.redirect_stderr(io.StringIO()):
        gt = load_ctc_data(str(root / "01_GT" / "TRA"))
        res = load_ctc_data(str(root / "01_RES"))
        out, _ = tr.run_metrics(gt, res, CTCMatcher(), metrics)
    return [o["results"] for o in out]


# --------------------------------------------------------------------------- py-ctcmetrics
@pytest.mark.parametrize("seed", [c[0] for c in CASES])
def test_identical_to_py_ctcmetrics(cases: dict[int, Path], seed: int) -> None:
    m = _ours(cases[seed])
    v = CTCMeasures().compute([m]).values
    ref = _py_ctc(cases[seed], ["DET", "SEG", "TRA", "LNK"])
    for key in ("NS", "FN", "FP", "ED", "EA", "EC"):
        assert v[key.lower()] == ref[f"AOGM_{key}"], key
    assert v["aogm"] == pytest.approx(ref["AOGM"], abs=1e-9)
    assert v["aogm_0"] == pytest.approx(ref["AOGM_0"], abs=1e-9)
    for key in ("DET", "SEG", "TRA", "LNK"):
        assert v[key.lower()] == pytest.approx(ref[key], abs=1e-12), key
    # The perturbations really exercise the measures.
    assert v["fn"] > 0 and v["fp"] > 0 and v["ea"] > 0 and v["ed"] > 0 and v["ec"] > 0
    if seed in (0, 2, 4):
        assert v["ns"] > 0


# --------------------------------------------------------------------------- traccuracy
def _traccuracy_semantics_ec(m: TrackingMatch) -> int:
    """EC when, as traccuracy does, only edges out of dividing nodes are parent links."""
    gg, pg = m.gt_graph, m.pred_graph
    gt_edges = {
        (int(a), int(b)): bool(gg.out_degree[a] >= 2)
        for a, b in zip(gg.sources, gg.targets, strict=True)
    }
    p2g = m.unique_pred_to_gt
    ec = 0
    for a, b in zip(pg.sources, pg.targets, strict=True):
        key = (int(p2g[a]), int(p2g[b]))
        if key in gt_edges and gt_edges[key] != bool(pg.out_degree[a] >= 2):
            ec += 1
    return ec


@pytest.mark.parametrize("seed", [c[0] for c in CASES])
def test_consistent_with_traccuracy(cases: dict[int, Path], seed: int) -> None:
    merges = dict((c[0], c[2]) for c in CASES)[seed]
    m = _ours(cases[seed])
    v = CTCMeasures().compute([m]).values
    metrics = [CTCMetrics()] if merges else [CTCMetrics(), TDivisionMetrics(max_frame_buffer=2)]
    out = _traccuracy(cases[seed], metrics)
    t = out[0]
    assert (t["fp_nodes"], t["fn_nodes"], t["fp_edges"], t["fn_edges"]) == (
        v["fp"],
        v["fn"],
        v["ed"],
        v["ea"],
    )
    # traccuracy counts merged result nodes, not split operations (see the dedicated test).
    assert t["ns_nodes"] == int(np.count_nonzero(m.pred_match_count >= 2))
    # traccuracy's edge semantics differ for single-daughter parent links (dedicated test).
    assert t["ws_edges"] == _traccuracy_semantics_ec(m)
    if not merges:
        for fb in (0, 1, 2):
            ref = out[1][f"Frame Buffer {fb}"]
            d = DivisionMetrics(frame_tolerance=fb).compute([m]).values
            assert (d["tp"], d["fp"], d["fn"], d["wc"], d["n_gt"], d["n_pred"]) == (
                ref["True Positive Divisions"],
                ref["False Positive Divisions"],
                ref["False Negative Divisions"],
                ref["Wrong Children Divisions"],
                ref["Total GT Divisions"],
                ref["Total Predicted Divisions"],
            ), fb
            assert d["recall"] == pytest.approx(ref["Division Recall"], nan_ok=True)
            assert d["precision"] == pytest.approx(ref["Division Precision"], nan_ok=True)
            assert d["mbc"] == pytest.approx(ref["Mitotic Branching Correctness"], nan_ok=True)


@pytest.mark.parametrize("case", ["late1", "late2", "early1"])
def test_shifted_divisions_identical_to_traccuracy(tmp_path: Path, case: str) -> None:
    res = {"late1": late_division(1), "late2": late_division(2), "early1": early_division()}[case]
    write_ctc_ground_truth(div_gt(), tmp_path / "01_GT")
    write_ctc_result(res, tmp_path / "01_RES")
    out = _traccuracy(tmp_path, [TDivisionMetrics(max_frame_buffer=2)])[0]
    m = match_tracking(div_gt(), res)
    tps = []
    for fb in (0, 1, 2):
        ref = out[f"Frame Buffer {fb}"]
        d = DivisionMetrics(frame_tolerance=fb).compute([m]).values
        assert (d["tp"], d["fp"], d["fn"]) == (
            ref["True Positive Divisions"],
            ref["False Positive Divisions"],
            ref["False Negative Divisions"],
        ), fb
        tps.append(d["tp"])
    assert tps == {"late1": [0, 1, 1], "late2": [0, 0, 1], "early1": [0, 1, 1]}[case]


# --------------------------------------------------------------------------- traccuracy 0.4.1
HERE = Path(__file__).resolve().parent


def _gap_case(seed: int, gap_in: str) -> tuple[TrackedSequence, TrackedSequence]:
    gt = simulate(n_frames=14, shape=(48, 48), n_cells=6, n_divisions=5, seed=seed)
    res, _ = perturb(gt, seed=seed + 50, merges=False, p_miss_division=0.2)
    if gap_in == "result":
        return gt, drop_mother_last_detection(res, seed=seed + 1)
    return drop_mother_last_detection(gt, seed=seed), res


def _missing_mother() -> tuple[TrackedSequence, TrackedSequence]:
    """The result misses the mother's last detection: its link to the daughters skips a frame."""
    gt = div_gt()
    lab = gt.labels.copy()
    lab[2][lab[2] == 1] = 0
    return gt, TrackedSequence(lab, [[1, 0, 1, 0], [2, 3, 5, 1], [3, 3, 5, 1], [4, 0, 5, 0]])


#: Division cases cross-checked against traccuracy 0.4.1 (hand-built, then generated with gaps).
DIVISION_CASES = {
    "missing_mother": _missing_mother,
    "late1": lambda: (div_gt(), late_division(1)),
    "late2": lambda: (div_gt(), late_division(2)),
    "early1": lambda: (div_gt(), early_division()),
    **{
        f"gap_{side}_{seed}": (lambda s=seed, g=side: _gap_case(s, g))
        for seed in (0, 1, 2, 5)
        for side in ("result", "reference")
    },
}


@pytest.fixture(scope="module")
def traccuracy_041_divisions(
    traccuracy_041: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, tuple[TrackingMatch, dict]]:
    """Every division case scored by traccuracy 0.4.1 (one subprocess) and matched here."""
    base = tmp_path_factory.mktemp("division_cases")
    matches = {}
    for name, make in DIVISION_CASES.items():
        gt, res = make()
        assert gt.problems() == [] and res.problems() == [], name
        write_ctc_ground_truth(gt, base / name / "01_GT")
        write_ctc_result(res, base / name / "01_RES")
        matches[name] = match_tracking(gt, res)
    env = {**os.environ, "PYTHONPATH": str(traccuracy_041)}
    roots = [str(base / name) for name in DIVISION_CASES]
    done = subprocess.run(
        [sys.executable, str(HERE / "traccuracy_divisions.py"), "2", *roots],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout)
    assert out["version"] == "0.4.1" and out["file"].startswith(str(traccuracy_041))
    return {name: (matches[name], out["results"][str(base / name)]) for name in DIVISION_CASES}


def _division_counts(m: TrackingMatch, fb: int) -> dict[str, int]:
    v = DivisionMetrics(frame_tolerance=fb).compute([m]).values
    return {k: int(v[k]) for k in ("tp", "fp", "fn", "wc", "n_gt", "n_pred")}


@pytest.mark.parametrize("case", list(DIVISION_CASES))
def test_division_tolerance_identical_to_traccuracy_041(
    traccuracy_041_divisions: dict[str, tuple[TrackingMatch, dict]], case: str
) -> None:
    m, ref = traccuracy_041_divisions[case]
    got = {fb: _division_counts(m, fb) for fb in (0, 1, 2)}
    for fb in (0, 1, 2):
        assert got[fb] == ref[str(fb)], fb
    if case.startswith("gap_"):
        # The gaps shift divisions by a frame: the tolerance recovers them.
        assert got[1]["tp"] > got[0]["tp"]


def test_division_tolerance_walks_frames_over_a_missing_mother() -> None:
    # The result's division is one frame early and its parent link skips the frame of the
    # missing detection. Walking back and forth by frames (as traccuracy 0.4.1 and the
    # docstring do), it is the reference division within one frame; walking by links (the
    # rule before), it was rejected at every tolerance.
    gt, res = _missing_mother()
    m = match_tracking(gt, res)
    assert [_division_counts(m, fb)["tp"] for fb in (0, 1, 2)] == [0, 1, 1]
    assert _division_counts(m, 1)["fp"] == 0 and _division_counts(m, 1)["fn"] == 0


def test_traccuracy_counts_merged_nodes_not_split_operations(tmp_path: Path) -> None:
    # One result node covering three references: 2 split operations (CTC, py-ctcmetrics),
    # traccuracy counts 1 node.
    objs = [o for o in base_objects() if not (o[0] == 1 and o[2] in "BE")]
    objs += [(1, 1, "B"), (1, 1, "E")]
    table = [[1, 0, 3, 0], [2, 0, 0, 0], [3, 2, 3, 2], [4, 2, 3, 2], [5, 2, 3, 0], [6, 0, 0, 0]]
    res = result([o for o in objs if not (o[0] == 1 and o[1] == 5)], table)
    write_ctc_ground_truth(base_gt(), tmp_path / "01_GT")
    write_ctc_result(res, tmp_path / "01_RES")
    ours = CTCMeasures().compute([base_gt()], [res]).values
    assert ours["ns"] == 2
    assert _py_ctc(tmp_path, ["TRA"])["AOGM_NS"] == 2
    assert _traccuracy(tmp_path, [CTCMetrics()])[0]["ns_nodes"] == 1


def test_traccuracy_single_daughter_parent_link_semantics(tmp_path: Path) -> None:
    # Track A cut in two with a parent link (1 -> 7): a changed edge semantics in CTC.
    objs = replace(replace(base_objects(), 2, "A", 7), 3, "A", 7)
    res = result(objs, [[1, 0, 1, 0], *BASE_TABLE[1:], [7, 2, 3, 1]])
    write_ctc_ground_truth(base_gt(), tmp_path / "01_GT")
    write_ctc_result(res, tmp_path / "01_RES")
    assert CTCMeasures().compute([base_gt()], [res]).values["ec"] == 1
    assert _py_ctc(tmp_path, ["TRA"])["AOGM_EC"] == 1
    assert _traccuracy(tmp_path, [CTCMetrics()])[0]["ws_edges"] == 0


def test_traccuracy_misaligns_frames_when_first_frame_is_empty(tmp_path: Path) -> None:
    # traccuracy's CTCMatcher indexes masks from the first frame *with nodes*: a perfect result
    # of a ground truth whose frame 0 is empty is scored against shifted frames.
    lab = np.zeros((4, 16, 16), np.uint16)
    for t in (1, 2, 3):
        lab[t, 2:6, 2 + t : 6 + t] = 1
    lab[3, 10:14, 10:14] = 2
    gt = TrackedSequence(lab, [[1, 1, 3, 0], [2, 3, 3, 0]])
    write_ctc_ground_truth(gt, tmp_path / "01_GT")
    write_ctc_result(gt, tmp_path / "01_RES")
    assert CTCMeasures().compute([gt], [gt]).values["tra"] == 1.0
    assert _py_ctc(tmp_path, ["TRA"])["TRA"] == 1.0
    assert _traccuracy(tmp_path, [CTCMetrics()])[0]["TRA"] < 0.5


def test_traccuracy_division_metrics_refuse_merges(tmp_path: Path) -> None:
    root = _write_case(tmp_path, 0, (48, 48), True)
    with pytest.raises(TypeError):
        _traccuracy(root, [TDivisionMetrics()])
    v = DivisionMetrics().compute([_ours(root)]).values
    assert v["n_gt"] >= 1


# --------------------------------------------------------------------------- py-ctcmetrics bugs
def test_py_ctcmetrics_loses_matches_with_large_uint16_ids(tmp_path: Path) -> None:
    # py-ctcmetrics adds an offset to result ids inside the uint16 array: ids near 65535 wrap
    # and collide. cellbench computes on int64 ids and is invariant to relabelling.
    gt = base_gt()
    res = result(base_objects(), BASE_TABLE).relabel({1: 65000, 2: 65535, 5: 65100})
    write_ctc_ground_truth(gt, tmp_path / "01_GT")
    write_ctc_result(res, tmp_path / "01_RES")
    assert CTCMeasures().compute([gt], [res]).values["tra"] == 1.0
    ref = _py_ctc(tmp_path, ["DET", "TRA"])
    assert ref["DET"] < 1.0 and ref["AOGM_FN"] > 0


def test_py_ctcmetrics_fails_on_empty_result(tmp_path: Path) -> None:
    gt = base_gt()
    empty = TrackedSequence(np.zeros_like(gt.labels), np.zeros((0, 4), dtype=np.int64))
    write_ctc_ground_truth(gt, tmp_path / "01_GT")
    write_ctc_result(empty, tmp_path / "01_RES")
    assert read_ctc_result(tmp_path / "01_RES", n_frames=4).tracks.shape == (0, 4)
    v = CTCMeasures().compute([gt], [empty]).values
    assert v["tra"] == 0.0 and v["fn"] == 14
    with pytest.raises(ValueError):
        _py_ctc(tmp_path, ["DET", "TRA"])


def test_seg_slices_per_slice_versus_py_ctcmetrics_stacking(tmp_path: Path) -> None:
    lab = np.zeros((1, 4, 10, 10), dtype=np.uint16)
    lab[0, 1:3, 2:6, 2:6] = 1
    pred = lab.copy()
    pred[0, 2, 2:6, 2:4] = 0
    res = TrackedSequence(pred, [[1, 0, 0, 0]])
    write_ctc_result(res, tmp_path / "01_RES")
    # One annotated slice per frame: both agree.
    one = TrackedSequence(lab, [[1, 0, 0, 0]], seg=(SegAnnotation(0, lab[0, 2].copy(), z=2),))
    write_ctc_ground_truth(one, tmp_path / "01_GT")
    assert CTCMeasures().compute([one], [res]).values["seg"] == _py_ctc(tmp_path, ["SEG"])["SEG"]
    # Two annotated slices of one frame, same label: each slice is its own image in CTC
    # (cellbench: 1.0 and 0.0); py-ctcmetrics stacks them into one object (24/32 covered).
    two = TrackedSequence(
        lab,
        [[1, 0, 0, 0]],
        seg=(
            SegAnnotation(0, lab[0, 1].copy(), z=1),
            SegAnnotation(0, lab[0, 2].copy(), z=2),
        ),
    )
    write_ctc_ground_truth(two, tmp_path / "02_GT")
    (tmp_path / "01_GT").rename(tmp_path / "one_GT")
    (tmp_path / "02_GT").rename(tmp_path / "01_GT")
    assert CTCMeasures().compute([two], [res]).values["seg"] == 0.5
    assert _py_ctc(tmp_path, ["SEG"])["SEG"] == pytest.approx(24 / 32)


# --------------------------------------------------------------------------- CT / TF
def _py_ctc_fractions(root: Path) -> tuple[float, float, float]:
    """py-ctcmetrics CT and TF, and TF without its order-dependent ``break``."""
    from ctc_metrics.metrics.biological.ct import ct
    from ctc_metrics.metrics.biological.tf import calculate_fractions_fo_computed_tracks, tf

    with contextlib.redirect_stdout(io.StringIO()):
        comp, ref, traj, _, _, _ = ctc_eval.load_data(
            str(root / "01_RES"), str(root / "01_GT"), True, False, threads=1
        )
    args = (traj["labels_ref"], traj["mapped_ref"], traj["mapped_comp"])
    fractions = calculate_fractions_fo_computed_tracks(ref, *args)
    best: dict[int, float] = {}
    for per_ref in fractions.values():
        for k, v in per_ref.items():
            best[k] = max(best.get(k, 0.0), v)
    no_break = float(np.mean([v for v in best.values() if v > 0]))
    return ct(comp, ref, *args), tf(ref, *args), no_break


@pytest.mark.parametrize("seed", [c[0] for c in CASES])
def test_complete_tracks_and_fractions_vs_py_ctcmetrics(cases: dict[int, Path], seed: int) -> None:
    v = CompleteTracks().compute([_ours(cases[seed])]).values
    ct, tf, tf_no_break = _py_ctc_fractions(cases[seed])
    assert v["ct"] == pytest.approx(ct, abs=1e-12)
    assert v["tf"] == pytest.approx(tf_no_break, abs=1e-12)
    assert tf <= tf_no_break + 1e-12


def test_py_ctcmetrics_tf_break_makes_it_order_dependent(tmp_path: Path) -> None:
    # Result track 1 follows reference 1 completely, then half of reference 2 (a new reference
    # track without parent); nothing else follows reference 2. py-ctcmetrics stops looking at
    # result track 1 after its complete match, so reference 2 counts as "undetected" and is
    # left out of the mean. Relabelling reference 2 as 0.5 (< 1) would change the result.
    lab = np.zeros((4, 12, 12), dtype=np.uint16)
    lab[0:2, 1:4, 1:4] = 1  # reference 1: frames 0-1
    lab[2:4, 1:4, 1:4] = 2  # reference 2: frames 2-3
    lab[0:4, 7:10, 7:10] = 3  # reference 3: frames 0-3
    gt = TrackedSequence(lab, [[1, 0, 1, 0], [2, 2, 3, 0], [3, 0, 3, 0]])
    pred = lab.copy()
    pred[pred == 2] = 1
    pred[3][pred[3] == 1] = 0
    res = TrackedSequence(pred, [[1, 0, 2, 0], [3, 0, 3, 0]])
    write_ctc_ground_truth(gt, tmp_path / "01_GT")
    write_ctc_result(res, tmp_path / "01_RES")
    v = CompleteTracks().compute([gt], [res]).values
    _, tf, tf_no_break = _py_ctc_fractions(tmp_path)
    # Fractions: reference 1 -> 1.0, reference 2 -> 0.5, reference 3 -> 1.0.
    assert v["tf"] == pytest.approx(2.5 / 3)
    assert tf_no_break == pytest.approx(2.5 / 3)
    assert tf == pytest.approx(1.0)


def _check_bc(root: Path, m: TrackingMatch) -> None:
    v = BranchingCorrectness(3).compute([m]).values
    ref = _py_ctc(root, ["BC(3)"])
    for i in range(4):
        assert (v[f"bc_tp@{i}"], v[f"bc_fp@{i}"], v[f"bc_fn@{i}"]) == (
            ref[f"tp_div({i})"],
            ref[f"fp_div({i})"],
            ref[f"fn_div({i})"],
        ), i
        expected = ref[f"BC({i})"]
        assert (np.isnan(v[f"bc@{i}"]) and expected is None) or v[f"bc@{i}"] == pytest.approx(
            expected, abs=1e-12
        )


@pytest.mark.parametrize("seed", [c[0] for c in CASES])
def test_branching_correctness_vs_py_ctcmetrics(cases: dict[int, Path], seed: int) -> None:
    _check_bc(cases[seed], _ours(cases[seed]))


@pytest.mark.parametrize("shift", [1, 2])
def test_branching_correctness_shifted_division_vs_py_ctcmetrics(
    tmp_path: Path, shift: int
) -> None:
    gt, res = div_gt(), late_division(shift)
    write_ctc_ground_truth(gt, tmp_path / "01_GT")
    write_ctc_result(res, tmp_path / "01_RES")
    _check_bc(tmp_path, match_tracking(gt, res))


# --------------------------------------------------------------------------- HOTA, CHOTA, CCA
def check_identity_vs_py_ctcmetrics(root: Path, m: TrackingMatch) -> dict[str, float]:
    """HOTA, CHOTA, CTC MOTA/IDF1 and CCA against py-ctcmetrics on one CTC folder pair."""
    h = HOTAMetrics().compute([m]).values
    mo = CTCMOTMetrics().compute([m]).values
    cca = CellCycleAccuracy().compute([m]).values["cca"]
    ref = _py_ctc(root, ["HOTA", "CHOTA", "MOTA", "IDF1", "CCA"])
    assert h["hota"] == pytest.approx(ref["HOTA"], abs=1e-9)
    assert h["chota"] == pytest.approx(ref["CHOTA"], abs=1e-9)
    assert (mo["tp"], mo["fp"], mo["fn"], mo["idsw"], mo["multi"]) == (
        ref["TP"],
        ref["FP"],
        ref["FN"],
        ref["IDSW"],
        ref["MULTI-ASSIGNMENTS"],
    )
    assert mo["mota"] == pytest.approx(ref["MOTA"], abs=1e-9)
    assert mo["precision"] == pytest.approx(ref["Precision"], abs=1e-9)
    assert mo["recall"] == pytest.approx(ref["Recall"], abs=1e-9)
    assert mo["idtp"] == ref["IDTP"]
    for key in ("IDF1", "IDP", "IDR"):
        assert mo[key.lower()] == pytest.approx(ref[key], abs=1e-9), key
    assert (np.isnan(cca) and ref["CCA"] is None) or cca == pytest.approx(ref["CCA"], abs=1e-9)
    return {**h, **{f"mot_ctc/{k}": v for k, v in mo.items()}, "cca": cca}


@pytest.mark.parametrize("seed", [c[0] for c in CASES])
def test_hota_chota_ctc_mot_identical_to_py_ctcmetrics(cases: dict[int, Path], seed: int) -> None:
    v = check_identity_vs_py_ctcmetrics(cases[seed], _ours(cases[seed]))
    # The cases exercise what the measures are about: switches, merges, imperfect association.
    assert v["mot_ctc/idsw"] > 0 and 0 < v["hota"] < 1 and 0 < v["chota"] < 1
    if seed in (0, 2, 4):
        assert v["mot_ctc/multi"] > 0
    # The CTC convention differs from CLEAR MOT (cellbench's mot/...) on these sequences.
    assert MOTMetrics().compute([_ours(cases[seed])]).values["idsw"] != v["mot_ctc/idsw"]


@pytest.mark.parametrize("seed", [12, 25, 29])
def test_cell_cycle_accuracy_identical_to_py_ctcmetrics(tmp_path: Path, seed: int) -> None:
    # Long lineages: daughters divide again, so complete cycles exist in both.
    gt = simulate(n_frames=24, shape=(48, 48), n_cells=3, n_divisions=9, seed=seed)
    res, _ = perturb(gt, seed=seed + 7, merges=False, p_miss_division=0.2, p_parent_link=0.05)
    write_ctc_ground_truth(gt, tmp_path / "01_GT")
    write_ctc_result(res, tmp_path / "01_RES")
    v = check_identity_vs_py_ctcmetrics(tmp_path, _ours(tmp_path))
    assert 0 < v["cca"] < 1


def test_chota_lineage_does_not_depend_on_track_table_order(tmp_path: Path) -> None:
    # The result follows the reference exactly, except that daughter Q is cut in two and
    # re-linked with a single-child parent link (2 -> 7): merged, {2, 7} is Q, whose parent is P.
    # py-ctcmetrics keeps the parent column of the first row of a merged track; with row 7
    # listed before row 2, that is 7's parent (2, i.e. the merged track itself), and Q's link to
    # P is lost from the CHOTA lineage. cellbench takes the root's parent whatever the order.
    gt = div_gt()
    lab = gt.labels.copy()
    lab[4:6][lab[4:6] == 2] = 7
    table = [[1, 0, 2, 0], [2, 3, 3, 1], [3, 3, 5, 1], [4, 0, 5, 0], [7, 4, 5, 2]]
    res = TrackedSequence(lab, table)
    write_ctc_ground_truth(gt, tmp_path / "01_GT")
    write_ctc_result(res, tmp_path / "01_RES")
    v = HOTAMetrics().compute([gt], [res]).values
    assert v["hota"] == 1.0 and v["chota"] == 1.0
    assert _py_ctc(tmp_path, ["CHOTA"])["CHOTA"] == pytest.approx(1.0)  # root listed first
    track_file = tmp_path / "01_RES" / "res_track.txt"
    rows = track_file.read_text().splitlines()
    child_first = sorted(rows, key=lambda r: r.split()[0] != "7")  # row 7 first
    track_file.write_text("\n".join(child_first) + "\n")
    assert _py_ctc(tmp_path, ["CHOTA"])["CHOTA"] < 0.99
    m = _ours(tmp_path)
    assert HOTAMetrics().compute([m]).values["chota"] == 1.0


def test_cell_cycle_accuracy_of_known_lengths() -> None:
    from cellbench.metrics.tracking.biological import cca_value, cell_cycle_lengths

    # 1 -> (2, 3), 2 -> (4, 5), 3 -> (6, 7): tracks 2 and 3 are complete cycles.
    tab = [[1, 0, 2, 0], [2, 3, 5, 1], [3, 3, 8, 1], [4, 6, 9, 2], [5, 6, 9, 2]]
    tab += [[6, 9, 9, 3], [7, 9, 9, 3]]
    assert cell_cycle_lengths(np.asarray(tab)) == (2, 5)
    assert cca_value([2, 5], [2, 5]) == 1.0
    assert cca_value([2, 5], [2, 2]) == 0.5  # CDFs at 2: 0.5 vs 1.0
    assert np.isnan(cca_value([], [3])) and cca_value([3], []) == 0.0


# --------------------------------------------------------------------------- linking only
@pytest.mark.parametrize("seed", [12, 25, 29])
def test_linking_only_identical_to_py_ctcmetrics(tmp_path: Path, seed: int) -> None:
    from ctc_metrics.metrics.biological.bio import bio
    from ctc_metrics.metrics.biological.op_clb import op_clb

    from cellbench.metrics.tracking import LinkingMetrics, given_segmentation_problems

    gt = simulate(n_frames=24, shape=(48, 48), n_cells=3, n_divisions=9, seed=seed)
    # Links only: no missed, extra, merged or split objects; the masks stay the reference's.
    res, _counts = perturb(
        gt, seed=seed + 3, p_fn=0, p_fp=0, p_merge=0, p_split=0, p_swap=0.05, p_drop_link=0.05
    )
    write_ctc_ground_truth(gt, tmp_path / "01_GT")
    write_ctc_result(res, tmp_path / "01_RES")
    m = _ours(tmp_path)
    assert given_segmentation_problems(m) == []
    v = LinkingMetrics().compute([m]).values
    ref = _py_ctc(tmp_path, ["LNK", "DET", "CT", "TF", "BC(3)", "CCA"])
    assert ref["DET"] == 1.0 and v["lnk"] < 1.0
    assert v["lnk"] == pytest.approx(ref["LNK"], abs=1e-12)
    assert v["ct"] == pytest.approx(ref["CT"], abs=1e-12)
    assert v["cca"] == pytest.approx(ref["CCA"], abs=1e-12)
    _, _, tf_no_break = _py_ctc_fractions(tmp_path)
    assert v["tf"] == pytest.approx(tf_no_break, abs=1e-12)
    for i in range(4):
        assert v[f"bc@{i}"] == pytest.approx(ref[f"BC({i})"], abs=1e-12)
        expected = bio(ref["CT"], tf_no_break, ref[f"BC({i})"], ref["CCA"])
        assert v[f"bio@{i}"] == pytest.approx(expected, abs=1e-12)
        assert v[f"op_clb@{i}"] == pytest.approx(op_clb(ref["LNK"], expected), abs=1e-12)
        if ref["TF"] == pytest.approx(tf_no_break):
            assert v[f"bio@{i}"] == pytest.approx(ref[f"BIO({i})"], abs=1e-12)


def test_linking_only_refuses_a_result_with_other_masks() -> None:
    from cellbench.metrics.tracking import given_segmentation_problems

    gt = base_gt()
    assert given_segmentation_problems(match_tracking(gt, gt.relabel({1: 9}))) == []
    # Frame 2: C loses its last row (not exact); frame 3: an extra object in the free box.
    objs = [*base_objects(), (3, 7, "X")]
    lab = paint(objs)
    lab[2][lab[2] == 3] = 0
    lab[2, 1:3, 9:13] = 3
    res = TrackedSequence(lab, [*BASE_TABLE, [7, 3, 3, 0]])
    problems = given_segmentation_problems(match_tracking(gt, res))
    assert len(problems) == 2
    assert problems[0].startswith("frame 2: reference objects 3 are not reproduced exactly")
    assert "result objects 3 are not a reference object" in problems[0]
    assert problems[1].startswith("frame 3: result objects 7 are not a reference object")


# --------------------------------------------------------------------------- py-motmetrics
def _motmetrics(m: TrackingMatch, thr: float) -> dict:
    mm = pytest.importorskip("motmetrics")
    acc = mm.MOTAccumulator(auto_id=False)
    gg, pg = m.gt_graph, m.pred_graph
    for t in range(m.gt.n_frames):
        a, b = int(gg.frame_offsets[t]), int(gg.frame_offsets[t + 1])
        c, d = int(pg.frame_offsets[t]), int(pg.frame_offsets[t + 1])
        gt_f, pr_f = m.gt.labels[t].astype(np.int64), m.pred.labels[t].astype(np.int64)
        dist = np.full((b - a, d - c), np.nan)
        for i, gl in enumerate(gg.labels[a:b].tolist()):  # brute-force IoU from pixels
            gm = gt_f == gl
            for j, pl in enumerate(pg.labels[c:d].tolist()):
                pm = pr_f == pl
                inter = np.count_nonzero(gm & pm)
                if inter:
                    iou = inter / np.count_nonzero(gm | pm)
                    if iou >= thr:
                        dist[i, j] = 1.0 - iou
        acc.update(gg.labels[a:b].tolist(), pg.labels[c:d].tolist(), dist, frameid=t)
    names = ["mota", "num_switches", "num_false_positives", "num_misses", "idf1", "idtp"]
    return mm.metrics.create().compute(acc, metrics=names, name="s").iloc[0].to_dict()


@pytest.mark.parametrize("seed", [0, 3, 4])
@pytest.mark.parametrize("thr", [0.5, 0.3])
def test_mot_identical_to_motmetrics(cases: dict[int, Path], seed: int, thr: float) -> None:
    m = _ours(cases[seed])
    v = MOTMetrics(iou_threshold=thr).compute([m]).values
    ref = _motmetrics(m, thr)
    assert (v["idsw"], v["fp"], v["fn"], v["idtp"]) == (
        ref["num_switches"],
        ref["num_false_positives"],
        ref["num_misses"],
        ref["idtp"],
    )
    assert v["idsw"] > 0
    assert v["mota"] == pytest.approx(ref["mota"], abs=1e-12)
    assert v["idf1"] == pytest.approx(ref["idf1"], abs=1e-12)


def test_generated_cases_are_valid_and_varied(cases: dict[int, Path]) -> None:
    for seed, root in cases.items():
        gt = read_ctc_ground_truth(root / "01_GT")
        res = read_ctc_result(root / "01_RES", n_frames=gt.n_frames, shape=gt.spatial_shape)
        assert gt.problems() == [] and res.problems() == []
        g = gt.graph()
        assert Counter(g.out_degree.tolist())[2] >= 1, seed  # divisions present
        assert len(gt.seg) == 5


def test_paint_helper_is_consistent() -> None:
    assert np.array_equal(paint(base_objects()), base_gt().labels)
