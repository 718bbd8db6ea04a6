"""The paired bootstrap behind the '≈' mark: by hand, against scipy, and through scoring."""

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import f1_score

from cellbench.leaderboard.entry import BoardKey
from cellbench.leaderboard.ranking import (
    OVERLAP,
    PAIRED,
    PAIRED_SEEDS,
    paired_difference,
    rank_entries,
)
from cellbench.predictions import Prediction, PredictionSet
from cellbench.registry import pull
from cellbench.scoring import bootstrap_replicates, percentile_interval, resamples_digest, score
from tests.leaderboard.helpers import make_entry

KEY = BoardKey("toy", "1.0", "instance-segmentation", "test")


def test_paired_difference_by_hand():
    above = [[0.5, 0.6, 0.7, 0.8, 0.9]]
    below = [[0.4, 0.6, 0.5, 0.9, 0.6]]
    # differences 0.1, 0, 0.2, -0.1, 0.3 -> sorted -0.1, 0, 0.1, 0.2, 0.3; numpy's linear
    # quantiles at 0.025 * 4 = 0.1 and 0.975 * 4 = 3.9 positions: -0.09 and 0.29
    mean, lo, hi, n = paired_difference(above, below, "higher")
    assert (mean, lo, hi, n) == pytest.approx((0.1, -0.09, 0.29, 5))
    # lower is better: the difference is oriented so that positive favours the entry above
    mean, lo, hi, n = paired_difference(above, below, "lower")
    assert (mean, lo, hi) == pytest.approx((-0.1, -0.29, 0.09))
    # undefined resamples are dropped from both sides
    mean, lo, hi, n = paired_difference([[0.5, np.nan, 0.7]], [[0.4, 0.6, np.nan]])
    assert n == 1 and lo == hi == pytest.approx(0.1)


def test_paired_bootstrap_matches_scipy():
    rng = np.random.default_rng(3)
    difficulty = rng.uniform(0.2, 0.9, 80)  # shared by both entries: cancels when paired
    x = np.clip(difficulty + rng.normal(0.03, 0.04, 80), 0, 1)
    y = np.clip(difficulty + rng.normal(0.0, 0.04, 80), 0, 1)
    b = 20000
    ra = bootstrap_replicates(lambda s: float(np.mean(s)), list(x), b, seed=0)
    rb = bootstrap_replicates(lambda s: float(np.mean(s)), list(y), b, seed=0)
    _, lo, hi, n = paired_difference(ra[None], rb[None])
    ref = stats.bootstrap(
        (x, y),
        lambda a, c, axis=-1: np.mean(a, axis=axis) - np.mean(c, axis=axis),
        paired=True,
        vectorized=True,
        method="percentile",
        n_resamples=b,
        random_state=np.random.default_rng(1),
    ).confidence_interval
    width = ref.high - ref.low
    assert n == b
    assert abs(lo - ref.low) < 0.05 * width and abs(hi - ref.high) < 0.05 * width
    # pairing matters: the unpaired intervals of the two means overlap, the paired one excludes 0
    ia, ib = percentile_interval(ra), percentile_interval(rb)
    assert max(ia[0], ib[0]) <= min(ia[1], ib[1])
    assert lo > 0


def test_seed_resampling_adds_seed_variance():
    rng = np.random.default_rng(0)
    base = rng.normal(0.7, 0.01, 2000)
    other = base - 0.02 + rng.normal(0, 0.002, 2000)
    _, lo1, hi1, _ = paired_difference(base[None], other[None])
    # three identical seeds: the same interval as one seed
    _, lo3, hi3, _ = paired_difference(np.stack([base] * 3), np.stack([other] * 3))
    assert (lo3, hi3) == pytest.approx((lo1, hi1))
    # seeds that disagree by ±0.04: wider, and no longer separated from 0
    spread = np.stack([base - 0.04, base, base + 0.04])
    _, lo, hi, _ = paired_difference(spread, np.stack([other] * 3))
    assert hi - lo > 2 * (hi1 - lo1) and lo1 > 0 and lo <= 0 <= hi


def _with_replicates(name, value, replicates, seed=0, resamples="r" * 64):
    entry = make_entry(name, value, seed)
    entry.report.headline.replicates = list(replicates)
    entry.report.headline.resamples = resamples
    return entry


def test_ranking_uses_the_paired_interval_for_the_mark():
    rng = np.random.default_rng(1)
    shared = rng.normal(0, 0.05, 1000)  # the resample's difficulty, common to every entry
    a = _with_replicates("a", 0.80, 0.80 + shared + rng.normal(0, 0.003, 1000))
    b = _with_replicates("b", 0.78, 0.78 + shared + rng.normal(0, 0.003, 1000))
    c = _with_replicates("c", 0.779, 0.779 + shared + rng.normal(0, 0.003, 1000))
    d = make_entry("d", 0.70)  # scored before replicates were kept
    board = rank_entries(KEY, [a, b, c, d])
    rows = {r.name: r for r in board.rows}
    # b's interval overlaps a's, but the paired difference (0.02) is clearly above 0
    assert rows["b"].overlaps_above and not rows["b"].similar_to_above
    assert rows["b"].vs_above.method == PAIRED
    assert rows["b"].vs_above.difference == pytest.approx(0.02)
    assert rows["b"].vs_above.ci_low > 0.01
    # c is within noise of b
    assert rows["c"].similar_to_above and rows["c"].vs_above.ci_low <= 0
    # d has no replicates: the interval-overlap fallback, named as such
    assert rows["d"].vs_above.method == OVERLAP
    assert rows["d"].similar_to_above == rows["d"].overlaps_above
    data = board.to_dict()["rows"][1]["vs_above"]
    assert data["method"] == PAIRED and data["not_separated"] is False


def test_replicates_drawn_differently_are_not_paired():
    a = _with_replicates("a", 0.8, np.full(100, 0.8))
    b = _with_replicates("b", 0.7, np.full(100, 0.7), resamples="s" * 64)
    board = rank_entries(KEY, [a, b])
    assert board.rows[1].vs_above.method == OVERLAP


def test_multi_seed_entries_are_compared_over_seeds_too():
    rng = np.random.default_rng(2)
    shared = rng.normal(0, 0.02, 500)
    entries = [
        _with_replicates("a", 0.8 + d, 0.8 + d + shared, seed=s)
        for s, d in enumerate((-0.01, 0.0, 0.01))
    ]
    entries.append(_with_replicates("b", 0.7, 0.7 + shared))
    board = rank_entries(KEY, entries)
    assert board.rows[1].vs_above.method == PAIRED_SEEDS


def test_scoring_keeps_replicates_paired_across_prediction_sets():
    store = pull("synthetic-protein-localisation", options={"n_images": 40}, progress=False)
    ids = store.sample_ids("test")
    truth = np.array([store.label(s) for s in ids])
    rng = np.random.default_rng(0)
    guesses = []
    for flip in (0.2, 0.35):
        labels = np.where(rng.random(truth.size) < flip, (truth + 1) % 4, truth)
        guesses.append(labels)
    reports = []
    for labels in guesses:
        preds = [Prediction(s, label=int(v)) for s, v in zip(ids, labels, strict=True)]
        pset = PredictionSet.from_predictions("classification", preds, store.id, store.version)
        reports.append(score("classification", store, "test", pset, n_bootstrap=50, seed=4))
    a, b = (r.headline for r in reports)
    assert len(a.replicates) == 50 and a.resamples == b.resamples
    assert a.resamples == resamples_digest(4, 50, ids)
    # resample 0 of both reports used the same samples: recompute it with scikit-learn
    idx = np.random.default_rng(4).integers(0, len(ids), len(ids))
    for head, labels in zip((a, b), guesses, strict=True):
        expected = f1_score(truth[idx], labels[idx], average="macro", zero_division=0)
        assert head.replicates[0] == pytest.approx(expected)
    # and the report round-trips them
    back = type(reports[0]).from_json(reports[0].to_json())
    assert back.headline.replicates == pytest.approx(a.replicates)
