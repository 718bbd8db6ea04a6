"""Instance segmentation predictions on disk: a folder of label images with optional scores.

``<sample_id>.tif`` (or ``.tiff``, ``.png``, ``.npy``): one integer label image per sample,
0 = background;
``scores.csv`` beside them (``sample_id,object_id,score``): the confidence of each object, used
to rank detections for COCO AP (score every object of an image or none).

Cellpose's output names are recognised: ``<sample_id>_cp_masks.tif`` (or ``.png``, Cellpose's
default) is the prediction of ``<sample_id>`` (a warning says the suffix was stripped), and
Cellpose's ``<id>_seg.npy`` files (pickled dicts, never unpickled) are refused with a message
saying to save ``_cp_masks.tif``.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np

from cellbench.errors import ValidationError
from cellbench.predictions import Prediction, PredictionSet, read_csv_rows, read_image_folder
from cellbench.store.sample import SAMPLE_ID_PATTERN
from cellbench.tasks.instance_segmentation.cellpose import CP_MASKS, SEG_NPY, seg_npy_problem

#: The COCO results file in a predictions folder (see :mod:`.coco_results`).
RESULTS = "results.json"


def is_results_path(path: Path) -> bool:
    """Whether ``path`` is a COCO results JSON file or a folder holding :data:`RESULTS`.

    Here, not in :mod:`.coco_results`, so that telling the two kinds of predictions apart
    does not import the COCO machinery (label-image folders, the common case, never need it).
    """
    if path.is_file():
        return path.suffix.lower() == ".json"
    return path.is_dir() and (path / RESULTS).is_file()


def read_scores_csv(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Read ``sample_id,object_id,score`` rows: ``{sample_id: (object ids, scores)}``.

    Raises:
        ValidationError: For a wrong header or rows whose id or score is not a number.
    """
    table: dict[str, tuple[list[int], list[float]]] = {}
    problems = []
    header, rows = read_csv_rows(path)
    need = {"sample_id", "object_id", "score"}
    if not need <= set(header):
        raise ValidationError(
            [f"header must be sample_id,object_id,score (found {header[:10]})"], str(path)
        )
    for line_no, row in enumerate(rows, start=2):
        sid = (row.get("sample_id") or "").strip()
        if not SAMPLE_ID_PATTERN.fullmatch(sid):
            shown = sid if len(sid) <= 40 else sid[:37] + "..."
            problems.append(f"line {line_no}: sample_id {shown!r} is not a sample id")
            continue
        raw_id = (row.get("object_id") or "").strip()
        try:
            if not re.fullmatch(r"\d{1,18}", raw_id):
                raise ValueError(raw_id)
            oid, score = int(raw_id), float(row["score"])
        except (TypeError, ValueError):
            problems.append(f"line {line_no}: object_id must be an int and score a number")
            continue
        ids, scores = table.setdefault(sid, ([], []))
        ids.append(oid)
        scores.append(score)
    if problems:
        raise ValidationError(problems, context=str(path))
    return {k: (np.asarray(v[0], np.int64), np.asarray(v[1], np.float64)) for k, v in table.items()}


def read_label_folder(path: Path, task: str) -> PredictionSet:
    """Label images ``<sample_id>.tif`` with the object scores of ``scores.csv`` if present."""
    scores = {}
    if (path / "scores.csv").is_file():
        scores = read_scores_csv(path / "scores.csv")

    def add_scores(prediction: Prediction) -> Prediction:
        if prediction.sample_id in scores:
            prediction.object_ids, prediction.object_scores = scores[prediction.sample_id]
        return prediction

    refused = [seg_npy_problem(p.name) for p in sorted(path.iterdir()) if p.name.endswith(SEG_NPY)]
    if refused:
        raise ValidationError(refused, str(path))
    stems = [p.stem for p in path.iterdir() if p.suffix.lower() in (".tif", ".tiff", ".png")]
    cellpose = [s for s in stems if s.endswith(CP_MASKS)]
    if not cellpose:
        return read_image_folder(path, task, "mask", finish=add_scores)
    warnings.warn(
        f"{path}: {len(cellpose)} Cellpose file name(s) <sample_id>{CP_MASKS}.tif|png: the suffix "
        f"{CP_MASKS} is stripped to give the sample id (e.g. {cellpose[0]} -> "
        f"{cellpose[0][: -len(CP_MASKS)]})",
        UserWarning,
        stacklevel=2,
    )
    return read_image_folder(path, task, "mask", finish=add_scores, sample_id_of=strip_cp_masks)


def strip_cp_masks(stem: str) -> str:
    """The sample id of a Cellpose output stem (``<id>_cp_masks`` -> ``<id>``)."""
    return stem[: -len(CP_MASKS)] if stem.endswith(CP_MASKS) else stem
