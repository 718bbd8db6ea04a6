"""Tracking predictions on disk: Cell Tracking Challenge result folders.

A folder holding one ``<sample_id>_RES/`` folder per sequence, each in the CTC result layout:
``mask###.tif`` (one label image per frame) and ``res_track.txt`` (``L B E P`` per track).
Every folder is checked against the CTC rules when it is read.
"""

from __future__ import annotations

from pathlib import Path

from cellbench.errors import ValidationError
from cellbench.predictions import Prediction, PredictionSet


def read_result_folders(path: Path, task: str) -> PredictionSet:
    """A lazily read set of ``<sample_id>_RES`` folders.

    Raises:
        ValidationError: If ``path`` holds no ``*_RES`` folder.
    """
    from cellbench.tasks.tracking.ctc import read_ctc_result

    folders = sorted(p for p in path.iterdir() if p.is_dir() and p.name.endswith("_RES"))
    if not folders:
        raise ValidationError([f"no <sample_id>_RES folders found for task {task}"], str(path))
    by_id = {f.name[: -len("_RES")]: f for f in folders}

    def load(sid: str) -> Prediction:
        seq = read_ctc_result(by_id[sid])
        return Prediction(sample_id=sid, mask=seq.labels, tracks=seq.tracks)

    return PredictionSet(task=task, source=path, _loader=load, _ids=list(by_id))
