"""Scoring a Cell Tracking Challenge result folder against its ground-truth folder."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from cellbench.metrics.base import Metric, MetricResult
from cellbench.metrics.tracking.ctc_measures import CTCMeasures
from cellbench.metrics.tracking.divisions import DivisionMetrics
from cellbench.metrics.tracking.matching import TrackingMatch, match_tracking


def score_ctc_folders(
    gt_dir: str | os.PathLike,
    res_dir: str | os.PathLike,
    metrics: Sequence[Metric[TrackingMatch, Any]] | None = None,
    sample_id: str | None = None,
) -> dict[str, MetricResult]:
    """Score one CTC result folder against its ground-truth folder.

    Args:
        gt_dir: The ``<seq>_GT`` folder (``TRA`` and optional ``SEG``).
        res_dir: The ``<seq>_RES`` folder (``mask###.tif`` and ``res_track.txt``).
        metrics: Tracking metrics to compute (default: :class:`CTCMeasures` and
            :class:`DivisionMetrics`).
        sample_id: Identifier of the sequence in the results (default: the GT folder name).

    Returns:
        ``{metric.name: MetricResult}``.

    Raises:
        ValidationError: If either folder breaks the CTC rules (every problem listed).
    """
    from cellbench.ingest.ctc import read_ctc_ground_truth, read_ctc_result

    gt = read_ctc_ground_truth(gt_dir)
    res = read_ctc_result(res_dir, n_frames=gt.n_frames, shape=gt.spatial_shape)
    match = match_tracking(gt, res, validate=False)
    chosen: list[Metric[TrackingMatch, Any]] = (
        list(metrics) if metrics is not None else [CTCMeasures(), DivisionMetrics()]
    )
    sid = sample_id or os.path.basename(os.path.normpath(str(gt_dir)))
    return {m.name: m.compute([match], sample_ids=[sid]) for m in chosen}
