from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from sklearn import metrics as skm

from cellbench import __version__
from cellbench.errors import ValidationError
from cellbench.metrics import ClassificationMetrics

NAMES = ["G1", "S", "G2", "M", "apoptotic", "debris", "other"]


def _data(seed: int, n: int = 300, k: int = len(NAMES), drop: tuple[int, ...] = ()):
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, k, n)
    for c in drop:
        y_true[y_true == c] = (c + 1) % k
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), y_true] += rng.normal(1.0, 1.0, n)
    logits = np.round(logits, 1)  # ties in scores
    y_pred = logits.argmax(axis=1)
    return y_true, y_pred, logits


@pytest.mark.parametrize("seed", range(4))
def test_matches_scikit_learn(seed):
    drop = (3,) if seed % 2 else ()
    y_true, y_pred, scores = _data(seed, drop=drop)
    m = ClassificationMetrics(NAMES, top_k=(1, 2, 5))
    res = m.compute(y_true, y_pred, scores)
    v = res.values
    labels = list(range(len(NAMES)))
    assert v["accuracy"] == pytest.approx(skm.accuracy_score(y_true, y_pred))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # scikit-learn warns about absent classes
        assert v["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y_true, y_pred))
    assert v["macro_f1"] == pytest.approx(
        skm.f1_score(y_true, y_pred, average="macro", zero_division=0)
    )
    assert v["micro_f1"] == pytest.approx(skm.f1_score(y_true, y_pred, average="micro"))
    p, r, f, _ = skm.precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    for i, c in enumerate(NAMES):
        assert v[f"precision/{c}"] == pytest.approx(p[i])
        assert v[f"recall/{c}"] == pytest.approx(r[i])
        assert v[f"f1/{c}"] == pytest.approx(f[i])
    for k in (1, 2, 5):
        assert v[f"top{k}_accuracy"] == pytest.approx(
            skm.top_k_accuracy_score(y_true, scores, k=k, labels=labels)
        )
    aucs = []
    for i, c in enumerate(NAMES):
        if (y_true == i).any():
            ref = skm.roc_auc_score(y_true == i, scores[:, i])
            assert v[f"roc_auc/{c}"] == pytest.approx(ref)
            aucs.append(ref)
        else:
            assert np.isnan(v[f"roc_auc/{c}"])
    assert v["roc_auc_macro"] == pytest.approx(np.mean(aucs))
    if not drop:
        probs = np.exp(scores) / np.exp(scores).sum(1, keepdims=True)
        ref = skm.roc_auc_score(y_true, probs, multi_class="ovr", average="macro")
        assert m.aggregate(m.sample_stats(y_true, y_pred, probs))["roc_auc_macro"] == (
            pytest.approx(ref)
        )
    cm = skm.confusion_matrix(y_true, y_pred, labels=labels)
    assert res.details["confusion_matrix"] == cm.tolist()
    assert res.details["class_names"] == NAMES
    with np.errstate(invalid="ignore"):
        norm = cm / cm.sum(1, keepdims=True)
    np.testing.assert_allclose(res.details["confusion_matrix_normalized"], norm)
    if drop:
        assert any("absent from y_true" in n and "'M'" in n for n in res.notes)


def test_zero_division_and_absent_classes():
    # class 2 never true, never predicted; class 1 predicted but never true
    y_true = np.array([0, 0, 3, 3])
    y_pred = np.array([0, 1, 3, 0])
    m = ClassificationMetrics(["a", "b", "c", "d"])
    v = m.compute(y_true, y_pred).values
    assert v["precision/b"] == 0.0 and v["recall/b"] == 0.0 and v["f1/b"] == 0.0
    assert v["precision/c"] == 0.0 and v["f1/c"] == 0.0
    # macro over classes seen in y_true or y_pred (a, b, d) as scikit-learn's default labels
    assert v["macro_f1"] == pytest.approx(
        skm.f1_score(y_true, y_pred, average="macro", zero_division=0)
    )
    assert v["balanced_accuracy"] == pytest.approx((0.5 + 0.5) / 2)
    res = m.compute(y_true, y_pred)
    assert any("absent from y_true and y_pred" in n and "'c'" in n for n in res.notes)
    assert "top1_accuracy" not in v and any("No scores" in n for n in res.notes)


def test_top_k_ties_follow_scikit_learn():
    scores = np.array([[0.5, 0.5, 0.0], [0.2, 0.2, 0.2], [0.1, 0.3, 0.3]])
    y_true = np.array([0, 0, 1])
    m = ClassificationMetrics(["x", "y", "z"], top_k=(1, 2, 3))
    v = m.compute(y_true, scores.argmax(1), scores).values
    labels = [0, 1, 2]
    assert v["top1_accuracy"] == skm.top_k_accuracy_score(y_true, scores, k=1, labels=labels)
    assert v["top2_accuracy"] == skm.top_k_accuracy_score(y_true, scores, k=2, labels=labels)
    assert "top3_accuracy" not in v


def test_subsets_params_version_and_per_sample():
    y_true, y_pred, scores = _data(9, n=50)
    m = ClassificationMetrics(NAMES)
    stats = m.sample_stats(y_true, y_pred, scores)
    idx = [3, 3, 7, 10, 20, 41]
    sub = m.aggregate([stats[i] for i in idx])
    assert sub["accuracy"] == pytest.approx(skm.accuracy_score(y_true[idx], y_pred[idx]))
    res = m.compute(y_true, y_pred, scores, sample_ids=[f"s{i}" for i in range(50)])
    assert res.params == {"class_names": NAMES, "top_k": [1, 5]}
    assert res.cellbench_version == __version__
    assert res.per_sample["s0"] == {"correct": float(y_true[0] == y_pred[0])}
    json.dumps(res.to_dict())


def test_validation_lists_every_problem():
    m = ClassificationMetrics(["a", "b", "c"])
    with pytest.raises(ValidationError) as err:
        m.sample_stats(np.array([0, 1, 5]), np.array([0.0, 1.0, 2.0]), np.zeros((3, 2)))
    msg = str(err.value)
    assert "y_true has class indices outside [0, 3) at samples 2" in msg
    assert "y_pred must hold integer class indices" in msg
    assert "scores must have shape (n, n_classes) = (3, 3)" in msg
    with pytest.raises(ValidationError, match="unique"):
        ClassificationMetrics(["a", "a"])
