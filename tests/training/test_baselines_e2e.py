"""Every registered baseline through the engine: a few steps on tiny data, then predict_split."""

import numpy as np
import pytest

from cellbench.predictions import load_predictions
from cellbench.scoring import score
from cellbench.tasks import get_task, task_names
from cellbench.training.baseline import baselines_for
from cellbench.training.config import TrainConfig
from cellbench.training.engine import train
from cellbench.training.inference import predict_split, write_split_predictions
from cellbench.training.models import tiny_config

BUILT_IN = sorted(
    (task, name)
    for task in task_names()
    for name in baselines_for(task)
    if not name.startswith(("toy-", "test-"))
)
#: Settings that make a few steps clearly lower the loss (tiny data, no augmentation).
STEPS = {
    "maskrcnn": {"size": (64, 64), "patch_size": 64, "lr": 1e-4, "epochs": 4},
    "resnet18": {"size": (32, 32), "lr": 0.05, "epochs": 6},
    "resnet50": {"size": (32, 32), "lr": 0.05, "epochs": 6},
}


def test_every_built_in_baseline_is_covered():
    names = {name for _, name in BUILT_IN}
    assert {
        "resnet18",
        "resnet50",
        "unet",
        "unet-regression",
        "maskrcnn",
        "embedding-unet",
        "tracker",
    } <= names


@pytest.mark.parametrize("task,name", BUILT_IN)
def test_baseline_trains_and_predicts_through_the_engine(make_store, tmp_path, task, name):
    opts = STEPS.get(name, {})
    size = opts.get("size", (32, 32))
    store = make_store(task, size=size, n_train=4, n_val=1, n_test=1)
    cfg = TrainConfig(
        task=task,
        dataset=str(store.path),
        baseline=name,
        model=tiny_config(name),
        epochs=opts.get("epochs", 5),
        batch_size=2,
        patch_size=opts.get("patch_size", 32),
        samples_per_epoch=4,
        workers=0,
        augment_strength=0.0,
        optimizer="adamw",
        lr=opts.get("lr", 0.01),
        weight_decay=0.0,
        warmup_epochs=0,
        val_metric=False,
        val_loss=False,
        seed=0,
    )
    result = train(cfg, tmp_path / "run", progress=False)
    losses = result.step_losses
    assert np.all(np.isfinite(losses))
    assert np.mean(losses[-2:]) < 0.9 * np.mean(losses[:2]), losses

    pset = predict_split(tmp_path / "run", store, "test")
    sid = store.sample_ids("test")[0]
    p = pset.get(sid)
    shape = store.image(sid).shape
    if task == "classification":
        assert 0 <= p.label < 3 and p.scores.shape == (3,)
        assert p.scores.sum() == pytest.approx(1.0, abs=1e-4)
    elif task == "semantic-segmentation":
        assert p.mask.shape == shape[1:] and p.mask.dtype.kind in "ui" and p.mask.max() < 3
    elif task == "instance-segmentation":
        labels = p.mask if p.mask is not None else None
        if labels is not None:
            assert labels.shape == shape[1:] and labels.dtype.kind in "ui"
            if p.object_ids is not None:
                assert set(p.object_ids.tolist()) <= set(np.unique(labels).tolist()) - {0}
                assert len(p.object_scores) == len(p.object_ids)
        else:
            assert p.masks.shape[1:] == shape[1:] and len(p.mask_scores) == len(p.masks)
    elif task == "tracking":
        assert p.mask.shape == (shape[0], *shape[2:]) and p.tracks.shape[1] == 4
        ids = set(np.unique(p.mask).tolist()) - {0}
        assert ids == set(p.tracks[:, 0].tolist())
        for tid, start, end, _ in p.tracks.tolist():  # CTC: each track spans its frames
            frames = [t for t in range(shape[0]) if (p.mask[t] == tid).any()]
            assert frames and frames[0] == start and frames[-1] == end
    elif task == "augmented-microscopy":
        assert p.image.shape == (1, *shape[1:]) and np.isfinite(p.image).all()
    out = write_split_predictions(
        tmp_path / "run", store, "test", tmp_path / "p.zarr", progress=False
    )
    assert load_predictions(out, task=task).sample_ids == [sid]
    # the written prediction set passes the task's validation and scores
    report = score(task, store, "test", out, n_bootstrap=0)
    assert report.headline.name == get_task(task).headline
    assert report.headline.value == report.headline.value  # a number (not NaN)
