"""Classification predictions on disk: a CSV of one row per sample.

``sample_id,label[,score_<class>...]``: the label as a class index or a class name; optional
score columns named after the classes (``score_<name>``) or their indices (``score_<i>``), in
class order, needed for top-k accuracy and ROC-AUC.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cellbench.errors import ValidationError
from cellbench.predictions import Prediction, PredictionSet


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
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        if "sample_id" not in header or "label" not in header:
            raise ValidationError(
                [f"CSV header must contain 'sample_id' and 'label' (found {header})"], str(path)
            )
        score_cols = [c for c in header if c.startswith("score_")]
        if class_names and score_cols:
            expected = [f"score_{c}" for c in class_names]
            by_index = [f"score_{i}" for i in range(len(class_names))]
            if score_cols not in (expected, by_index):
                problems.append(
                    f"score columns {score_cols} must be {expected} or {by_index} in order"
                )
        names = {c: i for i, c in enumerate(class_names or [])}
        for line_no, row in enumerate(reader, start=2):
            raw = (row.get("label") or "").strip()
            if raw in names:
                label = names[raw]
            elif re.fullmatch(r"-?\d+", raw):
                label = int(raw)
            else:
                problems.append(
                    f"line {line_no}: label {raw!r} is neither a class index nor a class name"
                )
                continue
            scores = None
            if score_cols:
                try:
                    scores = np.array([float(row[c]) for c in score_cols], dtype=np.float32)
                except (TypeError, ValueError):
                    problems.append(f"line {line_no}: scores must be numbers")
                    continue
            preds.append(Prediction(sample_id=row["sample_id"].strip(), label=label, scores=scores))
    if problems:
        raise ValidationError(problems, context=str(path))
    pset = PredictionSet.from_predictions("classification", preds)
    pset.source = path
    return pset
