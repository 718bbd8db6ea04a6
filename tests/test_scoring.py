"""score(): every task end to end, groups, bootstrap CIs, validation and the CLI."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from cellbench.cli import main
from cellbench.errors import CellbenchError, ValidationError
from cellbench.metrics.coco import CocoAP
from cellbench.metrics.instance import MatchingScores
from cellbench.predictions import Prediction, PredictionSet, write_predictions
from cellbench.registry import pull
from cellbench.report import ScoreReport
from cellbench.scoring import bootstrap_ci, score
from cellbench.tasks import get_task, task_names
from cellbench.tasks.tracking.ctc import write_ctc_result

SMALL = {
    "synthetic-nuclei": {"n_images": 12},
    "synthetic-protein-localisation": {"n_images": 40},
    "synthetic-timelapse": {"n_sequences": 4, "n_frames": 8},
    "synthetic-label-free": {"n_images": 8},
}
TASK_DATA = {
    "instance-segmentation": "synthetic-nuclei",
    "semantic-segmentation": "synthetic-nuclei",
    "classification": "synthetic-protein-localisation",
    "tracking": "synthetic-timelapse",
    "augmented-microscopy": "synthetic-label-free",
}


def _store(task):
    ident = TASK_DATA[task]
    return pull(ident, options=SMALL[ident], progress=False)


def _perfect(task, store, split="test"):
    preds = []
    for sid in store.sample_ids(split):
        s = store.sample(sid)
        if task == "classification":
            preds.append(
                Prediction(sid, label=s.label, scores=np.eye(4, dtype=np.float32)[s.label])
            )
        elif task == "instance-segmentation":
            preds.append(Prediction(sid, mask=s.instances))
        elif task == "semantic-segmentation":
            preds.append(Prediction(sid, mask=s.semantic))
        elif task == "tracking":
            preds.append(Prediction(sid, mask=s.instances, tracks=s.tracks))
        else:
            preds.append(Prediction(sid, image=s.target))
    return PredictionSet.from_predictions(task, preds, store.id, store.version, split)


def _drop_objects(labels, rng, fraction=0.3):
    ids = np.unique(labels)[1:]
    gone = rng.choice(ids, size=max(1, int(fraction * ids.size)), replace=False)
    out = labels.copy()
    out[np.isin(out, gone)] = 0
    return out


@pytest.mark.parametrize("task", sorted(TASK_DATA))
def test_perfect_predictions_score_one(task):
    store = _store(task)
    report = score(task, store, "test", _perfect(task, store), n_bootstrap=50)
    spec = get_task(task)
    assert report.headline.name == spec.headline
    assert report.headline.value == pytest.approx(1.0)
    assert report.headline.ci_low == pytest.approx(1.0)
    assert report.provenance.dataset_checksum == store.checksum
    assert {g.field for g in report.groups} == {"microscope", "cell_line", "plate"}
    assert set(report.per_sample) == set(store.sample_ids("test"))
    # JSON round trip is lossless
    again = ScoreReport.from_json(report.to_json())
    assert again.to_json() == report.to_json()


def test_instance_scores_equal_direct_metric_calls():
    store = _store("instance-segmentation")
    rng = np.random.default_rng(3)
    ids = store.sample_ids("test")
    gts = [np.asarray(store.labels(s, "instances")[...]) for s in ids]
    preds = [_drop_objects(g, rng) for g in gts]
    scores = [{int(i): float(rng.random()) for i in np.unique(p)[1:]} for p in preds]
    pset = PredictionSet.from_predictions(
        "instance-segmentation",
        [
            Prediction(
                s, mask=p, object_ids=np.array(list(sc)), object_scores=np.array(list(sc.values()))
            )
            for s, p, sc in zip(ids, preds, scores, strict=True)
        ],
    )
    report = score("instance-segmentation", store, "test", pset, n_bootstrap=0)
    largest = max(
        int(np.unique(np.asarray(store.labels(s, "instances")[...])).size - 1) for s in ids
    )
    direct = CocoAP(max_dets=max(100, largest)).compute(gts, preds, scores).values
    assert report.metrics["coco_ap/ap"] == pytest.approx(direct["ap"], abs=1e-12)
    assert report.metrics["coco_ap/ap@0.50"] == pytest.approx(direct["ap@0.50"], abs=1e-12)
    matching = MatchingScores().compute(gts, preds).values
    assert report.metrics["matching_scores/f1_pooled@0.50"] == pytest.approx(
        matching["f1_pooled@0.50"]
    )
    assert 0 < report.headline.value < 1
    assert any("maxDets" in n and str(max(100, largest)) in n for n in report.notes)
    # per-group values are the metric on that group's images alone
    micro = next(g for g in report.groups if g.field == "microscope")
    for group, values in micro.values.items():
        sel = [i for i, s in enumerate(ids) if store.metadata(s)["microscope"] == group]
        sub = (
            CocoAP(max_dets=max(100, largest))
            .compute([gts[i] for i in sel], [preds[i] for i in sel], [scores[i] for i in sel])
            .values
        )
        assert values["coco_ap/ap"] == pytest.approx(sub["ap"], abs=1e-12)
        assert micro.counts[group] == len(sel)


def test_worst_group_is_the_badly_predicted_one():
    store = _store("semantic-segmentation")
    ids = store.sample_ids("test")
    field = next(
        c
        for c in ("cell_line", "well", "site")
        if len({str(store.metadata(s)[c]) for s in ids}) >= 2
    )
    lines = sorted({str(store.metadata(s)[field]) for s in ids})
    preds = []
    for sid in ids:
        s = store.sample(sid)
        bad = str(store.metadata(sid)[field]) == lines[1]
        preds.append(Prediction(sid, mask=np.zeros_like(s.semantic) if bad else s.semantic))
    report = score(
        "semantic-segmentation",
        store,
        "test",
        PredictionSet.from_predictions("semantic-segmentation", preds),
        n_bootstrap=0,
        groups=[field],
    )
    by_line = next(g for g in report.groups if g.field == field)
    assert by_line.worst_group == lines[1]
    assert by_line.values[lines[0]]["semantic_segmentation/mean_jaccard_pooled"] == 1.0
    assert by_line.worst_value == 0.0


def test_bootstrap_ci_matches_a_hand_rolled_percentile_bootstrap():
    values = list(np.linspace(0, 1, 9))
    low, high = bootstrap_ci(lambda s: float(np.mean(s)), values, 500, seed=7)
    rng = np.random.default_rng(7)
    boots = [np.mean([values[i] for i in rng.integers(0, 9, 9)]) for _ in range(500)]
    assert (low, high) == pytest.approx((np.quantile(boots, 0.025), np.quantile(boots, 0.975)))
    assert bootstrap_ci(np.mean, values, 0) != bootstrap_ci(np.mean, values, 10)  # NaNs vs numbers


def test_imperfect_classification_ci_brackets_value_and_is_reproducible():
    store = _store("classification")
    pset = _perfect("classification", store)
    preds = list(pset)
    for p in preds[::3]:
        p.label = (p.label + 1) % 4
    pset = PredictionSet.from_predictions("classification", preds)
    a = score("classification", store, "test", pset, n_bootstrap=300, seed=1)
    b = score("classification", store, "test", pset, n_bootstrap=300, seed=1)
    assert a.headline.ci_low < a.headline.value < a.headline.ci_high
    assert (a.headline.ci_low, a.headline.ci_high) == (b.headline.ci_low, b.headline.ci_high)
    assert a.results[0]["details"]["confusion_matrix"]


def test_every_problem_is_reported_at_once():
    store = _store("instance-segmentation")
    ids = store.sample_ids("test")
    preds = [
        Prediction(ids[0], mask=np.zeros((5, 5), np.uint16)),
        Prediction(ids[1], mask=np.zeros_like(store.sample(ids[1]).instances, dtype=np.float32)),
        Prediction(
            ids[2],
            mask=store.sample(ids[2]).instances,
            object_ids=np.array([1]),
            object_scores=np.array([np.nan]),
        ),
        Prediction("not-a-sample", mask=np.zeros((5, 5), np.uint16)),
    ]
    with pytest.raises(ValidationError) as err:
        score(
            "instance-segmentation",
            store,
            "test",
            PredictionSet.from_predictions("instance-segmentation", preds),
        )
    text = str(err.value)
    assert f"sample {ids[0]!r}: mask shape (5, 5) != ground truth" in text
    assert f"sample {ids[1]!r}: mask has float dtype float32" in text
    assert f"sample {ids[2]!r}: object_scores has 1 NaN/infinite value(s)" in text
    assert "have no score" in text
    assert "1 predicted sample(s) not in split 'test'" in text


def test_classification_problems():
    store = _store("classification")
    ids = store.sample_ids("test")
    preds = [Prediction(ids[0], label=9), Prediction(ids[1], label=0, scores=np.ones(3))]
    preds += [Prediction(s, label=0) for s in ids[2:]]
    with pytest.raises(ValidationError) as err:
        score(
            "classification", store, "test", PredictionSet.from_predictions("classification", preds)
        )
    assert "label 9 out of range 0..3" in str(err.value)
    assert "scores shape (3,) != (4,)" in str(err.value)


def test_tracking_rule_violations_and_ctc_folders(tmp_path):
    store = _store("tracking")
    ids = store.sample_ids("test")
    # a track that jumps frames without a parent link
    s = store.sample(ids[0])
    labels = s.instances.copy()
    tid = int(s.tracks[0, 0])
    labels[s.tracks[0, 1] + 1][labels[s.tracks[0, 1] + 1] == tid] = 0
    preds = [Prediction(ids[0], mask=labels, tracks=s.tracks)]
    preds += [
        Prediction(sid, mask=store.sample(sid).instances, tracks=store.sample(sid).tracks)
        for sid in ids[1:]
    ]
    with pytest.raises(ValidationError, match=f"sample {ids[0]!r}"):
        score("tracking", store, "test", PredictionSet.from_predictions("tracking", preds))
    # CTC result folders score exactly like the canonical format
    folder = tmp_path / "res"
    for sid in ids:
        smp = store.sample(sid)
        write_ctc_result(_seq(smp), folder / f"{sid}_RES")
    canonical = score("tracking", store, "test", _perfect("tracking", store), n_bootstrap=0)
    from_ctc = score("tracking", store, "test", folder, n_bootstrap=0)
    assert from_ctc.metrics == canonical.metrics


def _seq(sample):
    from cellbench.tracks import TrackedSequence

    return TrackedSequence.from_sample(sample)


def test_dataset_must_serve_the_task():
    store = _store("augmented-microscopy")
    with pytest.raises(CellbenchError, match="cannot be scored for tracking"):
        score("tracking", store, "test", PredictionSet.from_predictions("tracking", []))
    with pytest.raises(CellbenchError, match="unknown task 'segmentation'"):
        get_task("segmentation")
    assert set(task_names()) == set(TASK_DATA)


def test_cli_score_writes_report_only_when_valid(tmp_path):
    store = _store("semantic-segmentation")
    good = write_predictions(tmp_path / "good.zarr", _perfect("semantic-segmentation", store))
    out = tmp_path / "report.json"
    runner = CliRunner()
    res = runner.invoke(
        main,
        [
            "score",
            "--task",
            "semantic-segmentation",
            "--dataset",
            f"{store.id}@{store.version}",
            str(good),
            "--out",
            str(out),
            "--bootstrap",
            "20",
        ],
    )
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    assert data["headline"]["value"] == 1.0 and data["dataset"] == store.id
    assert "semantic_segmentation/mean_jaccard_pooled = 1" in res.output
    preds = [Prediction(s, mask=np.full((3, 3), 7, np.uint8)) for s in store.sample_ids("test")]
    bad = write_predictions(
        tmp_path / "bad.zarr", PredictionSet.from_predictions("semantic-segmentation", preds)
    )
    out2 = tmp_path / "bad.json"
    res = runner.invoke(
        main,
        [
            "score",
            "--task",
            "semantic-segmentation",
            "--dataset",
            store.id,
            str(bad),
            "--out",
            str(out2),
        ],
    )
    assert res.exit_code == 1
    assert "problems found" in res.output and "has class 7, but classes are 0..2" in res.output
    assert not out2.exists()


def test_cli_score_ctc_folders(tmp_path):
    from cellbench.tasks.tracking.ctc import write_ctc_ground_truth

    store = _store("tracking")
    seq = _seq(store.sample(store.sample_ids("test")[0]))
    write_ctc_ground_truth(seq, tmp_path / "01_GT")
    write_ctc_result(seq, tmp_path / "01_RES")
    runner = CliRunner()
    res = runner.invoke(
        main, ["score-ctc", str(tmp_path / "01_GT"), str(tmp_path / "01_RES"), "--json"]
    )
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["ctc"]["values"]["tra"] == 1.0 and data["ctc"]["values"]["fn"] == 0
    # The CTC identity measures and both MOTA conventions, side by side.
    assert data["hota"]["values"]["hota"] == 1.0 and data["hota"]["values"]["chota"] == 1.0
    assert data["mot_ctc"]["values"]["mota"] == 1.0 and data["mot"]["values"]["mota"] == 1.0
    assert "cca" in data["cca"]["values"]
    # break the result: remove a mask frame and corrupt the track file
    (tmp_path / "01_RES" / "mask001.tif").unlink()
    (tmp_path / "01_RES" / "res_track.txt").write_text("1 0 x 0\n")
    res = runner.invoke(main, ["score-ctc", str(tmp_path / "01_GT"), str(tmp_path / "01_RES")])
    assert res.exit_code == 1
    assert "mask001" in res.output and "res_track.txt" in res.output


def test_cli_score_ctc_linking_only(tmp_path):
    from cellbench.tasks.tracking.ctc import write_ctc_ground_truth
    from cellbench.tracks import TrackedSequence

    store = _store("tracking")
    seq = _seq(store.sample(store.sample_ids("test")[0]))
    write_ctc_ground_truth(seq, tmp_path / "01_GT")
    # The given segmentation, relabelled, with every track cut after its first frame: the links
    # are wrong, the masks are right.
    labels = seq.labels.astype(np.int64)
    rows, nxt = [], int(labels.max()) + 1
    for lab, b, e, _ in seq.tracks.tolist():
        rows.append([lab, b, b, 0])
        for t in range(b + 1, e + 1):
            labels[t][labels[t] == lab] = nxt
            rows.append([nxt, t, t, 0])
            nxt += 1
    write_ctc_result(TrackedSequence(labels.astype(np.uint16), rows), tmp_path / "01_RES")
    args = ["score-ctc", str(tmp_path / "01_GT"), str(tmp_path / "01_RES"), "--linking-only"]
    runner = CliRunner()
    res = runner.invoke(main, [*args, "--json"])
    assert res.exit_code == 0, res.output
    v = json.loads(res.output)["linking"]["values"]
    n_links = seq.graph().n_edges  # track links and parent links: all missing
    assert v["ea"] == n_links and v["ed"] == 0 and v["lnk"] == 0.0
    # Only the reference's one-frame tracks are complete: CT = 2 T_rc / (T_r + T_c).
    one_frame = sum(1 for _, b, e, _ in seq.tracks.tolist() if b == e)
    assert v["ct"] == pytest.approx(2 * one_frame / (len(seq.tracks) + len(rows)))
    assert v["op_clb@0"] == pytest.approx((v["lnk"] + v["bio@0"]) / 2)
    assert "ctc" not in json.loads(res.output)  # DET/SEG are 1 by construction: not shown
    # Masks that are not the reference's are refused, frame by frame.
    frame = labels[1].copy()
    frame[frame > 0] = 0
    labels[1] = frame
    rows = [r for r in rows if r[1] != 1]
    write_ctc_result(TrackedSequence(labels.astype(np.uint16), rows), tmp_path / "02_RES")
    args[2] = str(tmp_path / "02_RES")
    res = runner.invoke(main, args)
    assert res.exit_code == 1
    assert "frame 1: reference objects" in res.output and "linking-only" in res.output


def test_negative_labels_are_reported_for_every_sample():
    store = _store("semantic-segmentation")
    preds = []
    for sid in store.sample_ids("test"):
        mask = store.sample(sid).semantic.astype(np.int16)
        mask[0, 0] = -1
        preds.append(Prediction(sid, mask=mask))
    with pytest.raises(ValidationError) as err:
        score(
            "semantic-segmentation",
            store,
            "test",
            PredictionSet.from_predictions("semantic-segmentation", preds),
        )
    lines = [p for p in err.value.problems if "negative values (min -1)" in p]
    assert len(lines) == len(store.sample_ids("test"))


def test_bootstrap_interval_of_a_constant_is_that_constant():
    """A statistic undefined on every resample but equal to v on the split and on each sample
    (a perfect submission) has the interval [v, v], never [nan, nan]."""
    import math

    from cellbench.scoring import bootstrap_ci

    def undefined_on_resamples(stats):
        # like an AP whose area range is empty in every resample that repeats a sample
        return float("nan") if len(set(map(id, stats))) != len(stats) else 1.0

    items = [object() for _ in range(5)]
    assert bootstrap_ci(undefined_on_resamples, items, 50) == (1.0, 1.0)

    def varying(stats):  # undefined on every resample, different on each single sample
        return float(items.index(stats[0])) if len(stats) == 1 else float("nan")

    low, high = bootstrap_ci(varying, items, 50)
    assert math.isnan(low) and math.isnan(high)  # not a constant: no interval is claimed
    assert bootstrap_ci(lambda s: 0.5, items, 20) == (0.5, 0.5)


def test_per_sample_values_computed_where_measured_equal_those_after_the_split(tmp_path):
    """On a Dask scheduler, per-sample values are computed where each sample is measured (a
    worker), except where the whole split decides them: an image with more detections than
    COCO's smallest maxDets (100) and than its own objects waits for the split's (121 here:
    alone it would be cut at 100); the image of 121 objects and detections does not (no maxDets
    of the split can be fewer). The report is the one computed from the finalised statistics
    alone, bit for bit."""
    from cellbench.scoring import collect, summarise
    from cellbench.store.sample import Sample
    from cellbench.store.zarr_store import build_store

    rng = np.random.default_rng(5)
    samples, preds = [], []
    for i in range(4):
        truth = np.zeros((64, 64), np.uint16)
        for k in range(1, 6):
            y, x = rng.integers(0, 60, 2)
            truth[y : y + 4, x : x + 4] = k
        if i == 1:  # 121 objects of 2 x 2: the split's maxDets is 121
            truth[:] = 0
            truth[1:56:5, 1:56:5] = np.arange(1, 122).reshape(11, 11)
            truth[2:57:5, 1:56:5] = truth[1:56:5, 1:56:5]
            truth[:, 2:57:5] = truth[:, 1:56:5]
        pred = truth.copy()
        scores = {int(k): float(rng.random()) for k in np.unique(pred) if k}
        if i == 0:  # 110 false one-pixel detections scored above the 5 true ones, so that
            # these rank 111-115: kept by the split's maxDets (121), not by 100
            free = np.flatnonzero((truth[::3, ::3] == 0).ravel())[:110]
            junk = np.zeros(truth[::3, ::3].size, np.uint16)
            junk[free] = np.arange(100, 210)
            pred[::3, ::3] = np.maximum(pred[::3, ::3], junk.reshape(truth[::3, ::3].shape))
            scores = {k: 0.1 * v for k, v in scores.items()}
            scores.update({k: 0.9 + 0.001 * (k - 100) for k in range(100, 210)})
        samples.append(Sample(id=f"im-{i}", image=truth[None].astype(np.uint8), instances=truth))
        preds.append(Prediction(f"im-{i}", mask=pred, object_ids=np.array(list(scores)),
                                object_scores=np.array(list(scores.values()))))  # fmt: skip
    card = {"id": "early", "version": "1", "tasks": ["instance-segmentation"]}
    store = build_store(samples, tmp_path / "early.zarr", card)
    pset = PredictionSet.from_predictions("instance-segmentation", preds)
    # (a Dask scheduler: the per-sample work runs as tasks, which compute the values; in
    # one process summarise computes them all, at the same cost)
    alone = collect("instance-segmentation", store, "train", pset)
    assert all(v is None for values in alone.sample_values.values() for v in values)
    collected = collect("instance-segmentation", store, "train", pset, scheduler="synchronous")
    known = dict(collected.sample_values)
    early = summarise(collected, n_bootstrap=0)
    collected.sample_values = {}  # every per-sample value from the finalised statistics
    late = summarise(collected, n_bootstrap=0)
    assert json.dumps(early.per_sample) == json.dumps(late.per_sample)
    in_process = summarise(alone, n_bootstrap=0)
    assert json.dumps(in_process.per_sample) == json.dumps(late.per_sample)
    for report in (early, late, in_process):  # each metric's pooled values, not a sample's
        coco = next(r for r in report.results if r["metric"] == "coco_ap")
        assert coco["values"]["ap"] == report.metrics["coco_ap/ap"]
    assert all(v is not None for v in known["matching_scores"] + known["object_errors"])
    assert [v is None for v in known["coco_ap"]] == [True, False, False, False]
    first = collected.stats["coco_ap"][0]
    assert first.n_pred_total == 115 == first.n_det and first.max_dets == 121
    assert late.per_sample["im-0"]["coco_ap/ap"] > 0  # (0 if cut at 100)
