"""Partition, label commitment, public and inputs stores, scoring by partition."""

import json

import numpy as np
import pytest

from cellbench.challenge.config import parse_challenge
from cellbench.challenge.prepare import label_commitment, partition, prepare_challenge
from cellbench.challenge.scoring import score_challenge
from cellbench.errors import ValidationError
from cellbench.predictions import Prediction, PredictionSet
from cellbench.registry import import_store
from cellbench.store.variants import hidden_label_manifest, variant_of
from cellbench.store.zarr_store import build_store
from tests.factories import toy_samples

CARD = {"id": "toy-nuclei", "version": "1.0", "tasks": ["instance-segmentation"]}


def _config(**over):
    data = {
        "id": "toy",
        "title": "Toy",
        "dataset": "toy-nuclei@1.0",
        "task": "instance-segmentation",
        "phases": [{"name": "open", "deadline": "2099-01-01T00:00:00Z"}],
        "scoring": {"n_bootstrap": 20},
        "public_metadata": ["plate"],
    }
    data.update(over)
    return parse_challenge(data)


@pytest.fixture
def store(tmp_path):
    samples = toy_samples("instance-segmentation", n=40)
    for i, sample in enumerate(samples):
        sample.metadata["well"] = f"w{i % 3}"
    s = build_store(samples, tmp_path / "t.zarr", CARD)
    import_store(s.path)
    return s


def test_partition_is_seeded_group_aware_and_complete(store):
    ids = store.sample_ids("test")
    public, private = partition(_config(), store)
    assert sorted(public + private) == sorted(ids) and not set(public) & set(private)
    assert (public, private) == partition(_config(), store)
    assert (public, private) != partition(_config(partition={"seed": 3}), store)
    by_well = _config(partition={"group_by": "well", "public_fraction": 0.5})
    pub, priv = partition(by_well, store)
    wells = [{store.metadata(s)["well"] for s in group} for group in (pub, priv)]
    assert wells[0] and wells[1] and not wells[0] & wells[1]  # a well is never split
    with pytest.raises(ValidationError, match="group_by 'colour' is not a metadata column"):
        partition(_config(partition={"group_by": "colour"}), store)
    with pytest.raises(ValidationError, match=r"from 1 group\(s\) \(plate-1\)"):
        partition(_config(partition={"group_by": "plate"}), store)


def test_commitment_binds_labels_parameters_and_salt(store):
    manifest = hidden_label_manifest(store, "test")
    assert set(manifest) == {"dataset", "split", "arrays"} and len(manifest["arrays"]) == 20
    base = label_commitment(manifest, {"m": {"t": 0.5}}, "salt")
    assert base == label_commitment(json.loads(json.dumps(manifest)), {"m": {"t": 0.5}}, "salt")
    changed = json.loads(json.dumps(manifest))
    first = sorted(changed["arrays"])[0]
    changed["arrays"][first]["sha256"] = "0" * 64
    assert label_commitment(changed, {"m": {"t": 0.5}}, "salt") != base
    assert label_commitment(manifest, {"m": {"t": 0.6}}, "salt") != base
    assert label_commitment(manifest, {"m": {"t": 0.5}}, "pepper") != base


def test_prepared_challenge_stores_and_scores(store, tmp_path):
    prepared = prepare_challenge(_config(), tmp_path / "ch")
    again = prepare_challenge(_config(), tmp_path / "ch")
    assert again.commitment == prepared.commitment and again.salt == prepared.salt
    assert (tmp_path / "ch" / "toy" / "secret.json").stat().st_mode & 0o777 == 0o600
    from cellbench.store.zarr_store import DatasetStore

    public = DatasetStore.open(prepared.public_store)
    inputs = DatasetStore.open(prepared.inputs_store)
    assert variant_of(public)["label_commitment"] == prepared.commitment
    assert inputs.sample_ids() == store.sample_ids("test") and inputs.fields == ["image"]
    for sid in store.sample_ids("test"):
        assert public.sample(sid).instances is None
        assert set(public.metadata(sid)) == {"plate"}
        np.testing.assert_array_equal(public.image(sid)[...], store.image(sid)[...])
    assert public.sample(store.sample_ids("train")[0]).instances is not None
    with pytest.raises(ValidationError, match="metric_parameters pinned"):
        prepare_challenge(_config(metric_parameters={"coco_ap": {}}), tmp_path / "ch2")
    # scoring: perfect on both parts, only aggregates
    preds = PredictionSet.from_predictions(
        "instance-segmentation",
        [
            Prediction(s, mask=np.asarray(store.labels(s)[...]).astype(np.int32))
            for s in store.sample_ids("test")
        ],
        dataset="toy-nuclei",
        dataset_version="1.0",
        split="test",
    )
    scores = score_challenge(prepared, preds)
    assert scores["public"]["headline"]["value"] == scores["private"]["headline"]["value"] == 1.0
    assert scores["public"]["n_samples"] + scores["private"]["n_samples"] == 10
    assert set(scores["public"]) == {"n_samples", "headline", "metrics"}
    json.dumps(scores, allow_nan=False)


def test_pull_public_builds_the_variant_and_load_falls_back_to_it(cli_cmd, cli_env):
    import shutil
    import subprocess

    from cellbench.registry import load, public_store_path, store_path

    run = subprocess.run(
        [*cli_cmd, "datasets", "pull", "synthetic-nuclei", "--public", "--hidden-split", "test"],
        capture_output=True,
        text=True,
        env=cli_env,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert "(public, test without labels)" in run.stdout
    assert public_store_path("synthetic-nuclei", "1.0").is_dir()
    shutil.rmtree(store_path("synthetic-nuclei", "1.0"))  # only the public variant is left
    store = load("synthetic-nuclei@1.0")
    assert variant_of(store)["kind"] == "public" and variant_of(store)["hidden_split"] == "test"
    test_ids = store.sample_ids("test")
    assert len(test_ids) == 16 and all(store.sample(s).instances is None for s in test_ids)
    assert all("n_nuclei" not in store.metadata(s) for s in test_ids)
    assert store.sample(store.sample_ids("train")[0]).instances is not None
    again = subprocess.run(
        [*cli_cmd, "datasets", "pull", "synthetic-nuclei", "--public"],
        capture_output=True,
        text=True,
        env=cli_env,
        timeout=300,
    )
    assert again.returncode == 1 and "already cached (use --force)" in again.stderr
