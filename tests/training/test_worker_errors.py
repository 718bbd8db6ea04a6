"""An error inside a DataLoader worker reaches the user as the original one-line error."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from cellbench.cli import main
from cellbench.errors import CorruptStoreError
from cellbench.training import TrainConfig, train


def _corrupt_instance_chunks(store) -> int:
    """Overwrite the instance label chunks: the split index never decodes them (it only checks
    their shape), so the first read is in a DataLoader worker."""
    n = 0
    for f in store.path.glob("images/*/labels/instances/0/c/*/*"):
        f.write_bytes(b"garbage, not a blosc chunk")
        n += 1
    return n


ARGS = [
    "--baseline",
    "toy-instance",
    "--epochs",
    "1",
    "--workers",
    "1",
    "--batch-size",
    "2",
    "-q",
    "--set",
    "patch_size=16",
    "--set",
    "val_metric=false",
    "--set",
    "samples_per_epoch=4",
]


def test_cli_train_prints_the_workers_error_as_one_line(make_store, tmp_path):
    store = make_store("instance-segmentation")
    assert _corrupt_instance_chunks(store) >= 4
    run = tmp_path / "run"
    args = ["train", "instance-segmentation", "--dataset", str(store.path), "--out", str(run)]
    result = CliRunner().invoke(main, args + ARGS)
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: dataset toy-inst@1.0: array 'images/inst-")
    assert "/labels/instances/0' (sample 'inst-" in lines[0]
    assert lines[0].endswith("(`cellbench datasets import PATH`) of toy-inst@1.0")
    assert "Traceback" not in result.output and "DataLoader worker" not in result.output
    assert not (run / "model.safetensors").exists()


def test_library_train_raises_the_original_error_type(make_store, tmp_path):
    store = make_store("instance-segmentation")
    _corrupt_instance_chunks(store)
    config = TrainConfig.from_dict(
        {
            "task": "instance-segmentation",
            "dataset": str(store.path),
            "baseline": "toy-instance",
            "epochs": 1,
            "workers": 1,
            "batch_size": 2,
            "patch_size": [16, 16],
            "val_metric": False,
            "samples_per_epoch": 4,
        }
    )
    with pytest.raises(CorruptStoreError) as info:
        train(config, tmp_path / "run", progress=False)
    assert "\n" not in str(info.value) and "does not match the manifest" in str(info.value)
