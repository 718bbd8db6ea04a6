import json

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from cellbench.errors import CellbenchError
from cellbench.training.checkpoint import load_weights, save_weights
from cellbench.training.config import TrainConfig
from cellbench.training.engine import resume, train
from cellbench.training.errors import CheckpointError, DataError, TrainingError
from cellbench.training.package import load_model_package
from tests.factories import reseal


def _config(store, task="semantic-segmentation", baseline="toy-semantic", **kw) -> TrainConfig:
    base = dict(
        task=task,
        dataset=str(store.path),
        baseline=baseline,
        epochs=3,
        batch_size=4,
        patch_size=24,
        workers=0,
        val_metric=False,
        lr=0.05,
        seed=0,
    )
    base.update(kw)
    return TrainConfig.from_dict(base)


def test_loss_decreases_and_run_directory_layout(make_store, tmp_path):
    store = make_store("semantic-segmentation", n_train=4)
    cfg = _config(store, epochs=6, samples_per_epoch=16, augment_strength=0.5)
    result = train(cfg, tmp_path / "run", progress=False)
    losses = [r["train_loss"] for r in result.history]
    assert losses[-1] < 0.85 * losses[0]
    run = tmp_path / "run"
    for name in (
        "config.yaml",
        "model.json",
        "model.safetensors",
        "metrics.jsonl",
        "metrics.csv",
        "curves.png",
        "train.log",
        "checkpoints/last.safetensors",
        "checkpoints/last.state.pt",
    ):
        assert (run / name).is_file(), name
    # checkpoints are safetensors with the baseline recorded; state loads without pickle
    with safe_open(str(run / "checkpoints/last.safetensors"), "pt") as fh:
        assert fh.metadata()["baseline"] == "toy-semantic" and fh.metadata()["epoch"] == "6"
    state = torch.load(run / "checkpoints/last.state.pt", weights_only=True)
    assert state["epoch"] == 6 and state["global_step"] == 6 * 4
    assert set(state["optimizer"]) == {"state", "param_groups"}
    # metrics files: one record per epoch, CSV with the same numbers
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == list(range(1, 7))
    assert records[2]["train_loss"] == pytest.approx(losses[2])
    csv_lines = (run / "metrics.csv").read_text().splitlines()
    header = csv_lines[0].split(",")
    assert {"epoch", "lr", "train_loss", "val_loss", "images_per_s"} <= set(header)
    row = dict(zip(header, csv_lines[3].split(","), strict=True))
    assert float(row["train_loss"]) == pytest.approx(losses[2])
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image as mpimg

    assert mpimg.imread(run / "curves.png").shape[0] > 100
    # best epoch by validation loss; the package holds exactly those weights
    vals = [r["val_loss"] for r in records]
    assert result.best_epoch == int(np.argmin(vals)) + 1 and result.headline == "val_loss"
    model, norm = load_model_package(run)
    assert norm.mode == "percentile" and model.spec.class_names == (
        "background",
        "nucleus",
        "mitotic",
    )


def test_interrupted_run_resumes_with_identical_losses(make_store, tmp_path, monkeypatch):
    from cellbench.training.engine import Trainer

    store = make_store("semantic-segmentation")
    cfg = _config(store, epochs=3, model={"width": 6, "dropout": 0.3}, samples_per_epoch=12)
    straight = train(cfg, tmp_path / "a", progress=False)

    real = Trainer._train_epoch

    def interrupted(self, epoch):
        if epoch == 2:
            raise KeyboardInterrupt
        return real(self, epoch)

    monkeypatch.setattr(Trainer, "_train_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "b", progress=False)
    monkeypatch.undo()
    resumed = resume(tmp_path / "b", progress=False)
    assert resumed.epochs_run == 3
    n = len(straight.step_losses) // 3
    assert resumed.step_losses == straight.step_losses[2 * n :]  # the very same next steps
    for key in ("train_loss", "val_loss", "lr", "best_epoch"):
        assert [r[key] for r in resumed.history] == [r[key] for r in straight.history]
    a = load_file(str(tmp_path / "a/checkpoints/last.safetensors"))
    b = load_file(str(tmp_path / "b/checkpoints/last.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    lines = (tmp_path / "b/metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2, 3]
    # a finished run can be given more epochs
    longer = resume(tmp_path / "b", {"epochs": 4}, progress=False)
    assert longer.epochs_run == 4 and len(longer.step_losses) == n
    with pytest.raises(TrainingError, match="cannot change lr when resuming"):
        resume(tmp_path / "b", {"lr": 0.1})
    with pytest.raises(TrainingError, match="already holds a run; continue it with --resume"):
        train(cfg, tmp_path / "a", progress=False)


def test_seeded_runs_are_reproducible_in_deterministic_mode(make_store, tmp_path):
    store = make_store("instance-segmentation")
    cfg = _config(store, "instance-segmentation", "toy-instance", epochs=2, deterministic=True)
    a = train(cfg, tmp_path / "a", progress=False)
    b = train(cfg, tmp_path / "b", progress=False)
    assert a.step_losses == b.step_losses
    c = train(cfg.merged({"seed": 1}), tmp_path / "c", progress=False)
    assert c.step_losses != a.step_losses
    assert not torch.are_deterministic_algorithms_enabled()  # restored after the run


def test_corrupt_and_foreign_checkpoints_give_one_line_errors(make_store, tmp_path):
    store = make_store("semantic-segmentation")
    cfg = _config(store, epochs=1)
    train(cfg, tmp_path / "run", progress=False)
    last = tmp_path / "run/checkpoints/last.safetensors"
    good = last.read_bytes()
    last.write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError) as info:
        resume(tmp_path / "run", {"epochs": 2}, progress=False)
    assert "corrupt or not a safetensors checkpoint" in str(info.value)
    assert "\n" not in str(info.value)
    last.write_bytes(good)
    state = tmp_path / "run/checkpoints/last.state.pt"
    state.write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="corrupt or unsafe training state"):
        resume(tmp_path / "run", {"epochs": 2}, progress=False)

    # another architecture: a classifier's weights, or the same baseline with another width
    from tests.training.toy_models import ToyConfig, ToySemantic

    model, _ = load_model_package(tmp_path / "run")
    other = ToySemantic(ToyConfig(width=4), model.spec)
    with pytest.raises(CheckpointError, match=r"does not fit this 'toy-semantic' model .*shape"):
        load_weights(other, tmp_path / "run/model.safetensors", "toy-semantic")
    save_weights(other, tmp_path / "x.safetensors", "toy-classifier")
    with pytest.raises(CheckpointError, match="is for baseline 'toy-classifier', not 'toy-sem"):
        load_weights(model, tmp_path / "x.safetensors", "toy-semantic")
    meta = json.loads((tmp_path / "run/model.json").read_text())
    (tmp_path / "run/model.json").write_text(json.dumps({**meta, "config": {"width": 4}}))
    with pytest.raises(CheckpointError, match="does not fit"):
        load_model_package(tmp_path / "run")


def test_mismatched_task_and_nan_data_are_clean_errors(make_store, tmp_path):
    import zarr

    store = make_store("semantic-segmentation")
    with pytest.raises(TrainingError, match="serves semantic-segmentation, not task 'class"):
        train(_config(store, "classification", "toy-classifier"), tmp_path / "a")
    with pytest.raises(TrainingError, match="'toy-classifier' serves classification, not task"):
        train(_config(store, baseline="toy-classifier"), tmp_path / "b")
    aug = make_store("augmented-microscopy")
    sid = aug.sample_ids("train")[0]
    arr = zarr.open_array(str(aug.path / "targets" / sid / "0"), mode="r+")
    arr[0, 1, 1] = np.nan
    reseal(aug.path)  # a NaN the manifest agrees with: what training's own checks must find
    cfg = _config(aug, "augmented-microscopy", "toy-regressor", patch_size=48, workers=2)
    with pytest.raises(DataError) as info:  # found while indexing (target percentiles)
        train(cfg, tmp_path / "c", progress=False)
    assert str(info.value) == (
        f"sample {sid!r}: target (channel 0) contains NaN or infinite values; fix or remove it"
    )
    cfg = cfg.merged({"target_normalisation": "none"})
    with pytest.raises(DataError) as info:  # found by a loader worker: one line, no traceback
        train(cfg, tmp_path / "d", progress=False)
    assert str(info.value) == f"sample {sid!r}: target contains NaN or infinite values"


def test_out_of_memory_suggests_a_smaller_batch(make_store, tmp_path, monkeypatch):
    from tests.training.toy_models import ToySemantic

    def boom(self, batch):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(ToySemantic, "loss", boom)
    store = make_store("semantic-segmentation")
    with pytest.raises(TrainingError) as info:
        train(_config(store, batch_size=4), tmp_path / "run", progress=False)
    message = str(info.value)
    assert "out of GPU memory" in message and "batch_size 4" in message
    assert "smaller --batch-size or patch_size" in message


def test_time_limit_stops_after_an_epoch_and_resume_finishes_the_same_run(make_store, tmp_path):
    import yaml

    store = make_store("semantic-segmentation")
    cfg = _config(store, epochs=3, samples_per_epoch=12)
    straight = train(cfg, tmp_path / "a", progress=False)
    assert not straight.time_limited
    # a budget every epoch overruns: the call ends after epoch 1, checkpoint and package written
    limited = train(
        _config(store, epochs=3, samples_per_epoch=12, max_minutes=1e-9),
        tmp_path / "b",
        progress=False,
    )
    assert limited.time_limited and not limited.stopped_early and limited.epochs_run == 1
    doc = yaml.safe_load((tmp_path / "b/config.yaml").read_text())
    assert doc["status"] == "time-limited" and doc["epochs_completed"] == 1
    assert json.loads((tmp_path / "b/model.json").read_text())["training"]["epoch"] == 1
    # resuming with a larger budget continues to the very same weights as the straight run
    done = resume(tmp_path / "b", {"max_minutes": 60}, progress=False)
    assert done.epochs_run == 3 and not done.time_limited
    assert yaml.safe_load((tmp_path / "b/config.yaml").read_text())["status"] == "finished"
    a = load_file(str(tmp_path / "a/checkpoints/last.safetensors"))
    b = load_file(str(tmp_path / "b/checkpoints/last.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(CellbenchError, match="max_minutes"):
        _config(store, max_minutes=0)


def test_early_stopping_and_no_validation_split(make_store, tmp_path, monkeypatch):
    from cellbench.training.engine import Trainer

    values = iter([1.0, 0.5, 0.6, 0.7, 0.55, 0.9, 0.9])
    monkeypatch.setattr(Trainer, "_val_loss", lambda self: next(values))
    store = make_store("semantic-segmentation")
    result = train(_config(store, epochs=7, early_stopping=3), tmp_path / "a", progress=False)
    assert result.stopped_early and result.epochs_run == 5 and result.best_epoch == 2
    assert result.best_value == 0.5
    monkeypatch.undo()

    nov = make_store("instance-segmentation", n_val=0)
    r = train(
        _config(nov, "instance-segmentation", "toy-instance", epochs=2),
        tmp_path / "b",
        progress=False,
    )
    assert r.headline is None and r.best_epoch == 2
    assert json.loads((tmp_path / "b/model.json").read_text())["training"]["epoch"] == 2


def test_classification_image_mode_with_class_weights_and_preload(make_store, tmp_path):
    store = make_store("classification", n_train=6, size=(16, 16))
    cfg = _config(
        store,
        "classification",
        "toy-classifier",
        epochs=4,
        batch_size=3,
        imbalance="both",
        preload="ram",
        lr=0.1,
    )
    result = train(cfg, tmp_path / "run", progress=False)
    model, _ = load_model_package(tmp_path / "run")
    assert model.spec.class_weights == pytest.approx([1.0, 1.0, 1.0])
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    png = tmp_path / "run/confusion_matrix.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import yaml

    doc = yaml.safe_load((tmp_path / "run/config.yaml").read_text())
    assert doc["resolved"]["preload"] == "ram" and doc["resolved"]["sample_mode"] == "image"
    assert doc["seeds"]["seed"] == 0 and doc["environment"]["torch"] == torch.__version__
    assert doc["dataset"]["checksum"] == store.checksum
    assert doc["status"] == "finished" and doc["wall_time_s"] > 0


def test_dataset_statistics_are_recorded_and_reused_on_resume(make_store, tmp_path):
    store = make_store("augmented-microscopy")
    cfg = _config(
        store,
        "augmented-microscopy",
        "toy-regressor",
        epochs=1,
        normalisation="dataset-meanstd",
        target_normalisation="dataset-meanstd",
    )
    train(cfg, tmp_path / "run", progress=False)
    meta = json.loads((tmp_path / "run/model.json").read_text())
    pooled = np.concatenate(
        [np.asarray(store.image(s)[...]).ravel() for s in store.sample_ids("train")]
    ).astype(float)
    stats = meta["normalisation"]["channel_stats"][0]
    assert stats == pytest.approx([pooled.mean(), pooled.std()])
    assert meta["normalisation"]["target_stats"] is not None
    resume(tmp_path / "run", {"epochs": 2}, progress=False)
    meta2 = json.loads((tmp_path / "run/model.json").read_text())
    assert meta2["normalisation"] == meta["normalisation"]


def test_errors_are_cellbench_errors():
    assert issubclass(CheckpointError, CellbenchError) and issubclass(DataError, CellbenchError)


def test_3d_chunk_batched_adamw_step_schedule_and_clipping(make_store, tmp_path):
    store = make_store("instance-segmentation", size=(6, 20, 24))
    cfg = _config(
        store,
        "instance-segmentation",
        "toy-instance",
        epochs=2,
        patch_size=[4, 16, 16],
        batch_size=4,
        patches_per_read=2,
        patch_alignment="chunk",
        optimizer="adamw",
        lr=0.01,
        schedule="step",
        step_milestones=[1],
        warmup_epochs=0,
        grad_clip=1.0,
        samples_per_epoch=8,
    )
    result = train(cfg, tmp_path / "run", progress=False)
    assert [r["lr"] for r in result.history] == pytest.approx([0.01, 0.001])
    pset = predict_split_for(tmp_path / "run", store)
    sid = store.sample_ids("test")[0]
    assert pset.get(sid).mask.shape == (6, 20, 24)


def predict_split_for(run, store):
    from cellbench.training.inference import predict_split

    return predict_split(run, store, "test")
