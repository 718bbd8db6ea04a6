"""A sixth task added entirely from this module: no file outside this test is edited.

Cell counting on an existing store (synthetic-nuclei): the ground truth of an image is its
number of instances, a prediction is one count per image read from a CSV, and the metric is
the mean absolute error (lower is better). The task is registered, its predictions are read,
scored with groups and a bootstrap interval, entered on leaderboards and published.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from cellbench.errors import ValidationError
from cellbench.leaderboard.site import publish
from cellbench.metrics.base import Metric
from cellbench.predictions import Prediction, PredictionSet
from cellbench.registry import pull
from cellbench.scoring import score
from cellbench.store.zarr_store import DatasetStore
from cellbench.submissions.core import add_report
from cellbench.submissions.manifest import parse_manifest
from cellbench.tasks import OutputSpec, Task, get_task, register, task_names, unregister


@dataclass(frozen=True)
class CountPair:
    """The input of one image: the true and the predicted number of cells."""

    true: int
    predicted: float


class CountError(Metric[CountPair, tuple[float, float]]):
    """Mean absolute error of cell counts: ``MAE = mean_i |n_pred_i - n_true_i|``.

    Range [0, inf); lower is better. Also the mean signed error (bias).
    """

    name = "count_error"
    lower_is_better = frozenset({"mae", "bias"})

    def inputs(self, true: Sequence[int], predicted: Sequence[float], **options: Any) -> list:
        return [CountPair(int(t), float(p)) for t, p in zip(true, predicted, strict=True)]

    def measure(self, sample: CountPair, sample_id: str) -> tuple[float, float]:
        return abs(sample.predicted - sample.true), sample.predicted - sample.true

    def aggregate(self, stats: Sequence[tuple[float, float]]) -> dict[str, float]:
        if not stats:
            return {"mae": float("nan"), "bias": float("nan")}
        arr = np.asarray(stats, dtype=np.float64)
        return {"mae": float(arr[:, 0].mean()), "bias": float(arr[:, 1].mean())}


class CellCountingTask(Task):
    """Count the cells of each image (served by any store with instance labels)."""

    name: ClassVar[str] = "cell-counting"
    title: ClassVar[str] = "Cell counting"
    headline: ClassVar[str] = "count_error/mae"
    direction: ClassVar[str] = "lower"
    ground_truth_fields: ClassVar[tuple[str, ...]] = ("image", "instances")
    prediction_fields: ClassVar[tuple[str, ...]] = ("values.count",)
    prediction_formats: ClassVar[tuple[str, ...]] = ("CSV sample_id,count",)
    accepts_models: ClassVar[bool] = False

    def check_dataset(self, store: DatasetStore) -> None:
        if "instances" not in store.fields:
            raise ValidationError(["no instance labels to count"], store.id)

    def ground_truth(self, store: DatasetStore, sample_id: str) -> int:
        labels = np.asarray(store.labels(sample_id, "instances")[...])
        return int(np.count_nonzero(np.unique(labels)))

    def expected_output(self, store: DatasetStore, sample_id: str, truth: Any) -> OutputSpec:
        return OutputSpec(shape=())

    def check_output(self, prediction: Prediction, expect: OutputSpec, where: str) -> list[str]:
        count = prediction.values.get("count")
        if count is None or not np.isfinite(count) or count < 0:
            return [f"{where}: count must be a finite number >= 0, got {count!r}"]
        return []

    def read_predictions(
        self, path: Path, class_names: Sequence[str] | None = None
    ) -> PredictionSet:
        with path.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        preds = [Prediction(r["sample_id"], values={"count": float(r["count"])}) for r in rows]
        pset = PredictionSet.from_predictions(self.name, preds)
        pset.source = path
        return pset

    def metrics(self, store: DatasetStore, split: str) -> list[Metric]:
        return [CountError()]

    def sample_stats(
        self, metrics: Sequence[Metric], sample_id: str, truth: Any, prediction: Prediction
    ) -> list[Any]:
        pair = CountPair(truth, float(prediction.values["count"]))
        return [m.measure(pair, sample_id) for m in metrics]


@pytest.fixture
def counting():
    task = register(CellCountingTask())
    yield task
    unregister(task.name)


@pytest.fixture(scope="module")
def nuclei(tmp_path_factory):
    return pull("synthetic-nuclei", options={"n_images": 16}, progress=False)


def _write_counts(path: Path, counts: dict[str, float]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["sample_id", "count"])
        w.writerows(counts.items())
    return path


def _manifest(name: str, submission: Path) -> Any:
    return parse_manifest(
        {
            "name": name,
            "authors": ["A. Counter"],
            "contact": "a@example.org",
            "code": {"url": "https://example.org/count", "commit": "abcdef1"},
            "training_data": "none",
            "n_parameters": 0,
            "seed": 0,
            "hardware": "cpu",
            "license": "MIT",
            "task": "cell-counting",
            "dataset": "synthetic-nuclei@1.0",
            "kind": "predictions",
            "submission": str(submission),
        },
        submission.parent / f"{name}.yaml",
    )


def test_a_task_registered_from_a_test_is_scored_and_ranked(counting, nuclei, tmp_path):
    assert "cell-counting" in task_names() and get_task("cell-counting") is counting
    ids = nuclei.sample_ids("test")
    truth = {sid: counting.ground_truth(nuclei, sid) for sid in ids}
    assert all(n > 0 for n in truth.values())

    off = {sid: n + (2 if i % 2 else -1) for i, (sid, n) in enumerate(truth.items())}
    report = score("cell-counting", nuclei, "test", _write_counts(tmp_path / "c.csv", off))
    errors = np.array([abs(off[s] - truth[s]) for s in ids], dtype=float)
    assert report.headline.value == pytest.approx(errors.mean())
    assert report.metrics["count_error/bias"] == pytest.approx(
        np.mean([off[s] - truth[s] for s in ids])
    )
    assert report.headline.direction == "lower"
    assert report.headline.ci_low <= report.headline.value <= report.headline.ci_high
    assert report.headline.ci_low >= errors.min() and report.headline.ci_high <= errors.max()
    assert report.groups
    for group in report.groups:
        assert sum(group.counts.values()) == len(ids)
        for level, values in group.values.items():
            members = [s for s in ids if str(nuclei.metadata(s)[group.field]) == level]
            assert values["count_error/mae"] == pytest.approx(
                np.mean([abs(off[s] - truth[s]) for s in members])
            )

    exact = score("cell-counting", nuclei, "test", _write_counts(tmp_path / "e.csv", truth))
    assert exact.headline.value == 0.0
    assert (exact.headline.ci_low, exact.headline.ci_high) == (0.0, 0.0)

    bad = {**truth, ids[0]: -3}
    with pytest.raises(ValidationError) as err:
        score("cell-counting", nuclei, "test", _write_counts(tmp_path / "b.csv", bad))
    assert f"sample {ids[0]!r}: count must be a finite number >= 0, got -3.0" in err.value.problems

    root = tmp_path / "boards"
    add_report(exact, _manifest("exact", tmp_path / "e.csv"), root=root)
    add_report(report, _manifest("off-by-some", tmp_path / "c.csv"), root=root)
    site = publish(root, tmp_path / "site")
    board_dir = site.out / "synthetic-nuclei@1.0" / "cell-counting" / "test"
    board = (board_dir / "README.md").read_text(encoding="utf-8")
    assert board.index("exact") < board.index("off-by-some")  # lower MAE ranks first
    assert "cell-counting" in (board_dir / "index.html").read_text(encoding="utf-8")
