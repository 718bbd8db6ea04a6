"""``cellbench export-model RUN --to bioimageio DEST``: a BioImage.IO 0.5 model package.

The package is validated with ``bioimageio.spec``, reproduced with ``bioimageio.core``'s
``test_model`` offline (slow), and submitted back through cellbench's BioImage.IO submission
path, where it scores exactly what the run's own inference scores.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner

from cellbench.cli import main
from cellbench.registry import import_store
from cellbench.training.package import load_package

TASK = "semantic-segmentation"


def _train(make_store, tmp_path, *settings: str):
    """A toy semantic-segmentation run (one epoch) on a registered store, whole-image tiles."""
    store = make_store(TASK)
    import_store(store.path)
    run_dir = tmp_path / "run"
    args = ["train", TASK, "--dataset", str(store.path), "--baseline", "toy-semantic"]
    args += ["--out", str(run_dir), "--epochs", "1", "--workers", "0", "--batch-size", "2", "-q"]
    for setting in (
        "patch_size=16",
        "val_metric=false",
        "samples_per_epoch=4",
        "tile_size=[64,64]",
        *settings,
    ):
        args += ["--set", setting]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    return store, run_dir


@pytest.fixture
def run(make_store, tmp_path):
    """A toy semantic-segmentation run with per-image percentile normalisation."""
    return _train(make_store, tmp_path)


def _export(run_dir, dest, *extra):
    args = ["export-model", str(run_dir), "--to", "bioimageio", str(dest)]
    args += ["--author", "Ada Lovelace", "--license", "MIT", *extra]
    return CliRunner().invoke(main, args)


def test_export_writes_a_valid_package_whose_test_output_is_the_run_model(run, tmp_path):
    store, run_dir = run
    dest = tmp_path / "pkg"
    result = _export(run_dir, dest)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"wrote BioImage.IO model package {dest}"
    assert result.stderr == ""  # submittable as it is
    names = sorted(p.name for p in dest.iterdir())
    assert names == [
        "README.md",
        "cover.png",
        "rdf.yaml",
        "sample_input.tif",
        "sample_output.tif",
        "test_input.npy",
        "test_output.npy",
        "weights.onnx",
        "weights.torchscript.pt",
    ]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".pkg.")]  # no temp left
    rdf = yaml.safe_load((dest / "rdf.yaml").read_text())
    assert rdf["type"] == "model" and rdf["format_version"] == "0.5.4"
    assert rdf["authors"] == [{"name": "Ada Lovelace"}] and rdf["license"] == "MIT"
    (inp,) = rdf["inputs"]
    assert [a["type"] for a in inp["axes"]] == ["batch", "channel", "space", "space"]
    assert [a.get("id") for a in inp["axes"][2:]] == ["y", "x"]
    assert inp["preprocessing"][1] == {
        "id": "scale_range",
        "kwargs": {"axes": ["y", "x"], "min_percentile": 1.0, "max_percentile": 99.8},
    }
    (out,) = rdf["outputs"]
    assert out["id"] == "logits"
    assert out["axes"][1] == {"type": "channel", "channel_names": store.class_names("semantic")}
    assert "# Validation" in (dest / "README.md").read_text().replace(
        "## Validation", "# Validation"
    )

    # the test tensors: a raw test image, and the run's model on it normalised like scale_range
    raw = np.load(dest / "test_input.npy", allow_pickle=False)
    sid = store.sample_ids("test")[0]
    image = np.asarray(store.image(sid)[...], dtype=np.float32)
    assert raw.shape == (1, 1, 40, 32) and np.array_equal(raw[0], image[:, :40, :32])
    tifffile = pytest.importorskip("tifffile")
    assert np.array_equal(tifffile.imread(dest / "sample_input.tif"), raw[0])
    lo, hi = np.percentile(raw[0, 0].astype(np.float64), [1.0, 99.8])
    x = torch.from_numpy(((raw - lo) / (hi - lo + 1e-6)).astype(np.float32))
    package = load_package(run_dir)
    with torch.no_grad():
        expected = package.model(x).numpy()
    np.testing.assert_allclose(np.load(dest / "test_output.npy"), expected, rtol=1e-5, atol=1e-6)

    # the ONNX weights (dynamic axes) give the same output, at another size too
    ort = pytest.importorskip("onnxruntime")
    assert rdf["weights"]["onnx"]["parent"] == "torchscript"
    session = ort.InferenceSession(str(dest / "weights.onnx"), providers=["CPUExecutionProvider"])
    for xin in (x, x[..., :24, :17].contiguous()):
        with torch.no_grad():
            want = package.model(xin).numpy()
        got = session.run(None, {"raw": xin.numpy()})[0]
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)

    # a non-empty DEST is refused with one line, and left as it was
    before = (dest / "rdf.yaml").read_bytes()
    again = _export(run_dir, dest)
    assert again.exit_code == 1
    assert again.stderr.strip().splitlines() == [
        f"error: {dest}: exists and is not an empty folder; choose a new DEST"
    ]
    assert (dest / "rdf.yaml").read_bytes() == before

    # validated by the BioImage.IO spec library (file checks included)
    spec = pytest.importorskip("bioimageio.spec")
    descr = spec.load_description(dest / "rdf.yaml", perform_io_checks=True)
    summary = descr.validation_summary
    assert summary.status in ("passed", "valid-format"), summary.format()
    assert type(descr).__name__ == "ModelDescr"


def test_exported_package_submitted_back_scores_like_the_run(run, tmp_path):
    store, run_dir = run
    dest = tmp_path / "pkg"
    assert _export(run_dir, dest).exit_code == 0
    result, own = _submit_and_score(store, run_dir, dest, tmp_path)
    assert result.manifest.normalisation == {"method": "percentile", "low": 1.0, "high": 99.8}
    assert result.report.headline.name == own.headline.name
    assert result.report.headline.value == pytest.approx(own.headline.value, abs=1e-12)
    assert json.loads(json.dumps(result.report.provenance.extra["bioimageio"]))["name"]


def _submit_and_score(store, run_dir, dest, tmp_path):
    """The package submitted as ``kind: bioimageio``, and the run's own test-split report."""
    from cellbench.scoring import score
    from cellbench.submissions import submit
    from cellbench.training.inference import write_split_predictions

    preds = write_split_predictions(run_dir, store, "test", tmp_path / "own.zarr", progress=False)
    own = score(TASK, store, "test", preds, n_bootstrap=20)
    manifest = tmp_path / "bioimageio.yaml"
    manifest.write_text(
        yaml.safe_dump(
            {
                "name": "exported toy",
                "authors": ["Ada Lovelace"],
                "contact": "ada@example.org",
                "code": {"url": "https://example.org/code", "commit": "abcdef0"},
                "training_data": "train split",
                "n_parameters": 100,
                "seed": 0,
                "hardware": "cpu",
                "license": "MIT",
                "task": TASK,
                "dataset": f"{store.id}@{store.version}",
                "split": "test",
                "kind": "bioimageio",
                "submission": str(dest),
            }
        )
    )
    return submit(manifest, root=tmp_path / "lb", n_bootstrap=20), own


def test_unexportable_models_and_bad_options_are_one_line(make_store, tmp_path):
    store = make_store("instance-segmentation")
    run_dir = tmp_path / "run"
    args = ["train", "instance-segmentation", "--dataset", str(store.path)]
    args += ["--baseline", "toy-instance", "--out", str(run_dir), "--epochs", "1", "-q"]
    args += ["--workers", "0", "--batch-size", "2", "--set", "patch_size=16"]
    args += ["--set", "val_metric=false", "--set", "samples_per_epoch=4"]
    assert CliRunner().invoke(main, args).exit_code == 0
    result = _export(run_dir, tmp_path / "pkg")
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "error: baseline 'toy-instance' cannot be exported as one network: its prediction "
        "needs post-processing outside the network"
    )
    assert not (tmp_path / "pkg").exists()
    bad = _export(run_dir, tmp_path / "pkg2", "--name", "a/b@c")
    assert bad.exit_code == 1 and "may hold only letters" in bad.stderr


@pytest.mark.parametrize(
    ("mode", "op"),
    [("dataset-meanstd", "fixed_zero_mean_unit_variance"), ("dataset-percentile", "scale_linear")],
)
def test_dataset_normalisation_becomes_fixed_preprocessing(make_store, tmp_path, mode, op):
    store, run_dir = _train(make_store, tmp_path, f"normalisation={mode}")
    dest = tmp_path / "pkg"
    result = _export(run_dir, dest)
    assert result.exit_code == 0 and result.stderr == ""  # submittable as it is
    rdf = yaml.safe_load((dest / "rdf.yaml").read_text())
    steps = rdf["inputs"][0]["preprocessing"]
    assert [s["id"] for s in steps] == ["ensure_dtype", op]
    ((offset, scale),) = load_package(run_dir).normaliser.channel_stats
    kwargs = steps[1]["kwargs"]
    if op == "scale_linear":
        assert kwargs["gain"] == [pytest.approx(1 / scale)]
        assert kwargs["offset"] == [pytest.approx(-offset / scale)]
    else:
        assert kwargs == {"axis": "channel", "mean": [offset], "std": [scale]}
    # the test output is the model on the input normalised with the run's own statistics
    raw = np.load(dest / "test_input.npy")
    x = torch.from_numpy(((raw - offset) / scale).astype(np.float32))
    with torch.no_grad():
        want = load_package(run_dir).model(x).numpy()
    np.testing.assert_allclose(np.load(dest / "test_output.npy"), want, rtol=1e-5, atol=1e-5)
    # submitted back, it runs with the same fixed statistics and scores like the run
    result, own = _submit_and_score(store, run_dir, dest, tmp_path)
    norm = result.manifest.normalisation
    assert norm["method"] == "affine"
    assert norm["offset"] == [pytest.approx(offset)]
    assert norm["scale"] == [pytest.approx(scale, rel=1e-6)]
    assert result.report.headline.value == pytest.approx(own.headline.value, abs=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["percentile", "dataset-meanstd", "dataset-percentile", "none"])
def test_bioimageio_core_reproduces_the_package_offline(make_store, tmp_path, monkeypatch, mode):
    """``bioimageio.core.test_model`` runs the weights on the test input and compares.

    Nothing may be fetched: every proxy points at a closed loopback port and the BioImage.IO
    cache is a temp folder.
    """
    _, run_dir = _train(make_store, tmp_path, f"normalisation={mode}")
    dest = tmp_path / "pkg"
    assert _export(run_dir, dest).exit_code == 0
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    monkeypatch.setenv("NO_PROXY", "")
    monkeypatch.setenv("BIOIMAGEIO_CACHE_PATH", str(tmp_path / "bioimageio-cache"))
    core = pytest.importorskip("bioimageio.core")
    summary = core.test_model(dest / "rdf.yaml")
    assert summary.status in ("passed", "valid-format"), summary.format()
    passed = {d.name for d in summary.details if d.status == "passed"}
    for fmt in ("torchscript", "onnx"):
        assert f"Reproduce test outputs from test inputs ({fmt})" in passed, passed
        assert (
            f"Run {fmt} inference for inputs with batch_size: 2 and size parameter n: 2" in passed
        )
    assert all(d.status != "failed" for d in summary.details), summary.format()


@pytest.mark.parametrize(
    ("task", "baseline", "output"),
    [
        ("classification", "toy-classifier", ["batch", "channel"]),
        ("augmented-microscopy", "toy-regressor", ["batch", "channel", "space", "space"]),
    ],
)
def test_export_of_other_tasks_is_valid(make_store, tmp_path, task, baseline, output):
    spec = pytest.importorskip("bioimageio.spec")
    store = make_store(task)
    run_dir = tmp_path / "run"
    args = ["train", task, "--dataset", str(store.path), "--baseline", baseline]
    args += ["--out", str(run_dir), "--epochs", "1", "--workers", "0", "--batch-size", "2", "-q"]
    for setting in ("patch_size=16", "val_metric=false", "samples_per_epoch=4"):
        args += ["--set", setting]
    trained = CliRunner().invoke(main, args)
    assert trained.exit_code == 0, trained.output
    dest = tmp_path / "pkg"
    result = _export(run_dir, dest)
    assert result.exit_code == 0, result.output
    rdf = yaml.safe_load((dest / "rdf.yaml").read_text())
    (out,) = rdf["outputs"]
    assert [a["type"] for a in out["axes"]] == output
    names = out["axes"][1]["channel_names"]
    if task == "classification":
        assert names == ["left", "right", "top"] and out["id"] == "logits"
    else:
        assert names == ["fluo"] and out["id"] == "prediction"
    got = np.load(dest / "test_output.npy")
    raw = np.load(dest / "test_input.npy")
    assert got.shape[0] == 1 and (got.ndim == 2 or got.shape[2:] == raw.shape[2:])
    summary = spec.load_description(dest / "rdf.yaml", perform_io_checks=True).validation_summary
    assert summary.status in ("passed", "valid-format"), summary.format()


def test_3d_export_with_few_z_planes(make_store, tmp_path):
    spec = pytest.importorskip("bioimageio.spec")
    store = make_store(TASK, size=(6, 20, 26))
    run_dir = tmp_path / "run"
    args = ["train", TASK, "--dataset", str(store.path), "--baseline", "toy-semantic"]
    args += ["--out", str(run_dir), "--epochs", "1", "--workers", "0", "--batch-size", "2", "-q"]
    for setting in ("patch_size=[4,16,16]", "val_metric=false", "samples_per_epoch=4"):
        args += ["--set", setting]
    assert CliRunner().invoke(main, args).exit_code == 0
    dest = tmp_path / "pkg"
    result = _export(run_dir, dest)
    assert result.exit_code == 0, result.output
    rdf = yaml.safe_load((dest / "rdf.yaml").read_text())
    space = rdf["inputs"][0]["axes"][2:]
    assert [(a["id"], a["size"]) for a in space] == [
        ("z", {"min": 6, "step": 8}),
        ("y", {"min": 16, "step": 8}),
        ("x", {"min": 16, "step": 8}),
    ]
    assert np.load(dest / "test_input.npy").shape == (1, 1, 6, 16, 24)
    assert np.load(dest / "test_output.npy").shape == (1, 3, 6, 16, 24)
    summary = spec.load_description(dest / "rdf.yaml", perform_io_checks=True).validation_summary
    assert summary.status in ("passed", "valid-format"), summary.format()
