"""Validation with the task's headline metric (needs cellbench.scoring and cellbench.tasks)."""

import json

import pytest

scoring = pytest.importorskip(
    "cellbench.scoring", reason="validation metric needs cellbench.scoring (not on main yet)"
)
tasks = pytest.importorskip("cellbench.tasks", reason="needs cellbench.tasks (not on main yet)")

from cellbench.training.config import TrainConfig  # noqa: E402
from cellbench.training.engine import train  # noqa: E402
from cellbench.training.inference import predict_split  # noqa: E402


@pytest.mark.parametrize(
    "task,baseline",
    [
        ("semantic-segmentation", "toy-semantic"),
        ("instance-segmentation", "toy-instance"),
        ("classification", "toy-classifier"),
        ("augmented-microscopy", "toy-regressor"),
        ("tracking", "toy-tracker"),
    ],
)
def test_headline_metric_selects_the_best_epoch(make_store, tmp_path, task, baseline):
    store = make_store(task, size=(32, 32))
    cfg = TrainConfig(
        task=task,
        dataset=str(store.path),
        baseline=baseline,
        epochs=3,
        batch_size=4,
        patch_size=16,
        workers=0,
        samples_per_epoch=8,
        lr=0.05,
    )
    result = train(cfg, tmp_path / "run", progress=False)
    spec = tasks.get_task(task)
    key = f"val/{spec.headline}"
    assert result.headline == key and result.direction == spec.direction
    values = [r[key] for r in result.history]
    best = (max if spec.direction == "higher" else min)(values)
    assert result.best_value == best
    assert result.best_epoch == values.index(best) + 1
    # the recorded value is what scoring reports for the package's own predictions
    pset = predict_split(tmp_path / "run", store, "val")
    report = scoring.score(task, store, "val", pset, n_bootstrap=0)
    assert report.headline.value == pytest.approx(best)
    meta = json.loads((tmp_path / "run/model.json").read_text())
    assert meta["training"]["epoch"] == result.best_epoch
    if task == "classification":
        assert (tmp_path / "run/confusion_matrix.png").is_file()
