"""Tracking predictions on disk: Cell Tracking Challenge result folders or GEFF graphs.

A folder holding one ``<sample_id>_RES/`` folder per sequence, each in the CTC result layout:
``mask###.tif`` (one label image per frame) and ``res_track.txt`` (``L B E P`` per track);
or one ``<sample_id>/`` folder per sequence holding a GEFF graph ``tracks/`` whose nodes link
to a label image through ``seg_id`` (see :mod:`cellbench.tasks.tracking.geff`). Every sequence
is checked (CTC rules; GEFF structure, seg_ids, divisions) when it is read.
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


def is_geff_folder(path: Path) -> bool:
    """Whether ``path`` holds ``<sample_id>/tracks`` GEFF graphs."""
    from cellbench.tasks.tracking.geff import GRAPH

    return any((p / GRAPH / "nodes").is_dir() for p in path.iterdir() if p.is_dir())


def read_geff_folders(path: Path, task: str) -> PredictionSet:
    """A lazily read set of ``<sample_id>/tracks`` GEFF graphs with their label images.

    A graph that is not already in CTC form is cut into CTC tracks (see
    :func:`cellbench.tasks.tracking.geff.read_sequence_geff`).
    """
    from cellbench.tasks.tracking.geff import GRAPH, read_sequence_geff

    by_id = {
        p.name: p for p in sorted(path.iterdir()) if p.is_dir() and (p / GRAPH / "nodes").is_dir()
    }

    def load(sid: str) -> Prediction:
        seq, _ = read_sequence_geff(by_id[sid])
        return Prediction(sample_id=sid, mask=seq.labels, tracks=seq.tracks)

    return PredictionSet(task=task, source=path, _loader=load, _ids=list(by_id))
