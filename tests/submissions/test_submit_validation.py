"""Submissions that must be refused as a whole, before scoring and without touching a board."""

import subprocess

import pytest
import yaml

from cellbench.errors import ValidationError
from cellbench.registry import import_store
from cellbench.store.zarr_store import build_store
from cellbench.submissions import evaluate_submission, submit
from tests.factories import toy_samples
from tests.submissions.models import evil_pickle, evil_torch_save

CARD = {"id": "toy", "version": "1.0", "tasks": ["instance-segmentation"]}


@pytest.fixture
def toy_dataset(tmp_path):
    store = build_store(toy_samples("instance-segmentation", n=8), tmp_path / "toy.zarr", CARD)
    import_store(store.path)
    return store


def _write(tmp_path, name="sub.yaml", **fields):
    data = {
        "name": "m",
        "authors": ["a"],
        "contact": "a@example.org",
        "code": {"url": "https://example.org/c", "commit": "abcdef1"},
        "training_data": "none",
        "n_parameters": 0,
        "seed": 0,
        "hardware": "cpu",
        "license": "MIT",
        "task": "instance-segmentation",
        "dataset": "toy@1.0",
        "kind": "predictions",
        "submission": "preds",
        **fields,
    }
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def test_pickle_model_and_bad_manifest_refused_together(toy_dataset, tmp_path):
    marker = tmp_path / "UNPICKLED"
    evil_torch_save(tmp_path / "model.pt", marker)
    manifest = _write(
        tmp_path, kind="torchscript", submission="model.pt", seed=-3, contact="nobody"
    )
    root = tmp_path / "lb"
    with pytest.raises(ValidationError) as err:
        submit(manifest, root=root)
    problems = err.value.problems
    assert "seed: must be a non-negative integer, got -3" in problems
    assert "contact: 'nobody' is neither an e-mail address nor an http(s) URL" in problems
    assert any("model.pt: is a pickle-based checkpoint" in p for p in problems)
    assert problems[-1] == "the model was not run because of the problems above"
    assert err.value.context == f"submission {manifest}"
    assert not marker.exists() and not root.exists()


@pytest.mark.parametrize("kind", ["torchscript", "onnx", "safetensors"])
def test_raw_pickle_refused_for_every_model_kind(toy_dataset, tmp_path, kind):
    marker = tmp_path / "UNPICKLED"
    target = tmp_path / "pkg" if kind == "safetensors" else tmp_path / "model.bin"
    if kind == "safetensors":
        target.mkdir()
        evil_pickle(target / "model.safetensors", marker)
        (target / "model.json").write_text("{}")
    else:
        evil_pickle(target, marker)
    manifest = _write(tmp_path, kind=kind, submission=str(target))
    with pytest.raises(ValidationError, match="pickle-based checkpoint"):
        evaluate_submission(manifest)
    assert not marker.exists()


def test_unknown_dataset_missing_files_and_wrong_split(tmp_path, toy_dataset):
    manifest = _write(tmp_path, dataset="nope@9", submission="missing.zarr")
    with pytest.raises(ValidationError) as err:
        evaluate_submission(manifest)
    assert any(p.startswith("dataset: unknown dataset 'nope'") for p in err.value.problems)
    assert any(p.endswith("missing.zarr does not exist") for p in err.value.problems)
    manifest = _write(tmp_path, split="val", task="classification", submission="x")
    (tmp_path / "x").mkdir()
    with pytest.raises(ValidationError) as err:
        evaluate_submission(manifest)
    assert "task: dataset toy@1.0 serves instance-segmentation, not 'classification'" in (
        err.value.problems
    )


def test_unreadable_predictions_reported(tmp_path, toy_dataset):
    (tmp_path / "preds").mkdir()
    manifest = _write(tmp_path)
    with pytest.raises(ValidationError) as err:
        evaluate_submission(manifest)
    assert err.value.problems == [
        "predictions: no <sample_id>.tif files found for task instance-segmentation"
    ]


def test_cli_reports_all_problems_and_exits_nonzero(tmp_path, cli_cmd, cli_env, toy_dataset):
    manifest = _write(tmp_path, kind="onnx", submission="nothing.onnx", seed="x", license="")
    proc = subprocess.run(
        [*cli_cmd, "submit", str(manifest), "--root", str(tmp_path / "lb")],
        capture_output=True,
        text=True,
        env=cli_env,
        timeout=120,
    )
    assert proc.returncode == 1
    err = proc.stderr
    assert err.startswith(f"error: submission {manifest}: ") and "problems found" in err
    for line in (
        "seed: must be a non-negative integer, got 'x'",
        "license: must not be empty",
        "nothing.onnx does not exist",
    ):
        assert line in err
    assert "Traceback" not in err and not (tmp_path / "lb").exists()


def test_cli_init_writes_template(tmp_path, cli_cmd, cli_env):
    target = tmp_path / "new" / "submission.yaml"
    proc = subprocess.run(
        [*cli_cmd, "submit", "--init", str(target)],
        capture_output=True,
        text=True,
        env=cli_env,
        timeout=60,
    )
    assert proc.returncode == 0 and target.is_file()
    assert yaml.safe_load(target.read_text())["kind"] == "predictions"
    again = subprocess.run(
        [*cli_cmd, "submit", "--init", str(target)],
        capture_output=True,
        text=True,
        env=cli_env,
        timeout=60,
    )
    assert again.returncode == 1 and "already exists" in again.stderr


def test_unavailable_device_refused_before_running(toy_dataset, tmp_path):
    import torch

    from tests.submissions.models import Threshold, script

    script(Threshold(), tmp_path / "m.pt")
    path = _write(tmp_path, kind="torchscript", submission="m.pt")
    with pytest.raises(ValidationError) as err:
        evaluate_submission(path, device="gpu")
    assert err.value.problems == [
        "device: 'gpu' is not cpu, cuda or cuda:N",
        "the model was not run because of the problems above",
    ]
    if not torch.cuda.is_available():
        with pytest.raises(ValidationError, match="CUDA is not available"):
            evaluate_submission(path, device="cuda")


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_model_refused_after_running_leaves_nothing_in_the_cache(toy_dataset, tmp_path):
    import torch

    from cellbench.store.cache import cellbench_home
    from tests.submissions.models import script

    class WrongShape(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x[:, :, :3].round().to(torch.int32)

    model = script(WrongShape(), tmp_path / "wrong.pt")
    manifest = _write(tmp_path, kind="torchscript", submission=str(model))
    root = tmp_path / "lb"
    for _ in range(3):
        with pytest.raises(ValidationError, match=r"label image shape \(3, 36\) != input"):
            submit(manifest, root=root)
    subs = cellbench_home() / "submissions"
    assert not subs.exists() or list(subs.iterdir()) == []
    assert not root.exists()
