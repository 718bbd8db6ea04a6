"""The metric seam: one typed per-sample call per family, the batch API built once on it."""

from __future__ import annotations

import inspect
import pkgutil
import re
from importlib import import_module
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import cellbench.metrics
from cellbench.errors import ValidationError
from cellbench.metrics.base import Metric
from cellbench.metrics.classification import ClassificationMetrics, ClassifiedSample
from cellbench.metrics.coco import CocoAP, ScoredInstances
from cellbench.metrics.image import ImagePair, ImageSimilarity
from cellbench.metrics.instance import LabelPair, MatchingScores
from cellbench.metrics.object_errors import ObjectErrors
from cellbench.metrics.semantic import ClassMaskPair, SemanticSegmentationMetrics
from cellbench.metrics.tracking import CTCMeasures, MOTMetrics, match_tracking
from tests.tracking.tracking_cases import base_gt, div_gt, late_division

from ._synth import perturb, random_labels

METRICS_DIR = Path(cellbench.metrics.__file__).parent


def _metric_classes() -> list[type[Metric]]:
    for info in pkgutil.walk_packages([str(METRICS_DIR)], "cellbench.metrics."):
        import_module(info.name)
    seen: dict[str, type[Metric]] = {}
    todo = list(Metric.__subclasses__())
    while todo:
        cls = todo.pop()
        todo += cls.__subclasses__()
        if cls.__module__.startswith("cellbench.metrics"):
            seen[f"{cls.__module__}.{cls.__qualname__}"] = cls
    return [seen[k] for k in sorted(seen)]


def test_no_type_ignore_in_metrics():
    found = [
        f"{p.relative_to(METRICS_DIR)}:{i}"
        for p in sorted(METRICS_DIR.rglob("*.py"))
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if re.search(r"#\s*type:\s*ignore", line)
    ]
    assert found == []


def test_every_family_implements_the_per_sample_call_and_inherits_the_batch_api():
    classes = _metric_classes()
    concrete = [c for c in classes if not inspect.isabstract(c)]
    assert {c.__name__ for c in concrete} >= {
        "ClassificationMetrics",
        "CocoAP",
        "MatchingScores",
        "ObjectErrors",
        "SemanticSegmentationMetrics",
        "ImageSimilarity",
        "CTCMeasures",
        "DivisionMetrics",
        "CompleteTracks",
        "BranchingCorrectness",
        "MOTMetrics",
    }
    for cls in classes:
        for name in ("sample_stats", "compute"):
            assert name not in vars(cls), f"{cls.__name__} overrides {name}"
    for cls in concrete:
        sig = inspect.signature(cls.measure)
        assert list(sig.parameters) == ["self", "sample", "sample_id"], cls.__name__


def _same(a, b) -> None:
    assert type(a) is type(b)
    for k, v in vars(a).items():
        w = vars(b)[k]
        if isinstance(v, np.ndarray):
            np.testing.assert_array_equal(v, w)
        elif isinstance(v, dict):
            assert v.keys() == w.keys()
            for key in v:
                np.testing.assert_array_equal(np.asarray(v[key]), np.asarray(w[key]))
        else:
            assert v == w, k


def test_measure_equals_one_sample_of_the_batch():
    rng = np.random.default_rng(3)
    gt = random_labels((30, 32), 12, rng)
    pred = perturb(gt, rng)
    scores = {int(i): float(rng.random()) for i in np.unique(pred) if i}
    pair = LabelPair(gt, pred)
    for m in (MatchingScores(), ObjectErrors()):
        _same(m.measure(pair, "a"), m.sample_stats([gt], [pred], sample_ids=["a"])[0])
    coco = CocoAP()
    _same(
        coco.measure(ScoredInstances(gt, pred, scores), "a"),
        coco.sample_stats([gt], [pred], [scores], sample_ids=["a"])[0],
    )

    sem = SemanticSegmentationMetrics(["bg", "a", "b"], ignore_index=255)
    g = rng.integers(0, 3, (12, 14)).astype(np.uint8)
    g[0, :4] = 255
    p = rng.integers(0, 3, (12, 14)).astype(np.uint8)
    _same(sem.measure(ClassMaskPair(g, p), "x"), sem.sample_stats([g], [p])[0])

    img = ImageSimilarity(channel_names=["dna"])
    t = rng.random((1, 16, 16))
    q = t + rng.normal(0, 0.1, t.shape)
    _same(img.measure(ImagePair(t, q), "x"), img.sample_stats([t], [q])[0])

    cls = ClassificationMetrics(["a", "b", "c"], top_k=(1, 2))
    sc = rng.random(3).astype(np.float32)
    _same(
        cls.measure(ClassifiedSample(2, 1, sc), "s"),
        cls.sample_stats(np.array([2]), np.array([1]), sc[None])[0],
    )

    match = match_tracking(div_gt(), late_division(1))
    for tm in (CTCMeasures(), MOTMetrics()):
        _same(tm.measure(match, "seq"), tm.sample_stats([match], sample_ids=["seq"])[0])
        _same(
            tm.measure(match, "seq"),
            tm.sample_stats([div_gt()], [late_division(1)], sample_ids=["seq"])[0],
        )
    assert CTCMeasures().measure(match_tracking(base_gt(), base_gt()), "s").fn == 0


def test_per_sample_validation_names_the_sample():
    half: Any = 0.5
    with pytest.raises(ValidationError) as err:
        ClassificationMetrics(["a", "b"]).measure(ClassifiedSample(2, half, np.ones(3)), "s7")
    msg = str(err.value)
    assert "sample 's7': y_true 2 is outside [0, 2)" in msg
    assert "sample 's7': y_pred must be an integer class index, got 0.5" in msg
    assert "sample 's7': scores must have shape (n_classes,) = (2,), got (3,)" in msg
    with pytest.raises(ValidationError, match="sample 'q': prediction shape"):
        MatchingScores().measure(LabelPair(np.zeros((4, 4), int), np.zeros((4, 5), int)), "q")


def test_batch_collects_every_samples_problems():
    good = np.zeros((6, 6), np.uint16)
    with pytest.raises(ValidationError) as err:
        ObjectErrors().sample_stats(
            [good, good.astype(float), good], [good[:5], good, good], sample_ids=["a", "b", "c"]
        )
    assert err.value.context == "ObjectErrors inputs"
    assert len(err.value.problems) == 2
    assert "sample 'a': prediction shape (5, 6) differs" in err.value.problems[0]
    assert (
        "sample 'b': ground truth label image must have an integer dtype" in err.value.problems[1]
    )
