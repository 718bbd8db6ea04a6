"""CTC folder I/O: round trips and validation of bad result folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from tracking_cases import BASE_TABLE, base_gt, base_objects, paint
from tracking_synth import simulate

from cellbench.errors import ValidationError
from cellbench.metrics.tracking import CTCMeasures
from cellbench.tasks.tracking.ctc import (
    ctc_result_problems,
    frame_digits,
    parse_track_file,
    read_ctc_ground_truth,
    read_ctc_result,
    read_track_file,
    score_ctc_folders,
    validate_ctc_result,
    write_ctc_ground_truth,
    write_ctc_result,
    write_track_file,
)
from cellbench.tracks import SegAnnotation, TrackedSequence


def test_round_trip_2d_with_sparse_seg(tmp_path: Path) -> None:
    gt = base_gt(seg=True)
    write_ctc_ground_truth(gt, tmp_path / "01_GT")
    names = sorted(p.name for p in (tmp_path / "01_GT" / "TRA").iterdir())
    assert names == sorted([f"man_track{t:03d}.tif" for t in range(4)] + ["man_track.txt"])
    assert sorted(p.name for p in (tmp_path / "01_GT" / "SEG").iterdir()) == ["man_seg001.tif"]
    assert tifffile.imread(tmp_path / "01_GT" / "TRA" / "man_track002.tif").dtype == np.uint16
    back = read_ctc_ground_truth(tmp_path / "01_GT")
    assert np.array_equal(back.labels, gt.labels)
    assert back.tracks.tolist() == BASE_TABLE
    assert [(a.frame, a.z) for a in back.seg] == [(1, None)]
    assert np.array_equal(back.seg[0].labels, gt.seg[0].labels)
    write_ctc_result(gt, tmp_path / "01_RES")
    res = read_ctc_result(tmp_path / "01_RES", n_frames=4, shape=(20, 20))
    assert np.array_equal(res.labels, gt.labels) and res.tracks.tolist() == BASE_TABLE
    values = score_ctc_folders(tmp_path / "01_GT", tmp_path / "01_RES")["ctc"].values
    assert values["tra"] == values["det"] == values["seg"] == 1.0


def test_round_trip_3d_slices_and_four_digits(tmp_path: Path) -> None:
    gt = simulate(n_frames=3, shape=(6, 16, 16), n_cells=3, n_divisions=1, radius=3, seed=5)
    slices = tuple(SegAnnotation(t, gt.labels[t, 2].copy(), z=2) for t in range(3))
    gt = TrackedSequence(gt.labels, gt.tracks, seg=slices)
    write_ctc_ground_truth(gt, tmp_path / "GT", digits=4)
    write_ctc_result(gt, tmp_path / "RES", digits=4)
    assert (tmp_path / "GT" / "SEG" / "man_seg_0001_002.tif").is_file()
    assert (tmp_path / "RES" / "mask0002.tif").is_file()
    back = read_ctc_ground_truth(tmp_path / "GT")
    assert back.labels.shape == (3, 6, 16, 16) and back.problems() == []
    assert [(a.frame, a.z) for a in back.seg] == [(0, 2), (1, 2), (2, 2)]
    v = score_ctc_folders(tmp_path / "GT", tmp_path / "RES")["ctc"].values
    assert v["tra"] == 1.0 and v["seg"] == 1.0
    assert frame_digits(1000) == 3 and frame_digits(1001) == 4


def test_track_file_parsing(tmp_path: Path) -> None:
    f = tmp_path / "res_track.txt"
    f.write_text("1 0 3 0\n\n2\t1 1 0\n3 0 x 0\n4 0 1\n5 0 1 0 7\n")
    table, lines, problems = parse_track_file(f)
    assert table.tolist() == [[1, 0, 3, 0], [2, 1, 1, 0]] and lines == [1, 3]
    assert problems == [
        "res_track.txt line 4: expected 4 integers 'L B E P', got '3 0 x 0'",
        "res_track.txt line 5: expected 4 integers 'L B E P', got '4 0 1'",
        "res_track.txt line 6: expected 4 integers 'L B E P', got '5 0 1 0 7'",
    ]
    with pytest.raises(ValidationError) as err:
        read_track_file(f)
    assert len(err.value.problems) == 3
    write_track_file(f, np.array([[1, 0, 3, 0]]))
    assert f.read_text() == "1 0 3 0\n"
    assert read_track_file(f).dtype == np.int64


def test_bad_result_folder_lists_every_problem(tmp_path: Path) -> None:
    gt = base_gt()
    write_ctc_ground_truth(gt, tmp_path / "01_GT")
    res_dir = tmp_path / "01_RES"
    lab = paint(base_objects())
    lab[2][lab[2] == 1] = 0  # track 1 jumps over frame 2 without a parent link
    lab[0, 18:20, 0:2] = 9  # label 9 is not in res_track.txt
    write_ctc_result(TrackedSequence(lab, BASE_TABLE), res_dir)
    # Parent 2 now ends after its daughter 3 begins; a malformed line; a track never drawn.
    (res_dir / "res_track.txt").write_text(
        "1 0 3 0\n2 0 2 0\n3 1 3 2\n4 2 3 2\n5 1 3 0\n6 0 0 0\n12 0 1 0\nbad line\n"
    )
    tifffile.imwrite(res_dir / "mask001.tif", lab[1].astype(np.float32))  # wrong dtype
    (res_dir / "mask003.tif").unlink()  # missing frame
    tifffile.imwrite(res_dir / "mask004.tif", lab[0])  # extra frame
    tifffile.imwrite(res_dir / "notes.tif", lab[0])  # unexpected file
    with pytest.raises(ValidationError) as err:
        read_ctc_result(res_dir, n_frames=4, shape=(20, 20))
    assert err.value.context == str(res_dir)
    text = "\n".join(err.value.problems)
    expected = [
        "unexpected TIFF file notes.tif",
        "1 frame file(s) missing: frames 3 (mask003.tif)",
        "mask004.tif (frame 4) is beyond the 4 frames of the sequence",
        "mask001.tif (frame 1): dtype float32, expected uint16",
        "res_track.txt line 8: expected 4 integers 'L B E P', got 'bad line'",
        "res_track.txt line 3 (3 1 3 2): parent 2 ends at frame 2, not before its daughter 3 "
        "begins at frame 1",
        "track 1 (B=0, E=3 in res_track.txt) is absent from frame 2 (mask002.tif)",
        "label 9 is present in frame 0 (mask000.tif) but is not a track in res_track.txt",
        "track 12 (B=0, E=1 in res_track.txt) is absent from frame 0 (mask000.tif)",
    ]
    for line in expected:
        assert line in text, line
    # Frames that could not be read are not reported as absent tracks.
    assert "frames 1" not in text and "frame 3 (" not in text
    seq, problems = ctc_result_problems(res_dir, n_frames=4, shape=(20, 20))
    assert seq is not None and problems == err.value.problems


def test_wrong_shape_and_frame_count(tmp_path: Path) -> None:
    res_dir = tmp_path / "RES"
    write_ctc_result(base_gt(), res_dir)
    tifffile.imwrite(res_dir / "mask002.tif", np.zeros((20, 21), np.uint16))
    with pytest.raises(ValidationError) as err:
        validate_ctc_result(res_dir, n_frames=6, shape=(20, 20))
    text = str(err.value)
    assert "mask002.tif (frame 2): shape (20, 21), expected (20, 20)" in text
    assert "2 frame file(s) missing: frames 4-5 (mask004.tif, mask005.tif)" in text
    _, problems = ctc_result_problems(tmp_path / "nowhere")
    assert problems == [f"result folder {tmp_path / 'nowhere'} does not exist"]
    (res_dir / "res_track.txt").unlink()
    _, problems = ctc_result_problems(res_dir, n_frames=4, shape=(20, 20))
    assert "res_track.txt is missing" in problems


def test_bad_ground_truth_and_unwritable(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="no TRA folder"):
        read_ctc_ground_truth(tmp_path)
    gt = base_gt()
    write_ctc_ground_truth(gt, tmp_path / "GT")
    (tmp_path / "GT" / "TRA" / "man_track.txt").write_text("1 0 3 0\n")
    with pytest.raises(ValidationError) as err:
        read_ctc_ground_truth(tmp_path / "GT")
    assert "label 2 is present in frames 0-1 (man_track000.tif to man_track001.tif)" in str(
        err.value
    )
    big = TrackedSequence(gt.labels.astype(np.int64) * 70000, gt.tracks)
    with pytest.raises(ValidationError, match="fit in uint16"):
        write_ctc_result(big, tmp_path / "X")


def test_score_rejects_invalid_result(tmp_path: Path) -> None:
    write_ctc_ground_truth(base_gt(), tmp_path / "GT")
    lab = paint(base_objects())
    lab[1][lab[1] == 1] = 0
    write_ctc_result(TrackedSequence(lab, BASE_TABLE), tmp_path / "RES")
    with pytest.raises(ValidationError, match="absent from frame 1"):
        score_ctc_folders(tmp_path / "GT", tmp_path / "RES", [CTCMeasures()])
