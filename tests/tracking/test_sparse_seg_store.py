"""Sparse SEG truth in the canonical store (format 3) and SEG scored only where annotated."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tracking_synth import simulate

from cellbench.errors import ValidationError
from cellbench.metrics.tracking import CTCMeasures, match_tracking
from cellbench.store.sample import Sample
from cellbench.store.zarr_store import DatasetStore, build_store
from cellbench.tasks import get_task
from cellbench.tracks import SegAnnotation, TrackedSequence, seg_arrays

CARD = {"id": "seg-test", "version": "1", "tasks": ["tracking"]}


def _sample(gt: TrackedSequence, sid: str = "01", seg: bool = True) -> Sample:
    image = (gt.labels[:, None] > 0).astype(np.uint16) * 100
    s = Sample(
        id=sid,
        image=image,
        axes="tczyx" if gt.is_3d else "tcyx",
        split="test",
        instances=gt.labels.astype(np.uint16),
        tracks=gt.tracks,
    )
    if seg and gt.seg:
        s.seg, s.seg_annotated = seg_arrays(gt.seg, gt.labels.shape)
    return s


def _seg_of(truth: TrackedSequence, res: TrackedSequence) -> dict:
    return CTCMeasures().compute([match_tracking(truth, res, validate=False)]).values


def _sparse_2d() -> TrackedSequence:
    gt = simulate(n_frames=6, shape=(40, 40), n_cells=4, n_divisions=1, radius=4, seed=3)
    # frames 1 and 4 annotated; in frame 4 only the first object is drawn
    f4 = gt.labels[4].copy()
    keep = int(np.unique(f4[f4 > 0])[0])
    f4[f4 != keep] = 0
    seg = (SegAnnotation(1, gt.labels[1].copy()), SegAnnotation(4, f4))
    return TrackedSequence(gt.labels.astype(np.uint16), gt.tracks, seg=seg)


def test_store_keeps_sparse_seg_and_stays_format_2_without_it(tmp_path: Path) -> None:
    gt = _sparse_2d()
    store = build_store([_sample(gt)], tmp_path / "a.zarr", CARD)
    assert store.format.version == "3"
    assert store.verify() == []
    back = DatasetStore.open(tmp_path / "a.zarr").sample("01")
    assert back.seg_annotated.tolist() == [[1, -1], [4, -1]]
    assert np.array_equal(back.seg[1], gt.labels[1]) and not back.seg[[0, 2, 3, 5]].any()
    # unannotated frames take no chunk on disk
    chunk_dir = tmp_path / "a.zarr" / "images" / "01" / "labels" / "seg" / "0" / "c"
    assert sorted(p.name for p in chunk_dir.iterdir()) == ["1", "4"]
    plain = build_store([_sample(gt, seg=False)], tmp_path / "b.zarr", CARD)
    assert plain.format.version == "2" and "seg" not in plain.fields


def test_seg_scored_only_where_annotated(tmp_path: Path) -> None:
    gt = _sparse_2d()
    store = build_store([_sample(gt)], tmp_path / "a.zarr", CARD)
    task = get_task("tracking")
    truth = task.ground_truth(store, "01")
    assert [(a.frame, a.z) for a in truth.seg] == [(1, None), (4, None)]
    # a result that erases every object of frames 0, 2, 3, 5 and the unannotated ones of
    # frame 4 keeps SEG = 1: only annotated objects count
    pred = gt.labels.copy()
    pred[[0, 2, 3, 5]] = 0
    drawn = gt.seg[1].labels > 0
    pred[4][~drawn] = 0
    res = TrackedSequence(pred, gt.tracks)
    assert _seg_of(truth, res)["seg"] == 1.0
    # halving the drawn object of frame 4 halves its Jaccard (its > 50% cover is lost: 0)
    ys, xs = np.nonzero(drawn)
    pred[4][ys[: ys.size // 3], xs[: ys.size // 3]] = 0
    n1 = np.unique(gt.labels[1][gt.labels[1] > 0]).size
    kept = (pred[4] > 0) & drawn
    j = kept.sum() / drawn.sum()
    res = TrackedSequence(pred, gt.tracks)
    expected = (n1 + j) / (n1 + 1)
    got = _seg_of(truth, res)["seg"]
    assert got == pytest.approx(expected)


def test_3d_slice_annotations_round_trip(tmp_path: Path) -> None:
    gt = simulate(n_frames=3, shape=(6, 16, 16), n_cells=3, n_divisions=1, radius=3, seed=5)
    seg = (
        SegAnnotation(0, gt.labels[0, 2].copy(), z=2),
        SegAnnotation(2, gt.labels[2, 3].copy(), z=3),
    )
    gt = TrackedSequence(gt.labels.astype(np.uint16), gt.tracks, seg=seg)
    store = build_store([_sample(gt)], tmp_path / "a.zarr", CARD)
    truth = get_task("tracking").ground_truth(store, "01")
    assert [(a.frame, a.z) for a in truth.seg] == [(0, 2), (2, 3)]
    assert np.array_equal(truth.seg[1].labels, gt.labels[2, 3])


def test_bad_seg_truth_is_listed(tmp_path: Path) -> None:
    gt = _sparse_2d()
    s = _sample(gt)
    s.seg[0, 0, 0] = 7  # frame 0 is not annotated
    s.seg_annotated = np.array([[1, -1], [1, -1], [9, -1], [4, 2]])
    with pytest.raises(ValidationError) as err:
        build_store([s], tmp_path / "a.zarr", CARD)
    text = str(err.value)
    assert "frame 1 z=-1 twice" in text
    assert "frame 9 is outside 0..5" in text
    assert "slice z=2 of a 2D frame" in text
    assert "labels outside the annotated frames" in text
    assert not (tmp_path / "a.zarr").exists()


@pytest.mark.filterwarnings("ignore")
def test_sparse_seg_through_store_equals_py_ctcmetrics(tmp_path: Path) -> None:
    """Store (format 3) -> task ground truth -> SEG equals py-ctcmetrics on the CTC folders."""
    import contextlib
    import io
    import os

    from tracking_synth import perturb

    from cellbench.formats.registry import write_samples
    from cellbench.tasks.tracking.ctc import write_ctc_result

    os.environ.setdefault("NO_JIT_WARNING", "1")
    ctc_eval = pytest.importorskip("ctc_metrics.scripts.evaluate")
    gt = simulate(n_frames=8, shape=(48, 48), n_cells=6, n_divisions=2, radius=4.0, seed=11)
    labels = gt.labels.astype(np.uint16)
    rng = np.random.default_rng(0)
    ann = []
    for t in (0, 3, 6):  # three annotated frames, about two thirds of their objects drawn
        frame = labels[t].copy()
        ids = np.unique(frame[frame > 0])
        dropped = rng.choice(ids, size=max(1, ids.size // 3), replace=False)
        frame[np.isin(frame, dropped)] = 0
        ann.append(SegAnnotation(t, frame))
    gt = TrackedSequence(labels, gt.tracks, seg=tuple(ann))
    res, _ = perturb(gt, seed=5, p_fn=0.08, p_fp=0.05, p_merge=0.05, p_split=0.05)
    store = build_store([_sample(gt)], tmp_path / "a.zarr", CARD)
    truth = get_task("tracking").ground_truth(store, "01")
    ours = _seg_of(truth, res)["seg"]

    write_samples("ctc", store.samples(), tmp_path / "ctc")
    write_ctc_result(res, tmp_path / "ctc" / "01_RES")
    with contextlib.redirect_stdout(io.StringIO()):
        ref = ctc_eval.evaluate_sequence(
            str(tmp_path / "ctc" / "01_RES"), str(tmp_path / "ctc" / "01_GT"), ["SEG"], threads=1
        )
    assert 0.3 < ours < 0.99  # a case where errors matter
    assert ours == pytest.approx(ref["SEG"], abs=1e-12)
    # the dense convention (every object of every frame) gives another number
    dense = TrackedSequence(
        labels, gt.tracks, seg=tuple(SegAnnotation(t, labels[t]) for t in range(8))
    )
    assert _seg_of(dense, res)["seg"] != pytest.approx(ours, abs=1e-6)


def test_hugging_face_export_refuses_sparse_seg_instead_of_dropping_it(tmp_path: Path) -> None:
    from cellbench.errors import StoreError
    from cellbench.store.hf.plan import ExportPlan

    store = build_store([_sample(_sparse_2d())], tmp_path / "a.zarr", CARD)
    with pytest.raises(StoreError, match=r"sparse SEG truth .* export it with --to ctc"):
        ExportPlan.from_store(store)


def test_public_variant_leaves_the_hidden_seg_truth_out(tmp_path: Path) -> None:
    from cellbench.store.variants import hidden_label_manifest, write_public_variant

    gt = _sparse_2d()
    train = _sample(gt, "01")
    train.split = "train"
    store = build_store([train, _sample(gt, "02")], tmp_path / "a.zarr", CARD)
    public = write_public_variant(store, "test", tmp_path / "public.zarr")
    hidden = public.sample("02")
    assert hidden.seg is None and hidden.instances is None and not public.has_seg_truth("02")
    assert public.sample("01").seg is not None  # the training split keeps its truth
    paths = hidden_label_manifest(store, "test")["arrays"]
    assert {"images/02/labels/seg/0", "segframes/02"} <= set(paths)
