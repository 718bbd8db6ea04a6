"""Scoring and verification as Dask graphs: identical results on every scheduler, on a real
``dask.distributed.LocalCluster`` (two worker processes on loopback), and after a worker dies."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cellbench.predictions import Prediction, PredictionSet, write_predictions
from cellbench.scoring import score
from cellbench.store.zarr_store import DatasetStore, build_store
from tests.factories import toy_samples

distributed = pytest.importorskip("distributed")

from tests.dask_helpers import one_worker_killed  # noqa: E402 (needs distributed)

CARD = {"id": "toy", "version": "1", "tasks": ["instance-segmentation"]}


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """A 40-image store (10 test images) and imperfect predictions of its test split."""
    root = tmp_path_factory.mktemp("par")
    samples = toy_samples("instance-segmentation", 40)
    for i, s in enumerate(samples):
        s.metadata["plate"] = f"plate-{i % 3}"
    store = build_store(samples, root / "toy.zarr", CARD)
    rng = np.random.default_rng(1)
    preds = []
    for sid in store.sample_ids("test"):
        mask = np.asarray(store.labels(sid)[...]).copy()
        ids = np.unique(mask)[1:]
        mask[np.isin(mask, rng.choice(ids, size=2, replace=False))] = 0
        preds.append(Prediction(sid, mask=mask))
    pset = PredictionSet.from_predictions("instance-segmentation", preds, "toy", "1")
    write_predictions(root / "preds.zarr", pset)
    return store, root / "preds.zarr", pset


def _values(report) -> str:
    """Everything a report says about the predictions, as exact text (floats to the last bit)."""
    d = json.loads(report.to_json())
    return json.dumps(
        {k: d[k] for k in ("metrics", "headline", "groups", "per_sample")}, sort_keys=True
    )


def test_scores_identical_on_every_scheduler(scored, cluster):
    store, preds, pset = scored
    reference = score(
        "instance-segmentation", store, "test", preds, n_bootstrap=40, groups=["plate"]
    )
    assert 0 < reference.headline.value < 1 and reference.groups
    for scheduler in ("synchronous", "threads", cluster.scheduler_address):
        got = score(
            "instance-segmentation", store, "test", preds,
            n_bootstrap=40, groups=["plate"], scheduler=scheduler,
        )  # fmt: skip
        assert _values(got) == _values(reference), scheduler
    in_memory = score(
        "instance-segmentation", store, "test", pset,
        n_bootstrap=40, groups=["plate"], scheduler=cluster.scheduler_address,
    )  # fmt: skip
    assert _values(in_memory) == _values(reference)


@pytest.mark.slow
def test_local_process_pool_gives_identical_scores(scored):
    store, preds, _ = scored  # slow only because the pool spawns fresh interpreters
    reference = score("instance-segmentation", store, "test", preds, n_bootstrap=40)
    got = score(
        "instance-segmentation", store, "test", preds, n_bootstrap=40, scheduler="processes"
    )
    assert _values(got) == _values(reference)


def test_invalid_predictions_list_every_problem_on_a_cluster(scored, cluster, tmp_path):
    from cellbench.errors import ValidationError

    store, _, _ = scored
    ids = store.sample_ids("test")
    bad = [Prediction(sid, mask=np.zeros((3, 3), np.uint16)) for sid in ids[:3]]
    bad += [Prediction(sid, mask=np.asarray(store.labels(sid)[...])) for sid in ids[3:]]
    write_predictions(tmp_path / "bad.zarr", PredictionSet.from_predictions(
        "instance-segmentation", bad, "toy", "1"))  # fmt: skip
    errors = []
    for scheduler in (None, cluster.scheduler_address):
        with pytest.raises(ValidationError) as err:
            score("instance-segmentation", store, "test", tmp_path / "bad.zarr",
                  n_bootstrap=0, scheduler=scheduler)  # fmt: skip
        errors.append(err.value.problems)
    assert errors[0] == errors[1] and len(errors[0]) == 3
    assert all(sid in p for sid, p in zip(ids[:3], errors[0], strict=True))


def test_worker_killed_mid_run_result_unchanged(scored, cluster, tmp_path):
    store, preds, _ = scored
    reference = score("instance-segmentation", store, "test", preds, n_bootstrap=40)
    with one_worker_killed(cluster, tmp_path / "killed", "_score_sample"):
        got = score(
            "instance-segmentation", store, "test", preds,
            n_bootstrap=40, scheduler=cluster.scheduler_address,
        )  # fmt: skip
    assert _values(got) == _values(reference)


def test_verify_per_array_on_a_cluster_lists_the_same_problems(scored, cluster, tmp_path):
    import shutil

    store, _, _ = scored
    assert store.verify(scheduler=cluster.scheduler_address) == []
    copy = tmp_path / "copy.zarr"
    shutil.copytree(store.path, copy)
    sid = store.sample_ids()[5]
    chunk = copy / "images" / sid / "0" / "c" / "0" / "0" / "0"
    chunk.write_bytes(chunk.read_bytes()[:-2] + b"\x00\x00")
    (
        copy / "images" / store.sample_ids()[7] / "labels" / "instances" / "0" / "c" / "0" / "0"
    ).unlink()
    damaged = DatasetStore.open(copy)
    sequential = damaged.verify()
    assert len(sequential) == 2
    assert damaged.verify(scheduler=cluster.scheduler_address) == sequential
    assert damaged.verify(scheduler="threads") == sequential


def test_scheduler_from_environment(monkeypatch):
    from cellbench.parallel import resolve_scheduler

    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    assert resolve_scheduler(None) is None
    assert resolve_scheduler("threads") == "threads"
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", "tcp://10.0.0.1:8786")
    assert resolve_scheduler(None) == "tcp://10.0.0.1:8786"
    with pytest.raises(ValueError, match="expected one of synchronous, threads, processes"):
        resolve_scheduler("fast")


def test_cli_score_and_verify_take_a_scheduler(scored, cluster, tmp_path):
    from click.testing import CliRunner

    from cellbench.cli import main

    store, preds, _ = scored
    runner = CliRunner()
    outs = []
    for extra in ([], ["--scheduler", cluster.scheduler_address]):
        out = tmp_path / f"r{len(outs)}.json"
        res = runner.invoke(main, ["score", "--task", "instance-segmentation", "--dataset",
                                   str(store.path), str(preds), "--bootstrap", "20",
                                   "--out", str(out), "-q", *extra])  # fmt: skip
        assert res.exit_code == 0, res.output
        outs.append(json.loads(out.read_text())["metrics"])
    assert outs[0] == outs[1]
    res = runner.invoke(main, ["score", "--task", "instance-segmentation", "--dataset",
                               str(store.path), str(preds), "--scheduler", "fast"])  # fmt: skip
    assert res.exit_code != 0 and "expected one of" in res.output


def test_a_cluster_whose_workers_fix_the_mmap_threshold_is_told_once(
    scored, cluster, tmp_path, monkeypatch
):
    """Dask's nanny starts workers with MALLOC_TRIM_THRESHOLD_=65536 (which fixes glibc's mmap
    threshold: NumPy temporaries over 128 KiB are mapped afresh, up to 1.8x the CPU for large
    images). Scoring or ingest on such a cluster warns once per cluster, naming the setting and
    how to unset it; a cluster started with it unset is not warned about."""
    import warnings

    import dask
    from distributed import LocalCluster

    from cellbench import parallel

    store, preds, _ = scored
    monkeypatch.setattr(parallel, "_TRIM_TOLD", set())
    with pytest.warns(UserWarning, match=r"2 of 2 Dask workers run with MALLOC_TRIM_THRESHOLD_="):
        score("instance-segmentation", store, "test", preds, scheduler=cluster.scheduler_address)
    # ingest and conversion connect through imap_ordered: told there too
    monkeypatch.setattr(parallel, "_TRIM_TOLD", set())
    with pytest.warns(UserWarning, match=r"Dask workers run with MALLOC_TRIM_THRESHOLD_="):
        got = parallel.imap_ordered(abs, [(-2,), (3,)], scheduler=cluster.scheduler_address)
        assert list(got) == [2, 3]
    with warnings.catch_warnings():
        # the same cluster again: no second warning (other warnings, e.g. a busy dashboard
        # port, are not this test's)
        warnings.filterwarnings("error", message=".*MALLOC_TRIM_THRESHOLD_")
        score("instance-segmentation", store, "test", preds, scheduler=cluster.scheduler_address)
        # (the nanny also writes the variable into this process's environment)
        monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
        unset = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}
        with (
            dask.config.set(unset),
            LocalCluster(
                n_workers=1, processes=True, threads_per_worker=1, host="127.0.0.1",
                dashboard_address=None, worker_dashboard_address=None,
            ) as plain,
        ):  # fmt: skip
            score("instance-segmentation", store, "test", preds, scheduler=plain.scheduler_address)
