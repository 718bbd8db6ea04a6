"""The ``ctc`` format: CTC dataset folders (several sequences, gold/silver SEG) in and out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from tracking_synth import simulate

from cellbench.errors import ValidationError
from cellbench.formats.registry import get_format, read_samples, write_samples
from cellbench.store.sample import Sample
from cellbench.store.zarr_store import build_store
from cellbench.tasks.tracking.ctc import read_ctc_ground_truth, score_ctc_folders
from cellbench.tracks import SegAnnotation, seg_arrays

CARD = {"id": "ctc-test", "version": "1", "tasks": ["tracking"]}


def _samples(three_d: bool) -> list[Sample]:
    out = []
    for i, seed in enumerate((1, 2)):
        shape = (5, 20, 20) if three_d else (32, 32)
        gt = simulate(n_frames=5, shape=shape, n_cells=3, n_divisions=1, radius=3.0, seed=seed)
        labels = gt.labels.astype(np.uint16)
        rng = np.random.default_rng(seed)
        image = rng.integers(0, 4000, size=(5, 1, *shape), dtype=np.uint16)
        if three_d:  # one annotated slice of frame 1, one whole frame 3
            ann = (SegAnnotation(1, labels[1, 2].copy(), z=2), SegAnnotation(3, labels[3].copy()))
        else:
            ann = (SegAnnotation(0, labels[0].copy()), SegAnnotation(4, labels[4].copy()))
        s = Sample(
            id=f"0{i + 1}",
            image=image,
            axes="tczyx" if three_d else "tcyx",
            channel_names=["GFP"],
            split="train" if i == 0 else "test",
            pixel_size={"x": 0.65, "y": 0.65, "t": 300.0} | ({"z": 2.0} if three_d else {}),
            metadata={"cell_line": "HeLa", "frame_gap": 5},
            instances=labels,
            tracks=gt.tracks,
        )
        s.seg, s.seg_annotated = seg_arrays(ann, labels.shape)
        out.append(s)
    return out


@pytest.mark.parametrize("three_d", [False, True])
def test_store_ctc_store_round_trip_is_bit_exact(tmp_path: Path, three_d: bool) -> None:
    first = build_store(_samples(three_d), tmp_path / "a.zarr", CARD)
    write_samples("ctc", first.samples(), tmp_path / "ctc")
    names = sorted(p.name for p in (tmp_path / "ctc").iterdir())
    assert names == ["01", "01_GT", "02", "02_GT", "cellbench.json"]
    assert (
        tifffile.imread(tmp_path / "ctc" / "02" / "t004.tif").shape == first.image("02").shape[2:]
    )
    seg_files = sorted(p.name for p in (tmp_path / "ctc" / "01_GT" / "SEG").iterdir())
    assert seg_files == (
        ["man_seg003.tif", "man_seg_001_002.tif"]
        if three_d
        else ["man_seg000.tif", "man_seg004.tif"]
    )
    back = build_store(read_samples("ctc", tmp_path / "ctc"), tmp_path / "b.zarr", CARD)
    assert back.format.version == first.format.version == "3"
    assert back.checksum == first.checksum
    for sid in ("01", "02"):
        a, b = first.sample(sid), back.sample(sid)
        for name in ("image", "instances", "tracks", "seg", "seg_annotated"):
            assert np.array_equal(getattr(a, name), getattr(b, name)), name
        assert (a.split, a.pixel_size, a.metadata) == (b.split, b.pixel_size, b.metadata)
    # the written folders are plain CTC: the CTC scorer reads them (a perfect result)
    gt = read_ctc_ground_truth(tmp_path / "ctc" / "01_GT")
    assert len(gt.seg) == 2


def test_silver_truth_and_image_only_sequences(tmp_path: Path) -> None:
    samples = _samples(False)
    write_samples("ctc", samples, tmp_path / "ctc", seg="silver")
    assert (tmp_path / "ctc" / "01_ST" / "SEG" / "man_seg004.tif").is_file()
    assert not (tmp_path / "ctc" / "01_GT" / "SEG").exists()
    silver = list(read_samples("ctc", tmp_path / "ctc", seg="silver"))
    assert silver[0].seg_annotated.tolist() == [[0, -1], [4, -1]]
    gold = list(read_samples("ctc", tmp_path / "ctc"))
    assert [s.id for s in read_samples("ctc", tmp_path / "ctc", sequences="02")] == ["02"]
    with pytest.raises(ValidationError, match="sequence '03' not found"):
        list(read_samples("ctc", tmp_path / "ctc", sequences="01,03"))
    assert gold[0].seg is None and np.array_equal(gold[0].instances, samples[0].instances)
    # a CTC test sequence (no _GT): image only
    (tmp_path / "ctc" / "cellbench.json").unlink()
    (tmp_path / "ctc" / "02_GT").rename(tmp_path / "02_GT_moved")
    only = list(read_samples("ctc", tmp_path / "ctc", seg="none", split="val"))
    assert only[1].instances is None and only[1].split == "val"
    assert only[1].axes == "tcyx" and only[1].image.shape == (5, 1, 32, 32)


def test_validator_lists_every_problem_at_once(tmp_path: Path) -> None:
    samples = _samples(False)[:1]
    root = tmp_path / "ctc"
    write_samples("ctc", samples, root)
    tra = root / "01_GT" / "TRA"
    table = samples[0].tracks
    lab = samples[0].instances
    ids0 = [int(i) for i in np.unique(lab[2]) if i]
    # label absent in a frame inside its span, and a float (non-integer) mask
    f2 = lab[2].copy()
    f2[f2 == ids0[0]] = 0
    tifffile.imwrite(tra / "man_track002.tif", f2)
    tifffile.imwrite(tra / "man_track003.tif", lab[3].astype(np.float32))
    # an object in two pieces and a label present outside its span (frame 0)
    f1 = lab[1].copy()
    f1[0, 0] = ids0[1]
    f1[31, 31] = 999
    tifffile.imwrite(tra / "man_track001.tif", f1)
    # missing raw frame, duplicate id, parent ending after its daughter begins
    late = next(r for r in table.tolist() if r[1] >= 2)  # a track that starts at frame >= 2
    f0 = lab[0].copy()
    f0[-3:, -3:] = late[0]  # ... drawn in frame 0, outside its span
    tifffile.imwrite(tra / "man_track000.tif", f0)
    (root / "01" / "t004.tif").unlink()
    truncated = (root / "01" / "t002.tif").read_bytes()
    (root / "01" / "t002.tif").write_bytes(truncated[: len(truncated) // 3])
    daughters = table[table[:, 3] > 0]
    assert daughters.size, "the generated case divides"
    rows = table.tolist()
    rows.append(rows[0])
    for r in rows:
        if r[0] == daughters[0, 0]:
            r[1] = max(0, r[1] - 1)  # begins one frame earlier: its parent has not ended
    (tra / "man_track.txt").write_text("".join(f"{a} {b} {c} {d}\n" for a, b, c, d in rows))
    problems = get_format("ctc").validate(root)
    text = "\n".join(problems)
    assert "01: 1 frame file(s) missing: frames 4" in text
    assert "01/t002.tif (frame 2): cannot be read as a TIFF" in text
    assert "man_track003.tif (frame 3): dtype float32, expected uint16" in text
    assert f"track id {rows[0][0]} is defined 2 times" in text
    assert "not before its daughter" in text
    assert "label 999 is present in frame 1" in text and "not a track" in text
    assert (
        f"label {late[0]} is present in frame 0 (man_track000.tif), outside its track span" in text
    )
    assert f"track {ids0[0]} " in text and "is absent from frame 2" in text
    assert f"man_track001.tif (frame 1): label(s) {ids0[1]} are in more than one piece" in text
    assert all(p.startswith(("01", "sample")) for p in problems), problems
    with pytest.raises(ValidationError) as err:
        list(read_samples("ctc", root))
    assert len(err.value.problems) >= 6


def test_writer_refuses_what_ctc_cannot_hold(tmp_path: Path) -> None:
    s = _samples(False)[0]
    s.image = np.concatenate([s.image, s.image], axis=1)
    s.channel_names = ["a", "b"]
    with pytest.raises(ValidationError, match="2 channels; CTC frames hold one channel"):
        write_samples("ctc", [s], tmp_path / "out")
    with pytest.raises(ValidationError, match="seg='bronze'"):
        list(read_samples("ctc", tmp_path, seg="bronze"))


def test_written_folders_score_with_the_ctc_scorer(tmp_path: Path) -> None:
    s = _samples(False)[0]
    write_samples("ctc", [s], tmp_path / "ctc")
    from cellbench.tasks.tracking.ctc import write_ctc_result
    from cellbench.tracks import TrackedSequence

    write_ctc_result(TrackedSequence(s.instances, s.tracks), tmp_path / "ctc" / "01_RES")
    values = score_ctc_folders(tmp_path / "ctc" / "01_GT", tmp_path / "ctc" / "01_RES")
    assert values["ctc"].values["seg"] == values["ctc"].values["tra"] == 1.0
