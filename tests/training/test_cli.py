import csv
import json

import pytest
from click.testing import CliRunner

from cellbench.cli import main
from cellbench.predictions import load_predictions

QUICK = [
    "--epochs",
    "2",
    "--workers",
    "0",
    "--batch-size",
    "4",
    "-q",
    "--set",
    "patch_size=16",
    "--set",
    "val_metric=false",
    "--set",
    "samples_per_epoch=8",
]


@pytest.fixture
def runner():
    return CliRunner()


def test_train_resume_and_predict(runner, make_store, tmp_path):
    store = make_store("semantic-segmentation")
    run = tmp_path / "run"
    args = [
        "train",
        "semantic-segmentation",
        "--dataset",
        str(store.path),
        "--baseline",
        "toy-semantic",
        "--out",
        str(run),
        *QUICK,
    ]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("done: 2 epochs, best val_loss ")
    assert str(run) in result.stdout and (run / "model.safetensors").is_file()

    result = runner.invoke(
        main, ["train", "--resume", str(run), "--epochs", "4", "--max-minutes", "1e-9", "-q"]
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"time limit reached (continue with --resume {run}): 3 epochs")
    result = runner.invoke(
        main, ["train", "--resume", str(run), "--epochs", "3", "--max-minutes", "60", "-q"]
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("done: 3 epochs")

    result = runner.invoke(main, ["train", "--resume", str(run), "--dataset", "x"])
    assert result.exit_code == 1
    assert "cannot change when resuming" in result.stderr

    pred = tmp_path / "pred.zarr"
    result = runner.invoke(
        main,
        [
            "predict",
            str(run),
            "--dataset",
            str(store.path),
            "--split",
            "test",
            "--out",
            str(pred),
            "-q",
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"wrote 1 predictions of toy-sema@1.0 test to {pred}"
    pset = load_predictions(pred)
    assert pset.task == "semantic-segmentation" and pset.sample_ids == store.sample_ids("test")
    assert pset.producer["command"] == "cellbench predict"
    result = runner.invoke(
        main, ["predict", str(run), "--dataset", str(store.path), "--out", str(pred), "-q"]
    )
    assert result.exit_code == 1
    assert result.stderr.strip() == f"error: {pred}: already exists; choose a new output path"


def test_config_file_and_errors_are_one_line(runner, make_store, tmp_path):
    store = make_store("classification", size=(12, 12))
    config = tmp_path / "c.yaml"
    config.write_text(
        "baseline: toy-classifier\nlr: 1e-2\nmodel: {width: 4}\nepochs: 1\n"
        "workers: 0\nval_metric: false\nbatch_size: 3\n"
    )
    result = runner.invoke(
        main,
        [
            "train",
            "classification",
            "--dataset",
            str(store.path),
            "--config",
            str(config),
            "--out",
            str(tmp_path / "r"),
            "-q",
        ],
    )
    assert result.exit_code == 0, result.output
    doc = (tmp_path / "r" / "model.json").read_text()
    assert json.loads(doc)["config"] == {"width": 4, "dropout": 0.0}

    bad = runner.invoke(
        main,
        [
            "train",
            "classification",
            "--dataset",
            str(store.path),
            "--baseline",
            "toy-classifier",
            "--set",
            "lrr=3",
        ],
    )
    assert bad.exit_code == 1
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "error: command line: unknown config key(s) 'lrr' (accepted: task, dataset,"
    )
    wrong = runner.invoke(
        main,
        [
            "train",
            "semantic-segmentation",
            "--dataset",
            str(store.path),
            "--baseline",
            "toy-semantic",
            "-q",
        ],
    )
    assert wrong.exit_code == 1
    assert wrong.stderr.strip() == (
        "error: dataset toy-clas@1.0 serves classification, not task 'semantic-segmentation'"
    )
    unknown = runner.invoke(
        main, ["train", "classification", "--dataset", str(store.path), "--baseline", "nope", "-q"]
    )
    assert unknown.exit_code == 1 and "unknown baseline 'nope' (known: " in unknown.stderr
    missing = runner.invoke(main, ["train", "classification", "--baseline", "toy-classifier"])
    assert missing.exit_code == 1
    assert "dataset is not set" in missing.stderr
    no_task = runner.invoke(main, ["train"])
    assert no_task.exit_code == 2 and "TASK is required" in no_task.output


def test_tune_ranks_runs_by_the_selection_metric(runner, make_store, tmp_path):
    store = make_store("semantic-segmentation")
    grid = tmp_path / "grid.yaml"
    grid.write_text("lr: [0.3, 0.0001]\naugment_strength: [0.0, 1.0]\n")
    out = tmp_path / "tune"
    result = runner.invoke(
        main,
        [
            "tune",
            "semantic-segmentation",
            "--dataset",
            str(store.path),
            "--baseline",
            "toy-semantic",
            "--grid",
            str(grid),
            "--out",
            str(out),
            *QUICK,
        ],
    )
    assert result.exit_code == 0, result.output
    assert "grid search: val_loss (lower is better)" in result.stdout
    with (out / "results.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 4
    values = [float(r["best_value"]) for r in rows]
    assert values == sorted(values)  # lower is better: ascending
    assert {(r["lr"], r["augment_strength"]) for r in rows} == {
        ("0.3", "0.0"),
        ("0.3", "1.0"),
        ("0.0001", "0.0"),
        ("0.0001", "1.0"),
    }
    for r in rows:  # each row's value is its run's best validation loss
        metrics = [
            json.loads(x) for x in (out / r["run"] / "metrics.jsonl").read_text().splitlines()
        ]
        assert float(r["best_value"]) == pytest.approx(min(m["val_loss"] for m in metrics))
    data = json.loads((out / "results.json").read_text())
    assert data["metric"] == "val_loss" and data["direction"] == "lower"
    assert [x["run"] for x in data["runs"]] == [r["run"] for r in rows]
    # a second invocation reuses the finished runs
    again = runner.invoke(
        main,
        [
            "tune",
            "semantic-segmentation",
            "--dataset",
            str(store.path),
            "--baseline",
            "toy-semantic",
            "--grid",
            str(grid),
            "--out",
            str(out),
            *QUICK,
        ],
    )
    assert again.exit_code == 0
    assert (out / "results.csv").read_text().splitlines()[1:] == [
        ",".join(r.values()) for r in rows
    ]

    grid.write_text("lr: [0.1]\nbaseline: [unet]\nwarp: [1]\n")
    bad = runner.invoke(
        main,
        [
            "tune",
            "semantic-segmentation",
            "--dataset",
            str(store.path),
            "--baseline",
            "toy-semantic",
            "--grid",
            str(grid),
        ],
    )
    assert bad.exit_code == 1
    assert "'baseline' cannot be searched over" in bad.stderr
    assert "unknown key 'warp'" in bad.stderr


def test_training_start_up_steps_show_progress_when_slow(runner, make_store, tmp_path, monkeypatch):
    """Every start-up step is wrapped in ``activity``: with the threshold at 0 all of them show
    (on the captured stderr); with the real 2 s threshold a tiny run shows none."""
    import cellbench.training.components as components
    import cellbench.training.engine as engine
    import cellbench.training.loop as loop

    store = make_store("semantic-segmentation")
    args = ["train", "semantic-segmentation", "--dataset", str(store.path)]
    args += ["--baseline", "toy-semantic", *[a for a in QUICK if a != "-q"]]
    quick = runner.invoke(main, [*args, "--out", str(tmp_path / "a")])
    assert quick.exit_code == 0, quick.output
    assert " ..." not in quick.stderr
    for module in (components, engine, loop):
        monkeypatch.setattr(module, "STEP_S", 0.0)
    slow = runner.invoke(
        main, [*args, "--set", "normalisation=dataset-meanstd", "--out", str(tmp_path / "b")]
    )
    assert slow.exit_code == 0, slow.output
    shown = [line for line in slow.stderr.splitlines() if line.endswith(" ...")]
    assert shown == [
        f"opening dataset {store.path} ...",
        "dataset-meanstd statistics of toy-sema@1.0 train ...",
        "indexing toy-sema@1.0 train ...",
        "indexing toy-sema@1.0 val ...",
        "building model toy-semantic ...",
        "first batch of epoch 1 ...",
        "first batch of epoch 2 ...",
    ], slow.stderr
