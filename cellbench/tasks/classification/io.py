"""Classification predictions on disk: a CSV of one row per sample.

``sample_id,label[,score_<class>...]``: the label as a class index or a class name; optional
score columns named after the classes (``score_<name>``) or their indices (``score_<i>``), in
class order, needed for top-k accuracy and ROC-AUC.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cellbench.errors import ValidationError
from cellbench.predictions import Prediction, PredictionSet, read_csv_rows
from cellbench.store.sample import SAMPLE_ID_PATTERN


def read_classification_csv(path: Path, class_names: Sequence[str] | None) -> PredictionSet:
    """Read a classification CSV, listing every problem at once.

    Args:
        path: The CSV file.
        class_names: The dataset's classes (to accept names as labels and check score columns).

    Raises:
        ValidationError: For a wrong header, labels that are neither index nor name, scores
            that are not numbers, or samples listed twice.
    """
    problems: list[str] = []
    preds: list[Prediction] = []
    header, rows = read_csv_rows(path)
    if "sample_id" not in header or "label" not in header:
        raise ValidationError(
            [f"CSV header must contain 'sample_id' and 'label' (found {header[:10]})"], str(path)
        )
    score_cols = [c for c in header if c.startswith("score_")]
    unknown = [c for c in header if c not in ("sample_id", "label") and c not in score_cols]
    if unknown:
        problems.append(
            f"column(s) {unknown[:5]} are not classification columns (sample_id, label, "
            "score_<class>): is this a CSV for another task?"
        )
    if class_names and score_cols:
        expected = [f"score_{c}" for c in class_names]
        by_index = [f"score_{i}" for i in range(len(class_names))]
        if score_cols not in (expected, by_index):
            problems.append(f"score columns {score_cols} must be {expected} or {by_index} in order")
    names = {c: i for i, c in enumerate(class_names or [])}
    for line_no, row in enumerate(rows, start=2):
        sid = (row.get("sample_id") or "").strip()
        if not SAMPLE_ID_PATTERN.fullmatch(sid):
            shown = sid if len(sid) <= 40 else sid[:37] + "..."
            problems.append(f"line {line_no}: sample_id {shown!r} is not a sample id")
            continue
        raw = (row.get("label") or "").strip()
        if raw in names:
            label = names[raw]
        elif re.fullmatch(r"-?\d{1,18}", raw):
            label = int(raw)
        else:
            shown = raw if len(raw) <= 40 else raw[:37] + "..."
            problems.append(
                f"line {line_no}: label {shown!r} is neither a class index nor a class name"
            )
            continue
        scores = None
        if score_cols:
            try:
                scores = np.array([float(row[c]) for c in score_cols], dtype=np.float32)
            except (TypeError, ValueError):
                problems.append(f"line {line_no}: scores must be numbers")
                continue
        preds.append(Prediction(sample_id=sid, label=label, scores=scores))
    if problems:
        raise ValidationError(problems, context=str(path))
    pset = PredictionSet.from_predictions("classification", preds)
    pset.source = path
    return pset
