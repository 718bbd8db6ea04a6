import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cellbench.tasks import get_task
from tests.conftest import REPO


def test_torchrun_two_processes_on_cpu_with_gloo(make_store, tmp_path, cli_env):
    store = make_store("semantic-segmentation", n_train=4, n_val=2)
    markers = tmp_path / "markers"
    markers.mkdir()
    run = tmp_path / "run"
    env = {**cli_env, "DDP_MARKERS": str(markers), "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(REPO / "tests/training/ddp_script.py"),
        "train",
        "semantic-segmentation",
        "--dataset",
        str(store.path),
        "--baseline",
        "toy-semantic",
        "--out",
        str(run),
        "--epochs",
        "2",
        "--batch-size",
        "2",
        "--workers",
        "0",
        "--device",
        "cpu",
        "-q",
        "--set",
        "patch_size=16",
        "--set",
        "samples_per_epoch=8",
    ]
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    facts = [json.loads((markers / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert [f["world"] for f in facts] == [2, 2] and facts[0]["backend"] == "gloo"
    # each rank drew its own half of every epoch's samples (2 steps x batch 2 per epoch)
    for epoch in range(2):
        a = {tuple(k) for k in facts[0]["keys"][epoch]}
        b = {tuple(k) for k in facts[1]["keys"][epoch]}
        assert len(a) == len(b) == 4 and not a & b
    # gradients were averaged: both ranks end with the same weights
    assert facts[0]["weights"] == facts[1]["weights"]
    # the losses reported are the all-reduced ones, identical on both ranks
    assert [h["train_loss"] for h in facts[0]["history"]] == [
        h["train_loss"] for h in facts[1]["history"]
    ]
    assert [h["val_loss"] for h in facts[0]["history"]] == [
        h["val_loss"] for h in facts[1]["history"]
    ]
    # validation predictions are sharded, gathered and scored on rank 0; every rank gets the
    # value and takes the same early-stopping and best-epoch decisions
    key = f"val/{get_task('semantic-segmentation').headline}"
    values = [[h[key] for h in f["history"]] for f in facts]
    assert values[0] == values[1] and all(v == v for v in values[0])
    assert [h["best_epoch"] for h in facts[0]["history"]] == [
        h["best_epoch"] for h in facts[1]["history"]
    ]
    # only rank 0 wrote: one run directory, one checkpoint, one model package
    written = sorted(p.relative_to(run).as_posix() for p in run.rglob("*") if p.is_file())
    assert written == [
        "checkpoints/last.safetensors",
        "checkpoints/last.state.pt",
        "config.yaml",
        "curves.png",
        "metrics.csv",
        "metrics.jsonl",
        "model.json",
        "model.safetensors",
        "train.log",
    ]
    doc = yaml.safe_load((run / "config.yaml").read_text())
    assert doc["resolved"]["world_size"] == 2 and doc["status"] == "finished"
    assert not [p for p in os.listdir(tmp_path) if p.startswith("runs")]
    assert proc.stdout.count("done: 2 epochs") == 1  # both ranks finished, rank 0 reports
    assert all(len(f["history"]) == 2 for f in facts)


@pytest.mark.slow
def test_torchrun_two_processes_read_the_store_from_s3(make_store, tmp_path, cli_env, s3_bucket):
    # the same run with the store on the S3 server: both ranks stream patches through the
    # verified chunk cache and end with identical weights
    from cellbench.store.remote import upload_store

    store = make_store("semantic-segmentation", n_train=4, n_val=2)
    url = f"s3://{s3_bucket}/stores/toy.zarr"
    upload_store(store.path, url)
    markers = tmp_path / "markers"
    markers.mkdir()
    env = {**cli_env, **{k: os.environ[k] for k in os.environ if k.startswith("AWS_")}}
    env.update(DDP_MARKERS=str(markers), OMP_NUM_THREADS="1")
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        str(REPO / "tests/training/ddp_script.py"), "train", "semantic-segmentation",
        "--dataset", url, "--baseline", "toy-semantic", "--out", str(tmp_path / "run"),
        "--epochs", "1", "--batch-size", "2", "--workers", "0", "--device", "cpu", "-q",
        "--set", "patch_size=16", "--set", "samples_per_epoch=8",
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    facts = [json.loads((markers / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert [f["world"] for f in facts] == [2, 2] and facts[0]["backend"] == "gloo"
    a, b = ({tuple(k) for k in f["keys"][0]} for f in facts)
    assert len(a) == len(b) == 4 and not a & b  # each rank read its own half
    assert facts[0]["weights"] == facts[1]["weights"]
    doc = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert doc["status"] == "finished"
    chunks = Path(env["CELLBENCH_HOME"]) / "chunks"
    assert any(p.is_file() for p in chunks.rglob("*"))  # read through the chunk cache
