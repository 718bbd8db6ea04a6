import numpy as np
import pytest
import tifffile
import torch

from cellbench.errors import CellbenchError, ValidationError
from cellbench.tasks.tracking.ctc import write_ctc_result
from cellbench.tracks import TrackedSequence
from cellbench.training.baseline import DataSpec, get_baseline
from cellbench.training.models.tracking import link

from .helpers import discs, instance_batch, round_trip, train

# Ground-truth lineage of the generated movie (CTC semantics: L B E P).
#  1: cell moving right, divides after frame 5 into 9 and 10
#  2: divides after frame 3 into 3 and 4
#  5: disappears after frame 2;  6: appears at frame 3
#  7: missing in frame 5, reappears in frame 6 as 8 (CTC gap convention: new label, parent 7)
GT_TRACKS = np.array(
    [
        [1, 0, 5, 0],
        [2, 0, 3, 0],
        [3, 4, 7, 2],
        [4, 4, 7, 2],
        [5, 0, 2, 0],
        [6, 3, 7, 0],
        [7, 0, 4, 0],
        [8, 6, 7, 7],
        [9, 6, 7, 1],
        [10, 6, 7, 1],
    ]
)


def _centre(track, t):
    """Centre of each ground-truth track at frame t (y, x)."""
    if track == 1:
        return (15, 12 + t)
    if track == 2:
        return (42, 14 + t)
    if track in (3, 4):
        return (42 + (-5 if track == 3 else 5) - (t - 4) * (1 if track == 3 else -1), 18)
    if track == 5:
        return (68, 60)
    if track == 6:
        return (20, 60 - t)
    if track in (7, 8):
        return (62, 30 + t)
    return (15 + (-5 if track == 9 else 5) * (1 + (t - 6) * 0.4), 18)


def make_movie(seed=0, n_frames=8, shape=(84, 84)):
    """Label movie of GT_TRACKS with ids shuffled per frame, plus the GT-id movie."""
    rng = np.random.default_rng(seed)
    gt = np.zeros((n_frames, *shape), dtype=np.int64)
    for tid, start, end, _ in GT_TRACKS:
        for t in range(start, end + 1):
            r = 3.3 if tid in (3, 4, 9, 10) else 4.2
            gt[t][discs(shape, [_centre(tid, t)], r) > 0] = tid
    shuffled = np.zeros_like(gt)
    for t in range(n_frames):
        perm = rng.permutation(500)[:11] * 1_000_000 + 1  # sparse, huge ids
        shuffled[t] = np.where(gt[t] > 0, perm[gt[t]], 0)
    return shuffled, gt


def assert_same_lineage(gt_labels, gt_tracks, labels, tracks):
    """Equal up to a relabelling of the tracks: same pixels, spans and parents."""
    mapping = {}
    for t in range(gt_labels.shape[0]):
        for g in np.unique(gt_labels[t])[1:]:
            got = np.unique(labels[t][gt_labels[t] == g])
            assert got.size == 1 and got[0] != 0, (t, g, got)
            assert mapping.setdefault(int(g), int(got[0])) == int(got[0]), (t, g)
        assert np.array_equal(labels[t] > 0, gt_labels[t] > 0)
    assert len(set(mapping.values())) == len(mapping) == len(gt_tracks) == len(tracks)
    rows = {int(r[0]): r for r in tracks}
    for tid, start, end, parent in gt_tracks:
        _, s, e, p = rows[mapping[int(tid)]]
        assert (s, e) == (start, end), tid
        assert p == (mapping[int(parent)] if parent else 0), tid


def assert_ctc_valid(labels, tracks):
    """Independent check of the CTC result rules on arrays."""
    assert tracks.dtype == np.int64 and tracks.shape[1] == 4
    ids = tracks[:, 0]
    assert len(np.unique(ids)) == len(ids) and np.all(ids > 0)
    by_id = {int(r[0]): r for r in tracks}
    for tid, start, end, parent in tracks:
        assert 0 <= start <= end < labels.shape[0]
        present = [bool((labels[t] == tid).any()) for t in range(labels.shape[0])]
        assert present == [start <= t <= end for t in range(labels.shape[0])], tid
        if parent:
            assert by_id[int(parent)][2] < start
    assert set(np.unique(labels)) - {0} == set(ids.tolist())


def test_linking_ground_truth_reproduces_the_lineage():
    movie, gt = make_movie()
    labels, tracks = link(movie, max_distance=10.0)
    assert labels.dtype == np.int32 and labels.shape == movie.shape
    assert_ctc_valid(labels, tracks)
    assert_same_lineage(gt, GT_TRACKS, labels, tracks)


def test_result_passes_py_ctcmetrics_validation(tmp_path):
    from ctc_metrics.metrics.validation.valid import valid
    from ctc_metrics.utils.filesystem import parse_masks, read_tracking_file

    movie, _ = make_movie(seed=3)
    labels, tracks = link(movie, max_distance=10.0)
    folder = write_ctc_result(TrackedSequence(labels, tracks), tmp_path / "01_RES")
    files = parse_masks(str(folder))
    assert [f.rsplit("/", 1)[-1] for f in files] == [f"mask{t:03d}.tif" for t in range(8)]
    masks = [tifffile.imread(f) for f in files]
    assert masks[0].dtype == np.uint16 and np.array_equal(np.stack(masks), labels)
    table = read_tracking_file(str(folder / "res_track.txt"))
    assert np.array_equal(table, tracks)
    present = [np.unique(m)[np.unique(m) > 0].tolist() for m in masks]
    assert valid(masks, table, present) == 1


def _movie(*frames):
    return np.stack(frames).astype(np.uint16)


def _frame(objects, shape=(30, 30)):
    out = np.zeros(shape, dtype=np.uint16)
    for label, centre, radius in objects:
        out[discs(shape, [centre], radius) > 0] = label
    return out


def test_appearance_and_disappearance():
    movie = _movie(
        _frame([(1, (8, 8), 3)]),
        _frame([(1, (8, 9), 3), (2, (22, 22), 3)]),
        _frame([(5, (22, 23), 3)]),
    )
    labels, tracks = link(movie)
    a, b = labels[0, 8, 8], labels[1, 22, 22]
    rows = {int(r[0]): r[1:].tolist() for r in tracks}
    assert rows == {a: [0, 1, 0], b: [1, 2, 0]}


@pytest.mark.parametrize("max_gap, linked", [(2, True), (0, False)])
def test_gap_closing_writes_a_new_track_with_the_old_one_as_parent(max_gap, linked):
    movie = _movie(
        _frame([(1, (8, 8), 3)]),
        _frame([(1, (8, 9), 3)]),
        _frame([]),
        _frame([(4, (9, 11), 3)]),
    )
    labels, tracks = link(movie, max_gap=max_gap)
    first, second = labels[0, 8, 8], labels[3, 9, 11]
    assert first != second
    rows = {int(r[0]): r[1:].tolist() for r in tracks}
    assert rows[first] == [0, 1, 0]
    assert rows[second] == [3, 3, first if linked else 0]
    assert_ctc_valid(labels, tracks)


@pytest.mark.parametrize("divisions", [True, False])
def test_division(divisions):
    movie = _movie(
        _frame([(3, (15, 15), 4)]),
        _frame([(3, (15, 15), 4)]),
        _frame([(1, (15, 11), 3), (2, (15, 19), 3)]),
        _frame([(7, (15, 10), 3), (8, (15, 20), 3)]),
    )
    labels, tracks = link(movie, divisions=divisions)
    mother, d1, d2 = labels[0, 15, 15], labels[2, 15, 11], labels[2, 15, 19]
    rows = {int(r[0]): r[1:].tolist() for r in tracks}
    if divisions:
        assert len({mother, d1, d2}) == 3
        assert rows == {mother: [0, 1, 0], d1: [2, 3, mother], d2: [2, 3, mother]}
    else:
        assert len(rows) == 2 and mother in (d1, d2)
        other = d2 if mother == d1 else d1
        assert rows == {mother: [0, 3, 0], other: [2, 3, 0]}
    assert_ctc_valid(labels, tracks)


def test_implausible_divisions_and_far_jumps_are_not_linked():
    movie = _movie(
        _frame([(1, (15, 15), 4)]),
        _frame([(1, (15, 13), 4), (2, (15, 21), 1)]),  # daughter 1/16 the size: no division
    )
    labels, tracks = link(movie, division_size_ratio=2.5)
    assert tracks[:, 3].tolist() == [0, 0]
    jump = _movie(_frame([(1, (3, 3), 2)]), _frame([(1, (26, 26), 2)]))
    labels, tracks = link(jump, max_distance=10)
    assert len(tracks) == 2 and labels[0, 3, 3] != labels[1, 26, 26]


def test_3d_linking_with_spacing():
    shape = (8, 24, 24)
    f0 = np.zeros(shape, np.uint16)
    f0[discs(shape, [(4, 12, 12)], 3) > 0] = 1
    f1 = np.zeros(shape, np.uint16)
    f1[discs(shape, [(4, 12, 8)], 2.5) > 0] = 5
    f1[discs(shape, [(4, 12, 16)], 2.5) > 0] = 6
    labels, tracks = link(np.stack([f0, f1]), spacing=[2.0, 0.5, 0.5], max_distance=5)
    assert labels.shape == (2, *shape)
    assert sorted(tracks[:, 3].tolist()) == [0, 1, 1]
    assert_ctc_valid(labels, tracks)


def test_bad_input_lists_every_problem(tmp_path):
    with pytest.raises(ValidationError) as err:
        link(np.zeros((3, 4, 4), np.float32), max_distance=-1, max_gap=-2)
    assert len(err.value.problems) == 3
    with pytest.raises(ValidationError, match="spacing"):
        link(np.zeros((2, 4, 4), np.int32), spacing=[1.0])
    with pytest.raises(ValidationError, match=r"0\.\.65535"):
        write_ctc_result(
            TrackedSequence(np.full((1, 2, 2), 70000), np.array([[70000, 0, 0, 0]])), tmp_path
        )
    empty, no_tracks = link(np.zeros((3, 5, 5), np.int32))
    assert no_tracks.shape == (0, 4) and not empty.any()


def _tracker(detector="embedding-unet", **detector_config):
    cls = get_baseline("tracker")
    config = cls.config_class.from_dict(
        {"detector": detector, "detector_config": detector_config, "max_distance": 8.0}
    )
    return cls(config, DataSpec("tracking", 1))


def test_tracker_trains_detector_and_tracks_a_sequence(tmp_path):
    torch.manual_seed(0)
    model = _tracker(depth=3, base_channels=8, patch_size=[32, 32], min_object_size=3)
    assert model.config.patch_size == [32, 32]
    assert model.config.detector_config == model.detector.config.to_dict()
    assert model.config.detector_config["tile_size"] == [64, 64]  # resolved defaults kept
    batch = instance_batch(1, 32)
    losses = train(model, batch, 150, lr=5e-3)
    assert losses[-1] < 0.1 * losses[0]
    sequence = torch.cat([torch.roll(batch["image"], shifts=t, dims=-1) for t in range(3)])
    out = model.predict(sequence)
    assert set(out) == {"mask", "tracks"}
    assert out["mask"].shape == (3, 32, 32) and out["mask"].dtype == np.int32
    assert_ctc_valid(out["mask"], out["tracks"])
    assert out["tracks"][:, 1:].tolist() == [[0, 2, 0]] * 4  # 4 cells, tracked throughout
    back = round_trip("tracking", out, tmp_path)
    assert np.array_equal(back.tracks, out["tracks"])


def test_tracker_with_maskrcnn_detector():
    torch.manual_seed(0)
    model = _tracker("maskrcnn", backbone="resnet18", box_detections_per_img=20)
    assert model.config.patch_size == [256, 256]
    out = model.predict(torch.randn(2, 1, 32, 32))
    assert out["mask"].shape == (2, 32, 32)
    assert_ctc_valid(out["mask"], out["tracks"])


def test_tracker_errors():
    with pytest.raises(CellbenchError, match="not an instance segmentation baseline"):
        _tracker("unet")
    with pytest.raises(CellbenchError, match="unknown model config key"):
        _tracker(depht=3)
    with pytest.raises(CellbenchError, match="unknown baseline"):
        _tracker("stardist")
    with pytest.raises(CellbenchError, match=r"\(T, 1, Y, X\)"):
        _tracker(depth=2, base_channels=4).predict(torch.zeros(2, 32, 32))


def test_linking_synthetic_ground_truth_scores_near_perfect_tra(tmp_path):
    """End to end on cellbench.synthetic time-lapses, scored by py-ctcmetrics (independent)."""
    synthetic = pytest.importorskip("cellbench.synthetic")
    from ctc_metrics.scripts.evaluate import evaluate_sequence

    for i, sample in enumerate(synthetic.timelapse(n_sequences=2, n_frames=12, seed=3)):
        gt = tmp_path / f"gt{i}" / "TRA"
        gt.mkdir(parents=True)
        for t, frame in enumerate(sample.instances):
            tifffile.imwrite(gt / f"man_track{t:03d}.tif", frame.astype(np.uint16))
        np.savetxt(gt / "man_track.txt", sample.tracks, fmt="%d")
        labels, tracks = link(sample.instances)
        assert_ctc_valid(labels, tracks)
        res = write_ctc_result(TrackedSequence(labels, tracks), tmp_path / f"res{i}")
        scores = evaluate_sequence(str(res), str(gt.parent), metrics=["TRA", "LNK"], threads=1)
        assert scores["TRA"] > 0.99 and scores["LNK"] > 0.97, scores
