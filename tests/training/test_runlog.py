import csv
import json

import numpy as np
from sklearn.metrics import confusion_matrix as sk_confusion

from cellbench.training.runlog import (
    confusion_matrix,
    plot_confusion,
    plot_curves,
    read_metrics,
    write_metrics,
)


def test_confusion_matrix_matches_scikit_learn():
    rng = np.random.default_rng(0)
    y, p = rng.integers(0, 4, 200), rng.integers(0, 4, 200)
    np.testing.assert_array_equal(confusion_matrix(y, p, 4), sk_confusion(y, p, labels=range(4)))


def test_metrics_files_union_columns_and_plots(tmp_path):
    records = [
        {"epoch": 1, "train_loss": 1.0, "val_loss": 0.9},
        {"epoch": 2, "train_loss": 0.8, "val/coco_ap/ap": 0.4, "val_loss": float("nan")},
    ]
    write_metrics(tmp_path, records)
    back = read_metrics(tmp_path)
    assert back[0] == records[0] and back[1]["val_loss"] is None  # NaN is written as null
    with (tmp_path / "metrics.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["epoch", "train_loss", "val_loss", "val/coco_ap/ap"]
    assert rows[0]["val/coco_ap/ap"] == "" and rows[1]["val/coco_ap/ap"] == "0.4"
    json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[1])
    plot_curves(records, tmp_path / "curves.png", headline="coco_ap/ap")
    plot_confusion(np.array([[5, 1], [0, 3]]), ["a", "b"], tmp_path / "cm.png")
    for name in ("curves.png", "cm.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind
