"""End to end: a small dataset, predictions from a perturbed ground truth, submit, show, publish.

Numbers are checked against hand-derived values (perfect predictions; predictions missing known
objects) and against each other across the report, the entry files, the terminal table and the
published JSON, Markdown and HTML.
"""

import json
import multiprocessing as mp
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml

from cellbench.errors import ValidationError
from cellbench.leaderboard import (
    BoardKey,
    LeaderboardEntry,
    LeaderboardStore,
    publish,
    rank_entries,
)
from cellbench.predictions import Prediction, PredictionWriter, digest_path, load_predictions
from cellbench.registry import import_store, pull
from cellbench.report import ScoreReport
from cellbench.store.zarr_store import build_store
from cellbench.submissions import submit
from tests.factories import toy_samples
from tests.submissions.models import (
    Classifier,
    Threshold,
    percentile_normalised,
    script,
    submit_in_process,
)

CARD = {
    "id": "toy-classes",
    "version": "1.0",
    "title": "Toy classes",
    "tasks": ["classification"],
    "license": "CC0-1.0",
    "citation": "cellbench test data",
    "annotation": {"provenance": "simulated"},
    "splits": {"method": "every fourth image is test"},
}
KEY = BoardKey("synthetic-nuclei", "1.0", "instance-segmentation", "test")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """The catalog's synthetic-nuclei (16 test images), pulled into a module-wide home."""
    home = tmp_path_factory.mktemp("home")
    mp = pytest.MonkeyPatch()
    mp.setenv("CELLBENCH_HOME", str(home))
    store = pull("synthetic-nuclei", progress=False)
    yield store, home
    mp.undo()


@pytest.fixture(autouse=True)
def _same_home(dataset, monkeypatch):
    monkeypatch.setenv("CELLBENCH_HOME", str(dataset[1]))


def ground_truth(store) -> dict[str, np.ndarray]:
    return {s: np.asarray(store.labels(s)[...]).astype(np.int32) for s in store.sample_ids("test")}


def write_zarr(path: Path, masks: dict[str, np.ndarray]) -> Path:
    with PredictionWriter(path, "instance-segmentation", "synthetic-nuclei", "1.0", "test") as w:
        for sid, mask in masks.items():
            w.add(Prediction(sid, mask=mask))
    return path


def drop_first_object(masks: dict[str, np.ndarray], only: str | None = None) -> dict:
    out = {}
    for sid, m in masks.items():
        m = m.copy()
        if only is None or sid == only:
            m[m == np.unique(m[m > 0])[0]] = 0
        out[sid] = m
    return out


def manifest(folder: Path, name: str, seed: int, submission: str, **over) -> Path:
    data = {
        "name": name,
        "authors": ["Test Author"],
        "contact": "test@example.org",
        "code": {"url": "https://example.org/code", "commit": "abcdef0"},
        "training_data": "none (perturbed ground truth)",
        "n_parameters": 0,
        "seed": seed,
        "hardware": "2-core CPU",
        "license": "CC0-1.0",
        "task": "instance-segmentation",
        "dataset": "synthetic-nuclei@1.0",
        "split": "test",
        "kind": "predictions",
        "submission": submission,
        **over,
    }
    path = folder / f"{name.replace(' ', '_')}-{seed}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


class Cells(HTMLParser):
    """Rows of ``table#leaderboard``: (text, data-value) per cell."""

    def __init__(self):
        super().__init__()
        self.on, self.body, self.rows, self.cell, self.value = False, False, [], None, None
        self.names: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self.on = a.get("id") == "leaderboard"
        elif self.on and tag == "tbody":
            self.body = True
        elif self.on and self.body and tag == "tr":
            self.rows.append([])
            self.names.append(a.get("data-entry", ""))
        elif self.on and self.body and tag == "td":
            self.cell, self.value = [], a.get("data-value")

    def handle_endtag(self, tag):
        if tag == "td" and self.cell is not None:
            self.rows[-1].append(("".join(self.cell).strip(), self.value))
            self.cell = None
        elif tag == "table":
            self.on = self.body = False

    def handle_data(self, data):
        if self.cell is not None:
            self.cell.append(data)


def test_submit_show_publish_numbers_agree(dataset, tmp_path, cli_cmd, cli_env):
    store, _ = dataset
    gt = ground_truth(store)
    n_objects = sum(len(np.unique(m[m > 0])) for m in gt.values())
    root = tmp_path / "leaderboards"
    subs = tmp_path / "subs"
    subs.mkdir()

    # "oracle": the ground truth itself (seed 0), and two replicates missing one object each
    write_zarr(subs / "oracle-0.zarr", gt)
    first = sorted(gt)[0]
    write_zarr(subs / "oracle-1.zarr", drop_first_object(gt, only=first))
    write_zarr(subs / "oracle-2.zarr", drop_first_object(gt, only=sorted(gt)[1]))
    # "drop-one": misses the first object of every test image, submitted as a TIFF folder
    tif = subs / "drop-one"
    tif.mkdir()
    for sid, mask in drop_first_object(gt).items():
        tifffile.imwrite(tif / f"{sid}.tif", mask.astype(np.uint16))

    results = {}
    for seed in range(3):
        results[("oracle", seed)] = submit(
            manifest(subs, "oracle", seed, f"oracle-{seed}.zarr"), root=root, n_bootstrap=200
        )
    # the drop-one entry goes through the command line
    env = {**cli_env, "CELLBENCH_HOME": str(dataset[1])}
    drop_manifest = manifest(subs, "drop-one", 0, "drop-one")
    cli = subprocess.run(
        [
            *cli_cmd,
            "submit",
            str(drop_manifest),
            "--root",
            str(root),
            "--n-bootstrap",
            "200",
            "--report",
            str(tmp_path / "drop-report.json"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert cli.returncode == 0, cli.stderr
    entry_file = next((root / KEY.path / "entries").glob("drop-one-*__seed-0.json"))
    assert f"added {entry_file}" in cli.stdout
    drop_entry = LeaderboardEntry.from_json(entry_file.read_text())
    drop_report = ScoreReport.load(tmp_path / "drop-report.json")
    assert drop_report.to_dict() == drop_entry.report.to_dict()

    # hand-derived values: perfect predictions give AP 1; missing objects lower recall only
    perfect = results[("oracle", 0)].report
    assert perfect.headline.name == "coco_ap/ap" and perfect.headline.value == 1.0
    assert perfect.metrics["matching_scores/f1_pooled@0.50"] == 1.0
    drop = drop_report
    tp = n_objects - len(gt)
    recall = tp / n_objects
    assert abs(100 * recall - round(100 * recall)) > 1e-6  # no recall point on the boundary
    # no false positives: precision 1 up to the reached recall, 0 beyond (101 recall points)
    expected_ap = (np.floor(100 * recall) + 1) / 101
    assert drop.headline.value == pytest.approx(expected_ap, abs=1e-12)
    assert drop.metrics["matching_scores/f1_pooled@0.50"] == pytest.approx(
        2 * tp / (2 * tp + len(gt))
    )
    assert drop.metrics["object_errors/missed"] == len(gt)
    assert drop.headline.ci_low <= drop.headline.value <= drop.headline.ci_high

    # provenance of a result
    prov = drop.provenance
    assert prov.dataset_checksum == store.checksum and prov.created
    assert prov.extra["submission_kind"] == "predictions"
    assert len(prov.extra["submission_sha256"]) == 64 and prov.runtime_s is None
    assert drop_entry.submission_sha256 == prov.extra["submission_sha256"]
    assert drop_entry.manifest_sha256 == prov.extra["manifest_sha256"]
    assert drop_entry.predictions_uri == str((subs / "drop-one").resolve())
    oracle_entry = LeaderboardEntry.from_json(Path(results[("oracle", 0)].entry_path).read_text())
    assert oracle_entry.report.to_dict() == perfect.to_dict()
    assert f"coco_ap/ap = {drop.headline.value:.4f}" in cli.stdout

    # the terminal table
    show = subprocess.run(
        [
            *cli_cmd,
            "leaderboard",
            "show",
            "synthetic-nuclei",
            "instance-segmentation",
            "--root",
            str(root),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert show.returncode == 0, show.stderr
    oracle_values = [results[("oracle", s)].report.headline.value for s in range(3)]
    mean, std = float(np.mean(oracle_values)), float(np.std(oracle_values, ddof=1))
    oracle_line = next(line for line in show.stdout.splitlines() if "oracle" in line)
    assert f"{mean:.4f} ± {std:.4f}" in oracle_line

    # publish and compare JSON, Markdown and HTML
    site = publish(LeaderboardStore(root), tmp_path / "site").out
    board = json.loads((site / KEY.path / "leaderboard.json").read_text())
    rows = {r["name"]: r for r in board["rows"]}
    assert list(rows) == ["oracle", "drop-one"] or list(rows) == ["drop-one", "oracle"]
    assert rows["oracle"]["headline"]["mean"] == pytest.approx(mean, abs=1e-15)
    assert rows["oracle"]["headline"]["std"] == pytest.approx(std, abs=1e-15)
    assert rows["oracle"]["n_seeds"] == 3 and not rows["oracle"]["few_seeds"]
    assert rows["drop-one"]["headline"]["mean"] == drop.headline.value
    assert rows["drop-one"]["headline"]["ci_low"] == drop.headline.ci_low
    assert rows["drop-one"]["few_seeds"]
    assert rows["drop-one"]["metrics"]["object_errors/missed"]["mean"] == len(gt)

    md = (site / KEY.path / "README.md").read_text()
    parser = Cells()
    parser.feed((site / KEY.path / "index.html").read_text())
    html_rows = dict(zip(parser.names, parser.rows, strict=True))
    assert parser.names == list(rows)  # same order as the JSON
    for name, row in rows.items():
        h = row["headline"]
        shown = f"{h['mean']:.4f}" + (f" ± {h['std']:.4f}" if h["std"] is not None else "")
        interval = f"[{h['ci_low']:.4f}, {h['ci_high']:.4f}]"
        md_line = next(
            line
            for line in md.splitlines()
            if line.startswith("|") and f"[{name}](https://example.org/code)" in line
        )
        assert f"| {shown} | {interval} |" in md_line
        cells = html_rows[name]
        assert cells[3] == (shown, repr(h["mean"]))
        assert cells[4][0] == interval
    # the plots and overlays of the top entries are on the page
    page = (site / KEY.path / "index.html").read_text()
    for rel in ("plots/bar-coco_ap--ap.png", "plots/curves-matching_scores.png"):
        assert f'src="{rel}"' in page and (site / KEY.path / rel).is_file()
    overlays = sorted((site / KEY.path / "plots").glob("overlay-*.png"))
    assert len(overlays) == 2 and all(f'src="plots/{p.name}"' in page for p in overlays)
    assert board["publish_notes"] == []


def test_model_submission_records_runtime_and_memory(dataset, tmp_path):
    _store, _ = dataset
    model = script(Threshold(), tmp_path / "threshold.pt")
    path = manifest(tmp_path, "threshold", 0, model.name, kind="torchscript")
    result = submit(path, root=tmp_path / "lb", n_bootstrap=50, predictions_dir=tmp_path / "p")
    prov = result.report.provenance
    assert prov.runtime_s > 0 and prov.peak_memory_mb > 10
    assert prov.extra["resources"]["method"]["memory"].startswith("peak resident set size")
    assert prov.extra["submission_kind"] == "torchscript"
    assert Path(result.entry.predictions_uri).is_dir()
    assert result.entry.predictions_uri.startswith(str(tmp_path / "p"))
    assert 0.0 <= result.report.headline.value <= 1.0


def test_eight_submissions_at_once_lose_nothing(dataset, tmp_path):
    store, home = dataset
    gt = ground_truth(store)
    root = tmp_path / "lb"
    jobs = []
    for seed in range(8):
        masks = drop_first_object(gt, only=sorted(gt)[seed % len(gt)]) if seed else gt
        write_zarr(tmp_path / f"p{seed}.zarr", masks)
        jobs.append(str(manifest(tmp_path, "parallel", seed, f"p{seed}.zarr")))
    # forkserver: the heavy imports happen once, then 8 processes run `submit` for real
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(
        ["cellbench.submissions", "cellbench.scoring", "tests.submissions.models"]
    )
    with ctx.Manager() as manager:
        barrier = manager.Barrier(len(jobs))
        with ctx.Pool(len(jobs)) as pool:
            paths = pool.starmap(
                submit_in_process, [(j, str(root), str(home), barrier) for j in jobs]
            )
    files = sorted((root / KEY.path / "entries").iterdir())
    assert sorted(paths) == [str(f) for f in files]
    assert [f.name.rsplit("__", 1)[1] for f in files] == sorted(f"seed-{s}.json" for s in range(8))
    entries = [LeaderboardEntry.from_json(f.read_text()) for f in files]
    assert sorted(e.seed for e in entries) == list(range(8))
    perfect = next(e for e in entries if e.seed == 0)
    assert perfect.report.headline.value == 1.0
    board = rank_entries(KEY, LeaderboardStore(root).entries(KEY))
    assert len(board.rows) == 1 and board.rows[0].seeds == list(range(8))


def test_classification_csv_submission_and_confusion_matrix(tmp_path, monkeypatch):
    card = CARD
    home = tmp_path / "home"
    monkeypatch.setenv("CELLBENCH_HOME", str(home))
    store = build_store(
        toy_samples("classification", n=24),
        tmp_path / "cls.zarr",
        card,
        {"label": ["nucleus", "cytoplasm", "membrane"]},
    )
    import_store(store.path)
    ids = store.sample_ids("test")
    truth = [store.label(s) for s in ids]
    predicted = [(t + 1) % 3 if i == 0 else t for i, t in enumerate(truth)]  # one mistake
    rows = ["sample_id,label"] + [f"{s},{p}" for s, p in zip(ids, predicted, strict=True)]
    (tmp_path / "preds.csv").write_text("\n".join(rows) + "\n")
    path = manifest(
        tmp_path, "csv", 0, "preds.csv", task="classification", dataset="toy-classes@1.0"
    )
    root = tmp_path / "lb"
    report = submit(path, root=root, n_bootstrap=50).report
    expected = np.zeros((3, 3), int)
    for t, p in zip(truth, predicted, strict=True):
        expected[t, p] += 1
    details = next(r["details"] for r in report.results if "confusion_matrix" in r["details"])
    assert np.array_equal(np.asarray(details["confusion_matrix"]), expected)
    assert report.metrics["classification/accuracy"] == pytest.approx((len(ids) - 1) / len(ids))
    site = publish(LeaderboardStore(root), tmp_path / "site").out
    key = BoardKey("toy-classes", "1.0", "classification", "test")
    confusion = list((site / key.path / "plots").glob("confusion-*.png"))
    assert len(confusion) == 1
    assert f'src="plots/{confusion[0].name}"' in (site / key.path / "index.html").read_text()


def test_safetensors_package_submission(tmp_path, monkeypatch):
    from tests.submissions.models import linear_classifier_package

    card = CARD
    monkeypatch.setenv("CELLBENCH_HOME", str(tmp_path / "home"))
    store = build_store(
        toy_samples("classification", n=12), tmp_path / "cls.zarr", card, {"label": ["a", "b", "c"]}
    )
    import_store(store.path)
    package = linear_classifier_package(tmp_path / "pkg", "toy-classes@1.0")
    path = manifest(
        tmp_path,
        "package",
        0,
        "pkg",
        task="classification",
        dataset="toy-classes@1.0",
        kind="safetensors",
    )
    result = submit(path, root=tmp_path / "lb", n_bootstrap=20, predictions_dir=tmp_path / "p")
    prov = result.report.provenance
    assert prov.extra["baseline"] == "test-mean-classifier"
    assert prov.extra["measured_parameters"] == 6 and prov.runtime_s > 0
    assert result.entry.submission_sha256 == digest_path(package)
    # reference: percentile-normalised channel means through the fixed weights
    w = Classifier().weight.detach().numpy().astype(np.float64)
    preds = load_predictions(result.entry.predictions_uri, "classification")
    for sid in store.sample_ids("test"):
        x = percentile_normalised(np.asarray(store.image(sid)[...]))
        assert preds.get(sid).label == int(np.argmax(w @ x.mean(axis=(1, 2))))


def test_prediction_and_manifest_problems_listed_together(dataset, tmp_path):
    store, _ = dataset
    gt = ground_truth(store)
    ids = sorted(gt)
    masks = {s: gt[s] for s in ids[1:]}  # the first test image is missing
    masks[ids[1]] = gt[ids[1]][:-2]  # wrong shape
    masks["not-a-test-image"] = gt[ids[2]]  # extra sample
    write_zarr(tmp_path / "bad.zarr", masks)
    path = manifest(tmp_path, "bad", 0, "bad.zarr", license="", hardware=None)
    root = tmp_path / "lb"
    with pytest.raises(ValidationError) as err:
        submit(path, root=root)
    problems = err.value.problems
    h, w = gt[ids[1]].shape
    assert "license: must not be empty" in problems and "hardware: required" in problems
    assert f"predictions: 1 sample(s) of split 'test' not predicted: {ids[0]}" in problems
    assert "predictions: 1 predicted sample(s) not in split 'test': not-a-test-image" in problems
    assert any(
        p.startswith(f"predictions: sample {ids[1]!r}: mask shape ({h - 2}, {w})") for p in problems
    )
    assert not root.exists()


def test_semantic_submission_pixel_confusion(dataset, tmp_path):
    from sklearn.metrics import jaccard_score

    store, _ = dataset
    ids = store.sample_ids("test")
    truth = {s: np.asarray(store.labels(s, "semantic")[...]) for s in ids}
    rng = np.random.default_rng(0)
    preds = {}
    for sid, t in truth.items():
        p = t.copy()
        flip = rng.random(p.shape) < 0.05  # 5% of pixels get the next class
        p[flip] = (p[flip] + 1) % 3
        preds[sid] = p
    with PredictionWriter(
        tmp_path / "sem.zarr", "semantic-segmentation", "synthetic-nuclei", "1.0", "test"
    ) as w:
        for sid, p in preds.items():
            w.add(Prediction(sid, mask=p))
    path = manifest(tmp_path, "semantic", 0, "sem.zarr", task="semantic-segmentation")
    root = tmp_path / "lb"
    report = submit(path, root=root, n_bootstrap=20).report
    y_true = np.concatenate([truth[s].ravel() for s in ids])
    y_pred = np.concatenate([preds[s].ravel() for s in ids])
    reference = jaccard_score(y_true, y_pred, average=None, labels=[0, 1, 2])
    assert report.headline.name == "semantic_segmentation/mean_jaccard_pooled"
    # the task's headline averages the non-background classes (background dominates pixels)
    assert report.headline.value == pytest.approx(reference[1:].mean(), abs=1e-12)
    site = publish(LeaderboardStore(root), tmp_path / "site").out
    key = BoardKey("synthetic-nuclei", "1.0", "semantic-segmentation", "test")
    assert len(list((site / key.path / "plots").glob("confusion-*.png"))) == 1
    assert "numbers are pixel counts" in (site / key.path / "index.html").read_text()


def test_prediction_set_submitted_from_s3_scores_like_its_folder(
    dataset, tmp_path, s3_endpoint, s3_bucket
):
    """A manifest may name a canonical prediction set on object storage by URL: it is scored
    where it is (no download step), the entry records the URL, and its digests are the ones
    the same folder gets locally. A model named by URL is refused in one line."""
    from cellbench.store.remote import filesystem
    from cellbench.submissions import evaluate_submission

    store, _ = dataset
    subs = tmp_path / "subs"
    subs.mkdir()
    folder = write_zarr(subs / "drop.zarr", drop_first_object(ground_truth(store)))
    fs, _ = filesystem(f"s3://{s3_bucket}")
    fs.put(str(folder), f"{s3_bucket}/team/drop.zarr", recursive=True)
    url = f"s3://{s3_bucket}/team/drop.zarr"

    near = submit(manifest(subs, "near", 0, "drop.zarr"), root=tmp_path / "a", n_bootstrap=50)
    far = submit(manifest(subs, "far", 0, url + "/"), root=tmp_path / "b", n_bootstrap=50)
    same = json.dumps([far.report.metrics, far.report.per_sample], sort_keys=True)
    assert same == json.dumps([near.report.metrics, near.report.per_sample], sort_keys=True)
    assert 0 < far.report.headline.value < 1
    digest = digest_path(folder)
    assert far.entry.submission_sha256 == near.entry.submission_sha256 == digest
    assert far.report.provenance.predictions_sha256 == digest
    assert far.entry.predictions_uri == far.predictions_path == url
    assert near.entry.predictions_uri == str(folder.resolve())
    assert LeaderboardEntry.from_json(Path(far.entry_path).read_text()).predictions_uri == url

    with pytest.raises(ValidationError) as err:
        evaluate_submission(manifest(subs, "model", 0, url, kind="onnx"))
    assert (
        f"submission: {url}: only a prediction set is read from a URL (kind 'predictions'); "
        "a onnx model must be a local file"
    ) in err.value.problems


def test_a_local_prediction_set_is_digested_once(dataset, tmp_path, monkeypatch):
    """The submission's digest and the report's predictions_sha256 are one definition over the
    same files: each file is hashed once, and both equal the folder's digest_path."""
    import cellbench.predictions as predictions_module

    store, _ = dataset
    subs = tmp_path / "subs"
    subs.mkdir()
    folder = write_zarr(subs / "drop.zarr", drop_first_object(ground_truth(store)))
    digest = digest_path(folder)
    hashed: list[str] = []
    real = predictions_module._file_sha256
    monkeypatch.setattr(
        predictions_module, "_file_sha256", lambda p: hashed.append(str(p)) or real(p)
    )
    result = submit(manifest(subs, "once", 0, "drop.zarr"), root=tmp_path / "lb", n_bootstrap=20)
    assert result.entry.submission_sha256 == digest
    assert result.report.provenance.predictions_sha256 == digest
    n_files = sum(1 for p in folder.rglob("*") if p.is_file())
    assert len(hashed) == len(set(hashed)) == n_files
