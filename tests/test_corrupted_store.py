"""A damaged store is never scored: score, submit, train and verify all refuse, with one line.

Each kind of corruption found by the adversarial tries (flipped bytes, deleted chunks, a
truncated or edited manifest, edited or truncated ``zarr.json``, edited root attributes) is
applied to a registered copy of a small store (to every sample, so the train, val and test
readers all meet it); then the four commands run and none may print a number or add an entry.
"""

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

import tests.training.toy_models  # noqa: F401  (registers the toy baselines)
from cellbench.cli import main
from cellbench.predictions import Prediction, PredictionSet, write_predictions
from cellbench.registry import import_store
from cellbench.store.zarr_store import build_store
from tests.factories import toy_samples

TASK = "semantic-segmentation"
CARD = {"id": "toy", "version": "1.0", "tasks": [TASK]}
CLASSES = {"semantic": ["background", "odd", "even"]}


def _flip(file: Path) -> None:
    raw = bytearray(file.read_bytes())
    raw[len(raw) // 2] ^= 0x10
    file.write_bytes(bytes(raw))


def _edit_json(file: Path, change: Callable[[dict], None]) -> None:
    meta = json.loads(file.read_text())
    change(meta)
    file.write_text(json.dumps(meta))


def _image_ome(meta: dict) -> dict:
    return meta["attributes"]["ome"]


def _each(root: Path, rel: str, action: Callable[[Path], None]) -> None:
    for sample in sorted(p for p in (root / "images").iterdir() if p.is_dir()):
        action(sample / rel)


CORRUPTIONS: dict[str, Callable[[Path], None]] = {
    "flipped label byte": lambda r: _each(r, "labels/semantic/0/c/0/0", _flip),
    "deleted label chunk": lambda r: _each(r, "labels/semantic/0/c/0/0", os.remove),
    "truncated manifest.json": lambda r: (r / "manifest.json").write_text(
        (r / "manifest.json").read_text()[:500]
    ),
    "edited manifest digest": lambda r: _edit_json(
        r / "manifest.json", lambda m: m.__setitem__("digest", "0" * 64)
    ),
    "truncated label zarr.json": lambda r: _each(
        r, "labels/semantic/0/zarr.json", lambda f: f.write_text(f.read_text()[:40])
    ),
    "edited label fill value": lambda r: _each(
        r, "labels/semantic/0/zarr.json", lambda f: _edit_json(f, lambda m: m.update(fill_value=2))
    ),
    "edited pixel size": lambda r: _each(
        r,
        "zarr.json",
        lambda f: _edit_json(
            f,
            lambda m: _image_ome(m)["multiscales"][0]["datasets"][0]["coordinateTransformations"][
                0
            ]["scale"].__setitem__(2, 0.1),
        ),
    ),
    "edited axes": lambda r: _each(
        r,
        "zarr.json",
        lambda f: _edit_json(
            f, lambda m: _image_ome(m)["multiscales"][0]["axes"][1].__setitem__("name", "z")
        ),
    ),
    "edited channel names": lambda r: _each(
        r,
        "zarr.json",
        lambda f: _edit_json(
            f, lambda m: _image_ome(m)["omero"]["channels"][0].__setitem__("label", "dapi")
        ),
    ),
    "edited class table": lambda r: _edit_json(
        r / "zarr.json",
        lambda m: m["attributes"]["cellbench"]["classes"].__setitem__(
            "semantic", ["background", "even", "odd"]
        ),
    ),
    "flipped split-table byte": lambda r: _flip(r / "samples" / "split" / "c" / "0"),
}


@pytest.fixture
def setting(tmp_path):
    samples = toy_samples("instance-segmentation", n=8)
    pristine = build_store(samples, tmp_path / "pristine.zarr", CARD, CLASSES)
    live = tmp_path / "live.zarr"
    shutil.copytree(pristine.path, live)
    import_store(live)
    test_ids = pristine.sample_ids("test")
    preds = write_predictions(
        tmp_path / "preds.zarr",
        PredictionSet.from_predictions(
            TASK,
            [Prediction(s, mask=np.asarray(pristine.labels(s, "semantic")[...])) for s in test_ids],
            dataset="toy",
            dataset_version="1.0",
            split="test",
        ),
    )
    manifest = tmp_path / "sub.yaml"
    manifest.write_text(
        yaml.safe_dump(
            {
                "name": "perfect",
                "authors": ["a"],
                "contact": "a@example.org",
                "code": {"url": "https://example.org/c", "commit": "abcdef1"},
                "training_data": "none",
                "n_parameters": 0,
                "seed": 0,
                "hardware": "cpu",
                "license": "MIT",
                "task": TASK,
                "dataset": "toy@1.0",
                "kind": "predictions",
                "submission": str(preds),
            }
        )
    )
    return {"pristine": pristine.path, "live": live, "preds": preds, "manifest": manifest}


def _commands(s: dict, tmp_path: Path) -> dict[str, list[str]]:
    return {
        "score": [
            "score",
            "--task",
            TASK,
            "--dataset",
            "toy@1.0",
            "--bootstrap",
            "5",
            str(s["preds"]),
        ],
        "submit": [
            "submit",
            str(s["manifest"]),
            "--root",
            str(tmp_path / "boards"),
            "--n-bootstrap",
            "5",
        ],
        "verify": ["datasets", "verify", "toy@1.0", "-q"],
        "train": [
            "train",
            TASK,
            "--dataset",
            "toy@1.0",
            "--baseline",
            "toy-semantic",
            "--out",
            str(tmp_path / "run"),
            "--epochs",
            "1",
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
        ],
    }


def test_pristine_store_scores_submits_trains_and_verifies(setting, tmp_path):
    """Control: on the intact store every command succeeds and the perfect score is 1."""
    runner = CliRunner()
    for name, args in _commands(setting, tmp_path).items():
        res = runner.invoke(main, args)
        assert res.exit_code == 0, (name, res.output)
    res = runner.invoke(main, _commands(setting, tmp_path)["score"])
    assert "mean_jaccard_pooled = 1" in res.output
    assert (tmp_path / "boards").exists()


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_no_command_returns_a_number_from_a_corrupted_store(setting, tmp_path, kind):
    CORRUPTIONS[kind](setting["live"])
    runner = CliRunner()
    for name, args in _commands(setting, tmp_path).items():
        res = runner.invoke(main, args)
        out = res.output
        assert res.exit_code in (1, 2), (kind, name, out, res.exception)
        assert "Traceback" not in out, (kind, name, out)
        assert "jaccard" not in out and "done:" not in out and "OK (" not in out, (kind, name)
        errors = [line for line in out.splitlines() if line.startswith("error:")]
        assert len(errors) == 1, (kind, name, out)
        if name != "verify":
            assert "toy@1.0" in errors[0] or "live.zarr" in errors[0], (kind, name, out)
    assert not (tmp_path / "boards").exists()
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_a_corrupt_input_image_stops_training_and_verify(setting, tmp_path):
    _each(setting["live"], "0/c/0/0/0", _flip)
    runner = CliRunner()
    for name in ("train", "verify"):
        res = runner.invoke(main, _commands(setting, tmp_path)[name])
        assert res.exit_code == 1 and "done:" not in res.output, (name, res.output)
        assert "does not match the manifest" in res.output or "corrupt" in res.output
