"""Link the ground-truth masks of synthetic time-lapses and score the lineage with py-ctcmetrics.

This isolates the linker (:func:`cellbench.training.models.tracking.link`) from detection: the
input is the exact per-frame segmentation with its ids shuffled away, so every TRA/LNK/BC error
is a linking error. Needs ``cellbench.synthetic`` and ``py-ctcmetrics`` (test extra).

    python baselines/tracking/tracker/link_ground_truth.py
"""

from __future__ import annotations

import contextlib
import io
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import tifffile


def evaluate(n_sequences: int = 4, n_frames: int = 30, size: int = 192, seed: int = 1) -> None:
    """Print TRA, LNK, BC(0) and the linking time per sequence for a few parameter settings."""
    from ctc_metrics.scripts.evaluate import evaluate_sequence

    from cellbench.synthetic import timelapse
    from cellbench.tasks.tracking.ctc import write_ctc_result
    from cellbench.tracks import TrackedSequence
    from cellbench.training.models.tracking import link

    samples = timelapse(n_sequences=n_sequences, n_frames=n_frames, shape=(size, size), seed=seed)
    settings = {
        "defaults": {},
        "max_distance=10": {"max_distance": 10.0},
        "no divisions": {"divisions": False},
        "no gap closing": {"max_gap": 0},
    }
    print(f"{n_sequences} sequences, {n_frames} frames of {size}x{size} (seed {seed})")
    print(f"{'setting':<16} {'TRA':>7} {'LNK':>7} {'BC(0)':>7} {'s/sequence':>11}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for i, s in enumerate(samples):
            tra = root / f"gt{i}" / "TRA"
            tra.mkdir(parents=True)
            for t, frame in enumerate(s.instances):
                tifffile.imwrite(tra / f"man_track{t:03d}.tif", frame.astype(np.uint16))
            np.savetxt(tra / "man_track.txt", s.tracks, fmt="%d")
        for name, kwargs in settings.items():
            scores: dict[str, list[float]] = {"TRA": [], "LNK": [], "BC(0)": []}
            seconds = []
            for i, s in enumerate(samples):
                start = time.perf_counter()
                labels, tracks = link(s.instances, **kwargs)
                seconds.append(time.perf_counter() - start)
                res = write_ctc_result(TrackedSequence(labels, tracks), root / f"res-{name}-{i}")
                with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    out = evaluate_sequence(
                        str(res), str(root / f"gt{i}"), metrics=["TRA", "LNK", "BC"], threads=1
                    )
                for key in scores:
                    scores[key].append(float(out[key]))
            print(
                f"{name:<16} {np.mean(scores['TRA']):7.4f} {np.mean(scores['LNK']):7.4f} "
                f"{np.mean(scores['BC(0)']):7.4f} {np.mean(seconds):11.3f}"
            )


if __name__ == "__main__":
    evaluate()
