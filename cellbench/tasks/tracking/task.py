"""Cell tracking with divisions (Cell Tracking Challenge measures).

Ground truth: per-frame instance labels ``(t, [z,] y, x)`` and the track table (``track_id,
start, end, parent``, the CTC ``man_track.txt``) of each sequence; the instance labels serve
as TRA markers, and as SEG annotation too (every object of every frame) unless the sequence
carries sparse SEG truth (store format 3, from CTC ``man_seg`` files), which SEG then uses:
only the annotated frames or slices, and in them only the annotated objects, count.
Predictions: relabelled masks of the same shape with a CTC result track table, in the canonical
format, as ``<sample_id>_RES`` folders or as GEFF graphs ``<sample_id>/tracks`` linked to a label
image by ``seg_id``; all are checked against every CTC rule.

Metrics: DET, SEG, TRA, LNK, OP_CSB, OP_CTB and the AOGM operation counts (Matula et al. 2015),
division precision/recall/F1 with a 1-frame tolerance, complete tracks, branching correctness,
cell cycle accuracy, HOTA (CTC variant) and CHOTA, and MOTA/IDF1 twice: CLEAR MOT (``mot/...``)
and the CTC tools' convention (``mot_ctc/...``). Headline: OP_CTB = (SEG + TRA) / 2, the CTC's
Cell Tracking Benchmark score, pooled over sequences (operation counts summed before dividing).
Bootstrap unit: the sequence.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from cellbench.metrics.base import Metric
from cellbench.predictions import Prediction, PredictionSet
from cellbench.store.zarr_store import DatasetStore
from cellbench.tasks.base import Control, OutputSpec, Task, check_label_image

if TYPE_CHECKING:
    from cellbench.leaderboard.ranking import Leaderboard

if TYPE_CHECKING:
    from cellbench.tasks.training import TaskTraining

#: Frames of tolerance when matching predicted to true divisions.
DIVISION_FRAME_TOLERANCE = 1


class TrackingTask(Task):
    """Segmentation and tracking of cells over time, divisions included."""

    name: ClassVar[str] = "tracking"
    title: ClassVar[str] = "Cell tracking with divisions"
    headline: ClassVar[str] = "ctc/op_ctb"
    direction: ClassVar[str] = "higher"
    resampling_unit: ClassVar[str] = "sequence"
    ground_truth_fields: ClassVar[tuple[str, ...]] = ("image", "instances", "tracks")
    prediction_fields: ClassVar[tuple[str, ...]] = ("mask", "tracks")
    prediction_formats: ClassVar[tuple[str, ...]] = (
        "folder of Cell Tracking Challenge result folders <sample_id>_RES/ "
        "(mask###.tif + res_track.txt)",
        "folder of GEFF graphs <sample_id>/tracks/ with seg_id linking nodes to a label image "
        "(related object 'labels', e.g. <sample_id>/labels)",
    )
    accepts_models: ClassVar[bool] = False
    key_metrics: ClassVar[tuple[str, ...]] = ("ctc/seg", "ctc/tra", "divisions/f1")
    error_breakdown: ClassVar[dict[str, tuple[tuple[str, str], ...]]] = {
        "Graph operations to fix (AOGM)": (
            ("cell splits", "ctc/ns"),
            ("missing cells", "ctc/fn"),
            ("spurious cells", "ctc/fp"),
            ("redundant links", "ctc/ed"),
            ("missing links", "ctc/ea"),
            ("wrong link type", "ctc/ec"),
        ),
        "Division errors": (
            ("missed", "divisions/fn"),
            ("false", "divisions/fp"),
            ("wrong children", "divisions/wc"),
        ),
    }

    def ground_truth(self, store: DatasetStore, sample_id: str) -> Any:
        """The sequence as a :class:`~cellbench.tracks.TrackedSequence`.

        SEG is scored on the sequence's sparse SEG truth where the store has one (CTC
        ``man_seg``: only the annotated frames or slices, and in them only the drawn objects);
        otherwise the instance labels double as SEG truth (every object of every frame).
        """
        from cellbench.tracks import SegAnnotation, TrackedSequence, seg_annotations

        labels = store.read_labels(sample_id, "instances")
        if store.has_seg_truth(sample_id):
            seg_arr, annotated = store.read_seg_truth(sample_id)
            seg = seg_annotations(seg_arr, annotated)
        else:
            seg = tuple(SegAnnotation(frame=t, labels=labels[t]) for t in range(labels.shape[0]))
        return TrackedSequence(
            labels=labels, tracks=store.tracks(sample_id), seg=seg, name=sample_id
        )

    def _as_sequence(self, name: str, prediction: Prediction) -> Any:
        from cellbench.tracks import TrackedSequence

        tracks = np.zeros((0, 4), np.int64) if prediction.tracks is None else prediction.tracks
        return TrackedSequence(
            labels=np.asarray(prediction.mask),
            tracks=np.asarray(tracks).astype(np.int64, copy=False).reshape(-1, 4),
            name=f"{name} (prediction)",
        )

    def expected_output(self, store: DatasetStore, sample_id: str, truth: Any) -> OutputSpec:
        """A label movie of the ground truth's shape ``(t, [z,] y, x)``."""
        return OutputSpec(tuple(truth.labels.shape), store.axes(sample_id).replace("c", ""))

    def check_output(self, prediction: Prediction, expect: OutputSpec, where: str) -> list[str]:
        """Mask movie of the expected shape and a track table obeying the CTC rules."""
        out = check_label_image(where, "mask", prediction.mask, expect.shape, expect.axes)
        if prediction.tracks is None:
            out.append(f"{where}: no track table predicted (n, 4: track_id, start, end, parent)")
        else:
            t = np.asarray(prediction.tracks)
            if t.ndim != 2 or t.shape[1] != 4 or t.dtype.kind not in "ui":
                out.append(
                    f"{where}: tracks must be an (n, 4) integer table, got {t.shape} {t.dtype}"
                )
        if out:
            return out
        seq = self._as_sequence(where, prediction)
        return [f"{where}: {p}" for p in seq.problems()]

    def read_predictions(
        self, path: Path, class_names: Sequence[str] | None = None
    ) -> PredictionSet:
        """CTC result folders ``<sample_id>_RES`` or GEFF graphs ``<sample_id>/tracks``."""
        if path.is_dir():
            from cellbench.tasks.tracking.io import (
                is_geff_folder,
                read_geff_folders,
                read_result_folders,
            )

            if is_geff_folder(path):
                return read_geff_folders(path, self.name)
            return read_result_folders(path, self.name)
        return super().read_predictions(path, class_names)

    def training(self) -> TaskTraining:
        """Training and inference hooks (:mod:`cellbench.tasks.tracking.training`)."""
        from cellbench.tasks.tracking.training import TrackingTraining

        return TrackingTraining(self)

    def metrics(self, store: DatasetStore, split: str) -> list[Metric]:
        """CTC measures, divisions, CT/TF, BC(i), CCA, HOTA/CHOTA, MOTA/IDF1 (both conventions)."""
        from cellbench.metrics.tracking import (
            BranchingCorrectness,
            CellCycleAccuracy,
            CompleteTracks,
            CTCMeasures,
            CTCMOTMetrics,
            DivisionMetrics,
            HOTAMetrics,
            MOTMetrics,
        )

        return [
            CTCMeasures(),
            DivisionMetrics(frame_tolerance=DIVISION_FRAME_TOLERANCE),
            CompleteTracks(),
            BranchingCorrectness(),
            CellCycleAccuracy(),
            HOTAMetrics(),
            MOTMetrics(),
            CTCMOTMetrics(),
        ]

    def sample_stats(
        self, metrics: Sequence[Metric], sample_id: str, truth: Any, prediction: Prediction
    ) -> list[Any]:
        """Match the sequence once; every tracking metric reduces that one match."""
        from cellbench.metrics.tracking import match_tracking

        match = match_tracking(truth, self._as_sequence(sample_id, prediction), validate=False)
        return [m.measure(match, sample_id) for m in metrics]

    def controls(self, store: DatasetStore, split: str) -> list[Control]:
        """Otsu + watershed with nearest-neighbour linking, and perfect (see ``controls.py``)."""
        from cellbench.tasks.tracking.controls import tracking_controls

        return tracking_controls()

    def board_pictures(
        self, board: Leaderboard, folder: Path, *, top_k: int, base: Path | None
    ) -> tuple[list[Any], list[str]]:
        """Tracks over frames and lineage trees with their errors (see ``pictures.py``)."""
        from cellbench.tasks.tracking.pictures import render_pictures

        return render_pictures(self, board, folder, top_k=top_k, base=base)
