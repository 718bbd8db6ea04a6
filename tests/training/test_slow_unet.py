"""Slow check: the U-Net learns synthetic nuclei through the whole engine (CPU, ~30 s).

Measured on a 2-core CPU with one torch thread (as the training tests run; seed 0, 15 epochs,
best epoch 13 by the validation headline, mean Jaccard pooled): test-split Dice pooled over
images, interphase 0.942, mitotic 0.666, mean over the two foreground classes 0.804
(background 0.980). The thresholds leave a margin for other CPUs and library versions; the
same numbers are recorded in baselines/README.md.
"""

import numpy as np
import pytest

from cellbench.metrics.semantic import SemanticSegmentationMetrics
from cellbench.registry import pull
from cellbench.training.config import TrainConfig
from cellbench.training.engine import train
from cellbench.training.inference import predict_split


@pytest.mark.slow
def test_unet_reaches_dice_on_synthetic_nuclei(tmp_path):
    store = pull("synthetic-nuclei", progress=False)
    cfg = TrainConfig(
        task="semantic-segmentation",
        dataset=str(store.path),
        baseline="unet",
        model={"depth": 3, "base_channels": 16, "patch_size": [64, 64]},
        epochs=15,
        batch_size=8,
        lr=0.05,
        momentum=0.9,
        warmup_epochs=1,
        workers=2,
        imbalance="loss",
        val_metric=True,
        seed=0,
    )
    result = train(cfg, tmp_path / "run", progress=False)
    assert result.history[-1]["train_loss"] < 0.5 * result.history[0]["train_loss"]
    pset = predict_split(tmp_path / "run", store, "test")
    ids = store.sample_ids("test")
    truth = [np.asarray(store.labels(s, "semantic")[...]) for s in ids]
    metric = SemanticSegmentationMetrics(store.class_names("semantic"), mean_exclude=["background"])
    values = metric.compute(truth, [pset.get(s).mask for s in ids], sample_ids=ids).values
    assert values["dice_pooled/interphase"] > 0.90
    assert values["mean_dice_pooled"] > 0.72
